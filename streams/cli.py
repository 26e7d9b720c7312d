"""The ``streamwarden`` command line.

Every command takes its configuration from flags, ``STREAMWARDEN_*`` environment
variables and an optional ``--config FILE``, through one settings class
(:class:`streams.settings.Settings`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError

from .settings import CONFIG_ENV, Settings, load_settings

app = typer.Typer(
    help="streamwarden: monitor LLM traffic on Kafka for hallucination, drift, bias and PII leaks.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
tap_app = typer.Typer(help="Send prompt/response events to Kafka.", no_args_is_help=True)
schema_app = typer.Typer(help="The event schema.", no_args_is_help=True)
topics_app = typer.Typer(help="The Kafka topics streamwarden uses.", no_args_is_help=True)
app.add_typer(tap_app, name="tap")
app.add_typer(schema_app, name="schema")
app.add_typer(topics_app, name="topics")
policy_app = typer.Typer(help="The policy: rules that trip alerts, rollbacks and the kill switch.", no_args_is_help=True)
killswitch_app = typer.Typer(help="Switch a model off (the gateway serves its fallback) or on again; every change is audited.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(killswitch_app, name="killswitch")
rollout_app = typer.Typer(help="Staged rollouts: where a model version stands (the policy gates promotion on it).", no_args_is_help=True)
app.add_typer(rollout_app, name="rollout")
dashboards_app = typer.Typer(help="The Grafana dashboards.", no_args_is_help=True)
app.add_typer(dashboards_app, name="dashboards")

BootstrapOpt = typer.Option(None, "--bootstrap", "-b", help="Kafka bootstrap servers host:port[,host:port] (env STREAMWARDEN_BOOTSTRAP).")
EmbeddedOpt = typer.Option(None, "--embedded/--production", help="Settings profile: the embedded tansu broker, or Kafka's defaults.")


@app.callback()
def _root(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="A YAML/TOML/JSON settings file (env STREAMWARDEN_CONFIG).", exists=True, dir_okay=False),
    log_level: str = typer.Option("warning", "--log-level", help="Log level of this command."),
) -> None:
    if config is not None:
        os.environ[CONFIG_ENV] = str(config)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _settings(**overrides) -> Settings:
    embedded = overrides.pop("embedded", None)
    if embedded is not None:
        overrides["profile"] = "embedded" if embedded else "production"
    try:
        return load_settings(**overrides)
    except (ValidationError, ValueError, FileNotFoundError) as exc:
        typer.secho(f"invalid settings: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None


def _emit(text: str, out: Optional[Path]) -> None:
    """Print ``text``, or write it to ``out``."""
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")


def _policy(path: Optional[Path]):
    """The policy at ``path`` (default: the packaged one); a bad file exits 2 with its line-numbered errors."""
    from .policy.rules import PolicyError, load_policy

    try:
        return load_policy(path)
    except PolicyError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None


@app.command()
def demo(
    seconds: Optional[float] = typer.Option(None, "--seconds", "-s", min=1, help="Stop after N seconds and print a JSON summary (default: run until Ctrl-C)."),
    rate: float = typer.Option(200.0, "--rate", min=1, help="Events per second to generate."),
    bootstrap: Optional[str] = typer.Option(None, "--bootstrap", "-b", help="Use this Kafka instead of starting the embedded broker."),
    seed: int = typer.Option(7, help="Seed of the traffic generator."),
    live: Optional[bool] = typer.Option(None, "--live/--no-live", help="Live terminal view (default: when on a terminal)."),
    worker_log: Optional[Path] = typer.Option(None, help="Where the worker's log goes (default: a temp file)."),
) -> None:
    """Start a broker, a worker and a traffic generator with injected incidents; watch findings live."""
    from .demo import DemoOptions, run_demo

    # A 20-second demo needs small drift windows; half the events embedded keeps a 2-core CPU
    # ahead of 200 events/s.
    overrides = {
        "metrics_window_s": 1.0,
        "detector_options": {
            "drift": {"reference_size": 100, "window_size": 100, "test_every": 50, "sample_rate": 0.5},
            "descriptor_drift": {"reference_size": 150, "window_size": 150, "test_every": 75},
        },
    }
    if bootstrap:
        overrides.update(bootstrap=bootstrap, profile=os.environ.get("STREAMWARDEN_PROFILE", "production"))
    else:
        overrides.update(profile="embedded")
    settings = _settings(**overrides)
    opts = DemoOptions(seconds=seconds, rate=rate, seed=seed, live=live, worker_log=worker_log)
    try:
        summary = run_demo(settings, opts)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    typer.echo(json.dumps(summary, indent=2))
    if not summary["drained"]:
        typer.secho("the worker did not account for every event sent; see the worker log", fg="red", err=True)
        raise typer.Exit(1)


@app.command()
def worker(
    bootstrap: Optional[str] = BootstrapOpt,
    embedded: Optional[bool] = EmbeddedOpt,
    web_port: Optional[int] = typer.Option(None, help="Port of the worker's web server (/metrics, /healthz)."),
    detectors: Optional[str] = typer.Option(None, help="Comma-separated detector names (default: from settings)."),
) -> None:
    """Run a stream processor: consume the inference topic, run the detectors, publish findings and metrics."""
    from .app import Worker
    from .topics import ensure_topics

    overrides = dict(bootstrap=bootstrap, embedded=embedded, web_port=web_port)
    if detectors:
        overrides["detectors"] = [d.strip() for d in detectors.split(",") if d.strip()]
    settings = _settings(**overrides)
    try:
        ensure_topics(settings)
    except Exception as exc:  # noqa: BLE001 - faust retries on its own; say why we could not create them
        typer.secho(f"could not create topics on {settings.bootstrap}: {type(exc).__name__}: {exc}", fg="yellow", err=True)
    try:
        w = Worker(settings)
    except ValueError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None
    w.run()


@app.command()
def traffic(
    bootstrap: Optional[str] = BootstrapOpt,
    embedded: Optional[bool] = EmbeddedOpt,
    rate: float = typer.Option(50.0, "--rate", min=0.1, help="Events per second."),
    seconds: Optional[float] = typer.Option(None, "--seconds", "-s", min=1, help="Stop after N seconds (default: never)."),
    seed: int = typer.Option(7, help="Seed of the generator."),
) -> None:
    """Send synthetic traffic with scheduled incidents to the inference topic (the demo's generator alone)."""
    from .tap import Tap
    from .traffic import Schedule, TrafficGenerator

    settings = _settings(bootstrap=bootstrap, embedded=embedded)
    schedule = Schedule.for_run(seconds)
    gen = TrafficGenerator(schedule, seed=seed)
    start = time.monotonic()
    sent = 0
    with Tap(settings=settings) as tap:
        try:
            while seconds is None or time.monotonic() - start < seconds:
                due = int((time.monotonic() - start) * rate) - sent
                for _ in range(max(0, due)):
                    _, payload = gen.event(time.monotonic() - start)
                    tap.record(payload)
                    sent += 1
                time.sleep(0.02)
        except KeyboardInterrupt:
            pass
    s = tap.stats
    typer.echo(json.dumps({"generated": sent, "sent": s.sent, "dropped": s.dropped, "failed": s.failed}))


@app.command()
def probe(
    endpoint: Optional[str] = typer.Option(None, help="OpenAI-compatible base URL (env STREAMWARDEN_MODEL_ENDPOINT)."),
    model: Optional[str] = typer.Option(None, help="Model name at the endpoint (env STREAMWARDEN_MODEL_ENDPOINT_MODEL)."),
    model_version: str = typer.Option("unknown", help="The deployed version the findings are about."),
    probes: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, help="A probe set YAML (default: the shipped one)."),
    every: float = typer.Option(3600.0, min=1, help="Seconds between runs."),
    once: bool = typer.Option(False, "--once", help="Run the probe set once and exit."),
    threshold: float = typer.Option(0.25, min=0, max=1, help="Spread of outcome scores that makes a high-severity finding."),
    bootstrap: Optional[str] = BootstrapOpt,
    embedded: Optional[bool] = EmbeddedOpt,
) -> None:
    """Run counterfactual bias probes against the model on a schedule; publish the results as findings."""
    from .model_client import ChatModel
    from .probes import DEFAULT_PROBES, load_probes, run_probes
    from .topics import ensure_topics, produce

    settings = _settings(bootstrap=bootstrap, embedded=embedded, model_endpoint=endpoint, model_endpoint_model=model)
    if not settings.model_endpoint or not settings.model_endpoint_model:
        typer.secho("probe needs --endpoint and --model (or STREAMWARDEN_MODEL_ENDPOINT[_MODEL])", fg="red", err=True)
        raise typer.Exit(2)
    try:
        probe_set = load_probes(probes or DEFAULT_PROBES)
    except (ValueError, OSError) as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None
    client = ChatModel(settings.model_endpoint, settings.model_endpoint_model, settings.model_endpoint_api_key)
    ensure_topics(settings)
    while True:
        findings = run_probes(probe_set, client.generate, settings.model_endpoint_model, model_version, threshold)
        produce(settings, "findings", [(f.finding_id.encode(), f.model_dump_json().encode()) for f in findings])
        high = sum(f.severity.value == "high" for f in findings)
        typer.echo(json.dumps({"probes": len(probe_set), "findings": len(findings), "high": high}))
        if once:
            break
        time.sleep(every)


