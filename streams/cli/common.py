"""What every command group shares: the settings loader, common options, output helpers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from streams.settings import Settings, load_settings

if TYPE_CHECKING:
    from streams.policy.rules import Policy

BootstrapOpt = typer.Option(None, "--bootstrap", "-b", help="Kafka bootstrap servers host:port[,host:port] (env STREAMWARDEN_BOOTSTRAP).")
EmbeddedOpt = typer.Option(None, "--embedded/--production", help="Settings profile: the embedded tansu broker, or Kafka's defaults.")


def settings(**overrides: Any) -> Settings:
    """Settings from flags, environment and config file; a bad value is a ConfigurationError (one line, exit 2)."""
    embedded = overrides.pop("embedded", None)
    if embedded is not None:
        overrides["profile"] = "embedded" if embedded else "production"
    return load_settings(**overrides)


def emit(text: str, out: Optional[Path]) -> None:
    """Print ``text``, or write it to ``out``."""
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")


def policy(path: Optional[Path]) -> Policy:
    """The policy at ``path`` (default: the packaged one); a bad file is a PolicyError with line-numbered errors."""
    from streams.policy.rules import load_policy

    return load_policy(path)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Say what is wrong in one red line; ``raise fail(...)`` exits with ``code``."""
    typer.secho(message, fg="red", err=True)
    return typer.Exit(code)


def ensure_topics_or_warn(s: Settings) -> None:
    """Create missing topics; when the broker is not reachable yet, say so and let the clients retry."""
    from streams.events.topics import ensure_topics

    try:
        ensure_topics(s)
    except Exception as exc:  # noqa: BLE001 - the process's own clients retry; say why we could not create them
        typer.secho(f"could not create topics on {s.bootstrap}: {type(exc).__name__}: {exc}", fg="yellow", err=True)
