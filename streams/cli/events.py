"""The event model and its topics: ``topics``, ``tap`` and ``schema`` commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from streams.cli import common

topics_app = typer.Typer(help="The Kafka topics streamwarden uses.", no_args_is_help=True)
tap_app = typer.Typer(help="Send prompt/response events to Kafka.", no_args_is_help=True)
schema_app = typer.Typer(help="The event schema.", no_args_is_help=True)


@topics_app.command("create")
def topics_create(bootstrap: Optional[str] = common.BootstrapOpt, embedded: Optional[bool] = common.EmbeddedOpt) -> None:
    """Create the topics that do not exist yet."""
    from streams.events.topics import ensure_topics, topic_specs

    settings = common.settings(bootstrap=bootstrap, embedded=embedded)
    created = ensure_topics(settings)
    for spec in topic_specs(settings).values():
        mark = "created" if spec.name in created else "exists"
        typer.echo(f"{spec.role:<11} {spec.name:<40} partitions={spec.partitions:<3} {mark}")


@topics_app.command("list")
def topics_list() -> None:
    """Show the topic names the current settings use."""
    from streams.events.topics import topic_specs

    for spec in topic_specs(common.settings()).values():
        typer.echo(f"{spec.role:<11} {spec.name:<40} partitions={spec.partitions}")


@tap_app.command("replay")
def tap_replay(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="A JSONL file, one event per line."),
    bootstrap: Optional[str] = common.BootstrapOpt,
    embedded: Optional[bool] = common.EmbeddedOpt,
) -> None:
    """Load recorded logs into the inference topic (each line as it is: bad lines are dead-lettered by the worker)."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    from streams.tap import Tap

    settings = common.settings(bootstrap=bootstrap, embedded=embedded)
    size = file.stat().st_size
    lines = 0
    with (
        Tap(settings=settings) as tap,
        Progress(
            TextColumn("[bold]replay[/bold] {task.fields[lines]} lines"),
            BarColumn(),
            TaskProgressColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            transient=False,
        ) as progress,
    ):
        task = progress.add_task("replay", total=size, lines=0)
        with file.open("rb") as fh:
            for raw in fh:
                progress.update(task, advance=len(raw), lines=lines)
                line = raw.strip()
                if not line:
                    continue
                lines += 1
                tap.record(line, wait_s=30.0)
        progress.update(task, lines=lines)
        stats = tap.close(timeout_s=60)
    typer.echo(json.dumps({"lines": lines, "sent": stats.sent, "dropped": stats.dropped, "failed": stats.failed}))
    if stats.dropped or stats.failed:
        raise typer.Exit(1)


@schema_app.command("export")
def schema_export(out: Optional[Path] = typer.Option(None, help="Write here (default: stdout).")) -> None:
    """Print or write the JSON Schema of InferenceEvent."""
    from streams.events.schema import render_json_schema

    common.emit(render_json_schema(), out)