@app.command()
def broker(
    port: int = typer.Option(9092, help="Port on 127.0.0.1 for the embedded broker."),
) -> None:
    """Run the embedded Kafka-protocol broker (tansu, in memory) in the foreground, for local work."""
    from .broker import EmbeddedBroker

    with EmbeddedBroker(port=port) as b:
        typer.echo(f"embedded broker on {b.bootstrap} (in memory: data is gone when it stops); Ctrl-C to stop")
        try:
            while b.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


@topics_app.command("create")
def topics_create(bootstrap: Optional[str] = BootstrapOpt, embedded: Optional[bool] = EmbeddedOpt) -> None:
    """Create the topics that do not exist yet."""
    from .topics import ensure_topics, topic_specs

    settings = _settings(bootstrap=bootstrap, embedded=embedded)
    created = ensure_topics(settings)
    for spec in topic_specs(settings).values():
        mark = "created" if spec.name in created else "exists"
        typer.echo(f"{spec.role:<11} {spec.name:<40} partitions={spec.partitions:<3} {mark}")


@topics_app.command("list")
def topics_list() -> None:
    """Show the topic names the current settings use."""
    from .topics import topic_specs

    for spec in topic_specs(_settings()).values():
        typer.echo(f"{spec.role:<11} {spec.name:<40} partitions={spec.partitions}")


