"""Local-only tools: the demo, the embedded broker, synthetic traffic, bias probes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional

import typer

from streams.cli import common


def demo(
    seconds: Optional[float] = typer.Option(
        None, "--seconds", "-s", min=1, help="Stop after N seconds and print a JSON summary (default: run until Ctrl-C)."
    ),
    rate: float = typer.Option(200.0, "--rate", min=1, help="Events per second to generate."),
    bootstrap: Optional[str] = typer.Option(None, "--bootstrap", "-b", help="Use this Kafka instead of starting the embedded broker."),
    seed: int = typer.Option(7, help="Seed of the traffic generator."),
    live: Optional[bool] = typer.Option(None, "--live/--no-live", help="Live terminal view (default: when on a terminal)."),
    worker_log: Optional[Path] = typer.Option(None, help="Where the worker's log goes (default: a temp file)."),
) -> None:
    """Start a broker, a worker and a traffic generator with injected incidents; watch findings live."""
    from streams.local.demo import DemoOptions, run_demo

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
    settings = common.settings(**overrides)
    opts = DemoOptions(seconds=seconds, rate=rate, seed=seed, live=live, worker_log=worker_log)
    try:
        summary = run_demo(settings, opts)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    typer.echo(json.dumps(summary, indent=2))
    if not summary["drained"]:
        raise common.fail("the worker did not account for every event sent; rerun with --worker-log FILE to see why", 1)


def traffic(
    bootstrap: Optional[str] = common.BootstrapOpt,
    embedded: Optional[bool] = common.EmbeddedOpt,
    rate: float = typer.Option(50.0, "--rate", min=0.1, help="Events per second."),
    seconds: Optional[float] = typer.Option(None, "--seconds", "-s", min=1, help="Stop after N seconds (default: never)."),
    seed: int = typer.Option(7, help="Seed of the generator."),
) -> None:
    """Send synthetic traffic with scheduled incidents to the inference topic (the demo's generator alone)."""
    from streams.local.traffic import Schedule, TrafficGenerator
    from streams.tap import Tap

    settings = common.settings(bootstrap=bootstrap, embedded=embedded)
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


def probe(
    endpoint: Optional[str] = typer.Option(None, help="OpenAI-compatible base URL (env STREAMWARDEN_MODEL_ENDPOINT)."),
    model: Optional[str] = typer.Option(None, help="Model name at the endpoint (env STREAMWARDEN_MODEL_ENDPOINT_MODEL)."),
    model_version: str = typer.Option("unknown", help="The deployed version the findings are about."),
    probes: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, help="A probe set YAML (default: the shipped one)."),
    every: float = typer.Option(3600.0, min=1, help="Seconds between runs."),
    once: bool = typer.Option(False, "--once", help="Run the probe set once and exit."),
    threshold: float = typer.Option(0.25, min=0, max=1, help="Spread of outcome scores that makes a high-severity finding."),
    bootstrap: Optional[str] = common.BootstrapOpt,
    embedded: Optional[bool] = common.EmbeddedOpt,
) -> None:
    """Run counterfactual bias probes against the model on a schedule; publish the results as findings."""
    from streams.events.topics import ensure_topics, produce
    from streams.local.probes import DEFAULT_PROBES, load_probes, run_probes
    from streams.worker.model_client import ChatModel

    settings = common.settings(bootstrap=bootstrap, embedded=embedded, model_endpoint=endpoint, model_endpoint_model=model)
    if not settings.model_endpoint or not settings.model_endpoint_model:
        raise common.fail("probe needs --endpoint and --model (or STREAMWARDEN_MODEL_ENDPOINT[_MODEL])")
    try:
        probe_set = load_probes(probes or DEFAULT_PROBES)
    except (ValueError, OSError) as exc:
        raise common.fail(str(exc)) from None
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


def broker(
    port: int = typer.Option(9092, help="Port on 127.0.0.1 for the embedded broker."),
) -> None:
    """Run the embedded Kafka-protocol broker (tansu, in memory) in the foreground, for local work."""
    from streams.local.broker import EmbeddedBroker

    with EmbeddedBroker(port=port) as b:
        typer.echo(f"embedded broker on {b.bootstrap} (in memory: data is gone when it stops); Ctrl-C to stop")
        try:
            while b.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
