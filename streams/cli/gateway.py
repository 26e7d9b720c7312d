"""``streamwarden gateway``: the OpenAI-compatible proxy."""

from __future__ import annotations

from typing import Optional

import typer

from streams.cli import common


def gateway(
    upstream: Optional[str] = typer.Option(
        None, "--upstream", help="The model server's OpenAI-compatible base URL (env STREAMWARDEN_GATEWAY_UPSTREAM_URL)."
    ),
    port: Optional[int] = typer.Option(None, "--port", help="Port to listen on (default 8080)."),
    host: Optional[str] = typer.Option(None, "--host", help="Bind address (default 127.0.0.1)."),
    bootstrap: Optional[str] = common.BootstrapOpt,
    embedded: Optional[bool] = common.EmbeddedOpt,
) -> None:
    """Run the OpenAI-compatible gateway: taps every exchange, enforces the kill switch."""
    from streams.gateway import run_gateway

    settings = common.settings(gateway_upstream_url=upstream, gateway_port=port, gateway_host=host, bootstrap=bootstrap, embedded=embedded)
    if not settings.gateway_upstream_url:
        raise common.fail("set --upstream (or STREAMWARDEN_GATEWAY_UPSTREAM_URL)")
    run_gateway(settings)