@tap_app.command("replay")
def tap_replay(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="A JSONL file, one event per line."),
    bootstrap: Optional[str] = BootstrapOpt,
    embedded: Optional[bool] = EmbeddedOpt,
) -> None:
    """Load recorded logs into the inference topic (each line as it is: bad lines are dead-lettered by the worker)."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    from .tap import Tap

    settings = _settings(bootstrap=bootstrap, embedded=embedded)
    size = file.stat().st_size
    lines = 0
    with Tap(settings=settings) as tap, Progress(
        TextColumn("[bold]replay[/bold] {task.fields[lines]} lines"),
        BarColumn(),
        TaskProgressColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=False,
    ) as progress:
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
    from .schema import render_json_schema

    _emit(render_json_schema(), out)


@policy_app.command("run")
def policy_run(
    policy: Optional[Path] = typer.Option(None, "--policy", "-p", exists=True, dir_okay=False, help="Policy YAML (default: STREAMWARDEN_POLICY_FILE or the packaged default)."),
    bootstrap: Optional[str] = BootstrapOpt,
    embedded: Optional[bool] = EmbeddedOpt,
    web_port: Optional[int] = typer.Option(None, help="Port of the agent's /metrics (0: none)."),
) -> None:
    """Run the policy agent: metrics topic in, decisions on the actions topic, then kill switch, rollback, alerts."""
    from .actions.agent import PolicyAgent
    from .topics import ensure_topics

    settings = _settings(bootstrap=bootstrap, embedded=embedded, policy_file=policy, policy_web_port=web_port)
    rules = _policy(settings.policy_file)
    try:
        ensure_topics(settings)
    except Exception as exc:  # noqa: BLE001 - say why, then let the agent's clients retry
        typer.secho(f"could not create topics on {settings.bootstrap}: {type(exc).__name__}: {exc}", fg="yellow", err=True)
    agent = PolicyAgent(settings, rules)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: agent.stop_event.set())
    try:
        agent.run()
    except KeyboardInterrupt:
        agent.stop_event.set()


@policy_app.command("check")
def policy_check(file: Path = typer.Argument(..., help="A policy YAML file.")) -> None:
    """Validate a policy file; errors name the line."""
    p = _policy(file)
    typer.echo(f"{file}: {len(p.rules)} rules, {len(p.rollouts)} rollouts: ok")


@policy_app.command("schema")
def policy_schema() -> None:
    """Print the JSON Schema of the policy file (for editors and CI)."""
    from .policy.rules import render_policy_schema

    typer.echo(render_policy_schema(), nl=False)


@policy_app.command("prometheus-rules")
def policy_prometheus_rules(
    policy: Optional[Path] = typer.Option(None, "--policy", "-p", exists=True, dir_okay=False, help="Policy YAML (default: the packaged default)."),
    out: Optional[Path] = typer.Option(None, help="Write here (default: stdout)."),
) -> None:
    """Prometheus alerting rules from the policy (so alerts fire even when the agent is down); check them with promtool."""
    from .policy.prometheus_rules import render_prometheus_rules

    _emit(render_prometheus_rules(_policy(policy)), out)


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

    if token:
        credential = token
    elif user and password:
        credential = (user, password)
    else:
        typer.secho("give --token (or GRAFANA_TOKEN), or --user and --password", fg="red", err=True)
        raise typer.Exit(2)
    try:
        result = push(grafana_url, credential, folder=folder, prometheus_url=prometheus_url)
    except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback
        typer.secho(f"push to {grafana_url} failed: {type(exc).__name__}: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps({"folder": result.folder_uid, "datasource": result.datasource, "dashboards": result.dashboards}, indent=2))


@rollout_app.command("set")
def rollout_set(
    model: str = typer.Argument(...),
    version: str = typer.Argument(...),
    stage: str = typer.Option(..., "--stage", help="internal, 1%, 10% or 100% (or the stages the policy lists for it)."),
    previous: Optional[str] = typer.Option(None, "--previous", help="The stable version a rollback returns to."),
    by: Optional[str] = typer.Option(None, "--by", help="Who (default: the login name)."),
) -> None:
    """Record a model version's rollout stage on the control topic; the policy agent picks it up."""
    from .actions.killswitch import publish_rollout

    state = publish_rollout(_settings(), model, version, stage, previous, by=f"human:{by}" if by else None)
    typer.echo(json.dumps(state, indent=2))


