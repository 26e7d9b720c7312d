"""``streamwarden policy``: the rules, and the agent that acts on them."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Optional

import typer

from streams.cli import common

policy_app = typer.Typer(help="The policy: rules that trip alerts, rollbacks and the kill switch.", no_args_is_help=True)


@policy_app.command("run")
def policy_run(
    policy: Optional[Path] = typer.Option(
        None, "--policy", "-p", exists=True, dir_okay=False, help="Policy YAML (default: STREAMWARDEN_POLICY_FILE or the packaged default)."
    ),
    bootstrap: Optional[str] = common.BootstrapOpt,
    embedded: Optional[bool] = common.EmbeddedOpt,
    web_port: Optional[int] = typer.Option(None, help="Port of the agent's incident pages, /metrics and /healthz (0: none)."),
) -> None:
    """Run the policy agent: metrics topic in, decisions on the actions topic, then kill switch, rollback, alerts."""
    from streams.actions.agent import PolicyAgent

    settings = common.settings(bootstrap=bootstrap, embedded=embedded, policy_file=policy, policy_web_port=web_port)
    rules = common.policy(settings.policy_file)
    common.ensure_topics_or_warn(settings)
    agent = PolicyAgent(settings, rules)
    signal.signal(signal.SIGTERM, lambda *_: agent.stop_event.set())
    try:
        agent.run()
    except KeyboardInterrupt:
        agent.stop_event.set()


@policy_app.command("check")
def policy_check(file: Path = typer.Argument(..., help="A policy YAML file.")) -> None:
    """Validate a policy file; errors name the line."""
    p = common.policy(file)
    typer.echo(f"{file}: {len(p.rules)} rules, {len(p.rollouts)} rollouts: ok")


@policy_app.command("schema")
def policy_schema() -> None:
    """Print the JSON Schema of the policy file (for editors and CI)."""
    from streams.policy.rules import render_policy_schema

    typer.echo(render_policy_schema(), nl=False)


@policy_app.command("prometheus-rules")
def policy_prometheus_rules(
    policy: Optional[Path] = typer.Option(
        None, "--policy", "-p", exists=True, dir_okay=False, help="Policy YAML (default: the packaged default)."
    ),
    out: Optional[Path] = typer.Option(None, help="Write here (default: stdout)."),
) -> None:
    """Prometheus alerting rules from the policy (so alerts fire even when the agent is down); check them with promtool."""
    from streams.policy.prometheus_rules import render_prometheus_rules

    common.emit(render_prometheus_rules(common.policy(policy)), out)
