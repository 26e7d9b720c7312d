"""``streamwarden dashboards``: Grafana as code."""

from __future__ import annotations

import json
from typing import Optional

import typer

from streams.cli import common

dashboards_app = typer.Typer(help="The Grafana dashboards.", no_args_is_help=True)


@dashboards_app.command("push")
def dashboards_push(
    grafana_url: str = typer.Option(..., "--grafana-url", help="Grafana's base URL, e.g. http://grafana:3000."),
    token: Optional[str] = typer.Option(None, "--token", envvar="GRAFANA_TOKEN", help="A service-account token (env GRAFANA_TOKEN)."),
    user: Optional[str] = typer.Option(None, "--user", envvar="GRAFANA_USER", help="Or basic auth: user (env GRAFANA_USER)..."),
    password: Optional[str] = typer.Option(None, "--password", envvar="GRAFANA_PASSWORD", help="...and password (env GRAFANA_PASSWORD)."),
    folder: str = typer.Option("streamwarden", help="The folder to put them in (created if missing)."),
    prometheus_url: Optional[str] = typer.Option(None, help="Also create/update the Prometheus datasource the panels use."),
) -> None:
    """Upload the dashboards (dashboards/json) to Grafana through its HTTP API; pushing twice changes nothing."""
    from dashboards.push import push

    credential: str | tuple[str, str]
    if token:
        credential = token
    elif user and password:
        credential = (user, password)
    else:
        raise common.fail("give --token (or GRAFANA_TOKEN), or --user and --password")
    try:
        result = push(grafana_url, credential, folder=folder, prometheus_url=prometheus_url)
    except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback
        raise common.fail(f"push to {grafana_url} failed: {type(exc).__name__}: {exc}", 1) from None
    typer.echo(json.dumps({"folder": result.folder_uid, "datasource": result.datasource, "dashboards": result.dashboards}, indent=2))