@rollout_app.command("status")
def rollout_status() -> None:
    """Every rollout stage recorded on the control topic."""
    from .actions.killswitch import read_rollouts

    states = read_rollouts(_settings())
    typer.echo(json.dumps({f"{m} {v}": st for (m, v), st in sorted(states.items())}, indent=2))


def _switch(model: str, engaged: bool, reason: str, fallback: Optional[str], by: Optional[str]) -> None:
    from .actions.killswitch import set_switch

    if not reason.strip():
        typer.secho("a reason is required: it is recorded in the audit log", fg="red", err=True)
        raise typer.Exit(2)
    settings = _settings()
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
        typer.secho("--fallback is 'model:NAME' or 'none'", fg="red", err=True)
        raise typer.Exit(2)
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
    from .actions.killswitch import read_states

    states = read_states(_settings())
    if as_json:
        typer.echo(json.dumps({m: json.loads(s.model_dump_json()) for m, s in sorted(states.items())}, indent=2))
        return
    if not states:
        typer.echo("no kill switch has been set")
    for m, st in sorted(states.items()):
        word = "ENGAGED " if st.engaged else "released"
        typer.echo(f"{m:<32} {word} by {st.by} at {st.at:%Y-%m-%d %H:%M:%S}Z  fallback={st.fallback or '503'}  reason: {st.reason}")


@app.command()
def gateway(
    upstream: Optional[str] = typer.Option(None, "--upstream", help="The model server's OpenAI-compatible base URL (env STREAMWARDEN_GATEWAY_UPSTREAM_URL)."),
    port: Optional[int] = typer.Option(None, "--port", help="Port to listen on (default 8080)."),
    host: Optional[str] = typer.Option(None, "--host", help="Bind address (default 127.0.0.1)."),
    bootstrap: Optional[str] = BootstrapOpt,
    embedded: Optional[bool] = EmbeddedOpt,
) -> None:
    """Run the OpenAI-compatible gateway: taps every exchange, enforces the kill switch."""
    from .gateway import run_gateway

    settings = _settings(gateway_upstream_url=upstream, gateway_port=port, gateway_host=host, bootstrap=bootstrap, embedded=embedded)
    if not settings.gateway_upstream_url:
        typer.secho("set --upstream (or STREAMWARDEN_GATEWAY_UPSTREAM_URL)", fg="red", err=True)
        raise typer.Exit(2)
    run_gateway(settings)


def main() -> None:  # the console script
    app()


if __name__ == "__main__":
    main()
