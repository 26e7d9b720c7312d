"""``streamwarden otlp``: OpenTelemetry in (the OTLP/HTTP receiver)."""

from __future__ import annotations

from typing import Optional

import typer

from streams.cli import common

otlp_app = typer.Typer(help="OpenTelemetry in: GenAI spans (OTLP traces) as inference events.", no_args_is_help=True)


@otlp_app.command("receive")
def receive(
    port: Optional[int] = typer.Option(None, "--port", help="Port to listen on (default 4318, OTLP/HTTP's)."),
    host: Optional[str] = typer.Option(None, "--host", help="Bind address (default 127.0.0.1)."),
    bootstrap: Optional[str] = common.BootstrapOpt,
    embedded: Optional[bool] = common.EmbeddedOpt,
) -> None:
    """Run an OTLP/HTTP traces endpoint (POST /v1/traces) that writes the GenAI spans to the OTLP topic."""
    from streams.otlp.receiver import run_receiver

    settings = common.settings(otlp_receiver_port=port, otlp_receiver_host=host, bootstrap=bootstrap, embedded=embedded)
    common.ensure_topics_or_warn(settings)
    run_receiver(settings)
