"""``streamwarden killswitch`` and ``rollout``: the actions a person takes by hand, audited."""

from __future__ import annotations

import json
from typing import Optional

import typer

from streams.cli import common

killswitch_app = typer.Typer(
    help="Switch a model off (the gateway serves its fallback) or on again; every change is audited.", no_args_is_help=True
)
rollout_app = typer.Typer(help="Staged rollouts: where a model version stands (the policy gates promotion on it).", no_args_is_help=True)


@rollout_app.command("set")
def rollout_set(
    model: str = typer.Argument(...),
    version: str = typer.Argument(...),
    stage: str = typer.Option(..., "--stage", help="internal, 1%, 10% or 100% (or the stages the policy lists for it)."),
    previous: Optional[str] = typer.Option(None, "--previous", help="The stable version a rollback returns to."),
    by: Optional[str] = typer.Option(None, "--by", help="Who (default: the login name)."),
) -> None:
    """Record a model version's rollout stage on the control topic; the policy agent picks it up."""
    from streams.actions.killswitch import publish_rollout
    from streams.policy.rules import check_rollout_stage

    settings = common.settings()
    check_rollout_stage(common.policy(settings.policy_file), model, version, stage)  # a stage the rollout lacks: exit 2
    state = publish_rollout(settings, model, version, stage, previous, by=f"human:{by}" if by else None)
    typer.echo(json.dumps(state, indent=2))


@rollout_app.command("status")
def rollout_status() -> None:
    """Every rollout stage recorded on the control topic."""
    from streams.actions.killswitch import read_rollouts

    states = read_rollouts(common.settings())
    typer.echo(json.dumps({f"{m} {v}": st for (m, v), st in sorted(states.items())}, indent=2))


def _switch(model: str, engaged: bool, reason: str, fallback: Optional[str], by: Optional[str]) -> None:
    from streams.actions.killswitch import set_switch

    if not reason.strip():
        raise common.fail("a reason is required: it is recorded in the audit log")
    settings = common.settings()
    state, record = set_switch(settings, model, engaged, reason, fallback, by=f"human:{by}" if by else None)
    typer.echo(json.dumps({"state": json.loads(state.model_dump_json()), "action_id": record.action_id}, indent=2))


@killswitch_app.command("engage")
def killswitch_engage(
    model: str = typer.Argument(..., help="The model to switch off."),
    reason: str = typer.Option(..., "--reason", "-r", help="Why (recorded)."),
    fallback: Optional[str] = typer.Option(None, "--fallback", help="'model:NAME' to serve another model; default: a 503."),
    by: Optional[str] = typer.Option(None, "--by", help="Who (default: the login name)."),
) -> None:
    """Engage the kill switch of a model: the gateway serves the fallback within a second."""
    if fallback is not None and not (fallback == "none" or fallback.startswith("model:")):
        raise common.fail("--fallback is 'model:NAME' or 'none'")
    _switch(model, True, reason, fallback, by)


@killswitch_app.command("release")
def killswitch_release(
    model: str = typer.Argument(...),
    reason: str = typer.Option(..., "--reason", "-r", help="Why (recorded)."),
    by: Optional[str] = typer.Option(None, "--by"),
) -> None:
    """Release the kill switch of a model."""
    _switch(model, False, reason, None, by)


@killswitch_app.command("status")
def killswitch_status(as_json: bool = typer.Option(False, "--json", help="JSON instead of a table.")) -> None:
    """The switch of every model that has one."""
    from streams.actions.killswitch import read_states

    states = read_states(common.settings())
    if as_json:
        typer.echo(json.dumps({m: json.loads(s.model_dump_json()) for m, s in sorted(states.items())}, indent=2))
        return
    if not states:
        typer.echo("no kill switch has been set")
    for m, st in sorted(states.items()):
        word = "ENGAGED " if st.engaged else "released"
        typer.echo(f"{m:<32} {word} by {st.by} at {st.at:%Y-%m-%d %H:%M:%S}Z  fallback={st.fallback or '503'}  reason: {st.reason}")
