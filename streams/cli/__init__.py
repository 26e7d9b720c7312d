"""The ``streamwarden`` command line: one module per command group.

``worker``      the stream processor              ``gateway``     the OpenAI-compatible proxy
``references``  the drift references the workers keep (list, reset)
``policy``      rules and the policy agent        ``actions``     kill switch and rollout stages, by hand
``events``      topics, tap replay, the schema    ``dashboards``  Grafana as code
``local``       demo, embedded broker, traffic, probes (local tools)
``otlp``        OpenTelemetry in: the OTLP/HTTP receiver

Every command takes its configuration from flags, ``STREAMWARDEN_*`` environment
variables and an optional ``--config FILE``, through one settings class
(:class:`streams.settings.Settings`). Errors end a command with one line and a non-zero
exit code, never a traceback (``--log-level debug`` logs the traceback too).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from streams.cli import actions, dashboards, events, gateway, local, otlp, policy, references, worker
from streams.errors import ConfigurationError, SchemaError, StreamwardenError
from streams.settings import CONFIG_ENV

log = logging.getLogger("streamwarden.cli")

app = typer.Typer(
    help="streamwarden: monitor LLM traffic on Kafka for hallucination, drift, bias and PII leaks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", help="A YAML/TOML/JSON settings file (env STREAMWARDEN_CONFIG).", exists=True, dir_okay=False
    ),
    log_level: str = typer.Option("warning", "--log-level", help="Log level of this command."),
) -> None:
    if config is not None:
        os.environ[CONFIG_ENV] = str(config)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


app.command()(local.demo)
app.command()(worker.worker)
app.command()(local.traffic)
app.command()(local.probe)
app.command()(local.broker)
app.command()(gateway.gateway)
app.add_typer(events.tap_app, name="tap")
app.add_typer(events.schema_app, name="schema")
app.add_typer(events.topics_app, name="topics")
app.add_typer(policy.policy_app, name="policy")
app.add_typer(actions.killswitch_app, name="killswitch")
app.add_typer(actions.rollout_app, name="rollout")
app.add_typer(dashboards.dashboards_app, name="dashboards")
app.add_typer(otlp.otlp_app, name="otlp")
app.add_typer(references.references_app, name="references")


def exit_code(exc: BaseException) -> int:
    """2 for what the user can fix in their input (settings, files, arguments), 1 for the rest."""
    return 2 if isinstance(exc, (ConfigurationError, SchemaError)) else 1


def main(argv: list[str] | None = None) -> int:
    """The console script: errors become one line on stderr and a non-zero exit code."""
    try:
        app(args=argv, standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except StreamwardenError as exc:
        log.debug("error", exc_info=True)
        typer.secho(f"error: {exc}", fg="red", err=True)
        return exit_code(exc)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        log.debug("unexpected error", exc_info=True)
        typer.secho(f"error: {type(exc).__name__}: {exc}", fg="red", err=True)
        return 1
    return 0
