"""``streamwarden worker``: the stream processor."""

from __future__ import annotations

from typing import Any, Optional

import typer

from streams.cli import common


def worker(
    bootstrap: Optional[str] = common.BootstrapOpt,
    embedded: Optional[bool] = common.EmbeddedOpt,
    web_port: Optional[int] = typer.Option(None, help="Port of the worker's web server (/metrics, /healthz)."),
    detectors: Optional[str] = typer.Option(None, help="Comma-separated detector names (default: from settings)."),
) -> None:
    """Run a stream processor: consume the inference topic, run the detectors, publish findings and metrics."""
    from streams.worker.app import Worker

    overrides: dict[str, Any] = dict(bootstrap=bootstrap, embedded=embedded, web_port=web_port)
    if detectors:
        overrides["detectors"] = [d.strip() for d in detectors.split(",") if d.strip()]
    settings = common.settings(**overrides)
    w = Worker(settings)  # a bad detector name or option is a ConfigurationError: one line, exit 2
    common.ensure_topics_or_warn(settings)
    w.run()
