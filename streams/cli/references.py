"""``streamwarden references``: the drift references the workers keep across restarts (list, reset)."""

from __future__ import annotations

from typing import Any, Optional

import typer

from streams.cli import common

references_app = typer.Typer(
    help="The reference windows drift detectors pinned and keep across restarts: list them, or reset one "
    "(after an intended change of traffic) so that the next events pin a new one.",
    no_args_is_help=True,
)


def _reference_rows(settings: Any) -> list[dict[str, Any]]:
    from datetime import datetime, timezone

    from streams.worker.references import ReferenceWatcher

    rows = []
    for (detector, key), ref in sorted(ReferenceWatcher(settings).read_all().items()):
        rows.append(
            {
                "detector": detector,
                "model": key[0] if key else "",
                "model_version": key[1] if len(key) > 1 else "",
                "field": key[2] if len(key) > 2 else "",
                "rows": int(ref.rows.shape[0]),
                "space": ref.space,
                "pinned_at": datetime.fromtimestamp(ref.pinned_at, timezone.utc).isoformat(timespec="seconds"),
                "key": key,
            }
        )
    return rows


@references_app.command("list")
def references_list(as_json: bool = typer.Option(False, "--json", help="JSON instead of a table.")) -> None:
    """Every reference kept on the references topic (numbers only: no text is kept)."""
    import json

    rows = _reference_rows(common.settings())
    if as_json:
        typer.echo(json.dumps([{k: v for k, v in r.items() if k != "key"} for r in rows], indent=2))
        return
    if not rows:
        typer.echo("no references kept")
        return
    for r in rows:
        typer.echo(
            f"{r['detector']:<18} {r['model']} {r['model_version']} {r['field'] or '-'}  {r['rows']} rows  {r['space']}  pinned {r['pinned_at']}"
        )


@references_app.command("reset")
def references_reset(
    model: str = typer.Argument(...),
    version: str = typer.Argument(...),
    detector: Optional[str] = typer.Option(None, "--detector", help="Only this detector's (drift, drift.merged, descriptor_drift)."),
    field: Optional[str] = typer.Option(None, "--field", help="Only this field's (prompt, response)."),
) -> None:
    """Forget a model version's references: every worker drops them, and the next events pin new ones."""
    from streams.worker.references import publish_resets

    settings = common.settings()
    rows = [
        r
        for r in _reference_rows(settings)
        if r["model"] == model and r["model_version"] == version and detector in (None, r["detector"]) and field in (None, r["field"])
    ]
    if not rows:
        raise common.fail(f"no reference kept for {model} {version}" + (f" ({detector})" if detector else "") + ": nothing to reset")
    publish_resets(settings, [(r["detector"], r["key"]) for r in rows])
    for r in rows:
        typer.echo(f"reset {r['detector']} {r['model']} {r['model_version']} {r['field'] or '-'}")
