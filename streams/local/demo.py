"""``streamwarden demo``: a real broker, a real worker, synthetic traffic, a live view.

Everything is the product's own path: the embedded tansu broker (or ``--bootstrap``), the
topics, a ``streamwarden worker`` process, the tap sending generated traffic, and the
output topics read back for the view and the final JSON summary.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from streams.events.schema import InferenceEvent
from streams.events.topics import ensure_topics
from streams.local.broker import EmbeddedBroker, free_port
from streams.local.outputs import OutputReader, OutputTally
from streams.local.traffic import Schedule, TrafficGenerator
from streams.settings import Settings
from streams.tap import Tap


@dataclass
class DemoOptions:
    seconds: float | None = None
    rate: float = 200.0
    seed: int = 7
    live: bool | None = None  # None: only on a terminal
    # While the worker loads its models, clean traffic queues in Kafka (at most warmup_events); the
    # incidents' schedule starts once the worker is ready (or after ready_wait_max_s), so that every
    # incident is judged as it happens, not out of a backlog read partition by partition (the pinned
    # drift reference would then mix the incidents in).
    warmup_events: int = 2000
    ready_wait_max_s: float = 180.0
    drain_stall_s: float = 30.0  # the drain gives up when the worker accounts for nothing new this long
    drain_max_s: float = 600.0
    worker_log: Path | None = None


class _Sent:
    def __init__(self):
        self.first_at: dict[str, float] = {}  # phase -> wall-clock time of its first event
        self.valid = 0
        self.malformed = 0
        self.phase_of_event: dict[str, str] = {}
        self.by_phase: dict[str, int] = {}
        self.lag_max = 0  # the most events sent and not yet processed, once the worker was ready


def _worker_env(settings: Settings, web_port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        STREAMWARDEN_BOOTSTRAP=settings.bootstrap,
        STREAMWARDEN_PROFILE=settings.profile,
        STREAMWARDEN_TOPIC_PREFIX=settings.topic_prefix,
        STREAMWARDEN_WEB_PORT=str(web_port),
        STREAMWARDEN_METRICS_WINDOW_S=str(settings.metrics_window_s),
        STREAMWARDEN_DETECTORS=json.dumps(settings.detectors),
        STREAMWARDEN_DETECTOR_OPTIONS=json.dumps(settings.detector_options),
        STREAMWARDEN_INPUT_PARTITIONS=str(settings.input_partitions),
        STREAMWARDEN_OUTPUT_PARTITIONS=str(settings.output_partitions),
    )
    return env


class StandInController:
    """A stand-in for the deployment controller that receives rollback webhooks (the demo has no
    real one): it accepts every call and remembers it, for the live view and the summary."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.rollbacks: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    outer.rollbacks.append(json.loads(body))
                except ValueError:
                    pass
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="demo-controller", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/rollback"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def demo_policy_file(directory: Path) -> Path:
    """The default policy, plus the demo models' staged rollouts (so rollbacks name a version to return to)
    and the toxic-rate rule on the demo's time scale, written to ``directory``."""
    import yaml

    from streams.policy.rules import DEFAULT_POLICY

    data = yaml.safe_load(DEFAULT_POLICY.read_text(encoding="utf-8"))
    data["rollouts"] = [
        {
            "model": "support-assistant",
            "version": "2026.11.1",
            "stage": "10%",
            "previous_version": "2026.10.4",
            "advance_min_events": 200,
            "advance_after_s": 15,
        },
        {
            "model": "code-helper",
            "version": "1.8.0",
            "stage": "1%",
            "previous_version": "1.7.2",
            "advance_min_events": 200,
            "advance_after_s": 15,
        },
    ]
    # The demo's incidents last seconds, not minutes: its toxic canary is judged over a 10 s window and
    # must hold 2 s (the default policy's 5 min and 60 s would never see a 2-second phase).
    for rule in data["rules"]:
        if rule["name"] == "toxic-rate":
            rule.update(window_s=10, for_s=2, min_events=50)
    path = directory / "policy.yaml"
    with path.open("w", encoding="utf-8") as fh:
        yaml.safe_dump(data, fh, sort_keys=False)
    return path


def _worker_ready(web_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/healthz", timeout=0.5) as r:
            return r.status == 200
    except OSError:
        return False


def _view(
    tally: OutputTally, sent: _Sent, phase: str, elapsed: float, opts: DemoOptions, web_port: int, ready: bool, agent_port: int = 0
) -> Group:
    head = Table.grid(padding=(0, 2))
    total = f"/{opts.seconds:.0f}s" if opts.seconds else ""
    head.add_row(
        Text(f"streamwarden demo  {elapsed:5.1f}s{total}", style="bold"),
        Text(f"phase: {phase}", style="yellow" if phase != "clean" else "green"),
        Text(
            "worker: ready" if ready else "worker: loading models (events queue in Kafka meanwhile)", style="green" if ready else "yellow"
        ),
        Text(f"metrics: http://127.0.0.1:{web_port}/metrics", style="dim"),
        Text(f"incidents: http://127.0.0.1:{agent_port}/", style="dim"),
    )
    counts = Table(title="pipeline", show_header=True, header_style="bold")
    for col in ("sent", "malformed sent", "processed", "lag", "events/s", "findings", "dead letters", "actions"):
        counts.add_column(col, justify="right")
    rate = tally.events_processed / elapsed if elapsed > 0 else 0.0
    lag = sent.valid - tally.events_processed  # events sent that the worker has not processed yet (in Kafka or in flight)
    counts.add_row(
        str(sent.valid),
        str(sent.malformed),
        str(tally.events_processed),
        Text(str(lag), style="yellow" if ready and lag > opts.rate * 2 else ""),
        f"{rate:.0f}",
        str(len(tally.finding_ids)),
        str(tally.dead_letters),
        str(tally.actions),
    )
    actions = Table(title="actions (policy agent -> actions topic)", show_header=True, header_style="bold")
    for col in ("action", "rule", "model", "reason"):
        actions.add_column(col)
    for a in tally.action_log[-6:]:
        style = "bold red" if a["action"] in ("kill", "rollback", "should_rollback") else ""
        actions.add_row(Text(a["action"], style=style), a.get("rule") or "", f"{a['model']}@{a['model_version']}", a["reason"][:90])
    engaged = [m for m, st in tally.killswitch.items() if st and st.get("engaged")]
    switch = Text(
        f"kill switch ENGAGED: {', '.join(engaged)}" if engaged else "kill switch: none engaged", style="bold red" if engaged else "green"
    )
    kinds = Table(title="findings by detector.kind", show_header=True, header_style="bold")
    kinds.add_column("detector.kind")
    kinds.add_column("count", justify="right")
    for kind, n in sorted(tally.findings_by_kind.items()):
        kinds.add_row(kind, str(n))
    recent = Table(title="latest findings", show_header=True, header_style="bold")
    for col in ("severity", "detector", "model", "summary"):
        recent.add_column(col)
    for f in list(tally.recent)[-5:]:
        recent.add_row(f["severity"], f"{f['detector']}.{f['kind']}", f"{f['model']}@{f['model_version']}", f["summary"])
    return Group(head, counts, switch, actions, kinds, recent)


def _nest(counter) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (phase, kind), n in sorted(counter.items()):
        out.setdefault(phase, {})[kind] = n
    return out


def _terminate(proc: subprocess.Popen | None, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not stopped within ``timeout_s``."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _count_actions(log: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in log:
        key = f"{a['action']}:{a.get('rule') or '-'}"
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def _time_to_action(sent: _Sent, log: list[dict]) -> dict[str, float]:
    """Seconds from the first event of the PII-leak phase to the first kill and rollback after it
    (the worker's model loading is included when the phase comes before the worker is ready)."""
    from datetime import datetime

    first = sent.first_at.get("pii_leak")
    out: dict[str, float] = {}
    if first is None:
        return out
    for a in log:
        at = datetime.fromisoformat(a["decided_at"]).timestamp()
        if a["action"] in ("kill", "rollback") and at >= first and a["action"] not in out:
            out[a["action"]] = round(at - first, 2)
    return out


def _incident_urls(port: int, log: list[dict]) -> dict[str, str]:
    """The policy agent's page of each incident that tripped a kill or a rollback ('rule model version': URL);
    the agent serves them while the demo runs."""
    out: dict[str, str] = {}
    for a in log:
        if a["action"] in ("kill", "rollback") and a.get("episode_id"):
            out.setdefault(f"{a.get('rule')} {a['model']} {a['model_version']}", f"http://127.0.0.1:{port}/incidents/{a['episode_id']}")
    return out


def _exited(what: str, code: int, log_path: Path, kept: bool) -> RuntimeError:
    """A process of the demo died: point at its log, or quote it when the log is a temporary file."""
    if kept:
        return RuntimeError(f"{what} exited with {code}; see {log_path}")
    return RuntimeError(f"{what} exited with {code}; the end of its log:\n{log_path.read_text(errors='replace')[-3000:]}")


def run_demo(settings: Settings, opts: DemoOptions, console: Console | None = None) -> dict[str, Any]:
    """Run the demo and return its summary; the caller prints it.

    Everything it starts is stopped and everything it opens is closed when it ends, however it
    ends; its files (policy, logs) live in a temporary directory that goes with it. Only a worker
    log the caller asked for (``opts.worker_log``) stays."""
    console = console or Console(stderr=True)
    live_view = console.is_terminal if opts.live is None else opts.live
    with contextlib.ExitStack() as cleanup:  # undone in reverse order
        workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="streamwarden-demo-")))
        broker = None
        if settings.profile == "embedded":
            broker = EmbeddedBroker(log_path=workdir / "tansu.log")
            cleanup.callback(broker.stop)
            broker.start()
            settings = settings.model_copy(update={"bootstrap": broker.bootstrap})
        ensure_topics(settings)
        controller = StandInController()
        cleanup.callback(controller.stop)
        policy_file = demo_policy_file(workdir)
        agent_port = free_port()
        agent_env = {
            **_worker_env(settings, 0),
            "STREAMWARDEN_POLICY_FILE": str(policy_file),
            "STREAMWARDEN_ROLLBACK_WEBHOOK_URL": controller.url,
            "STREAMWARDEN_POLICY_WEB_PORT": str(agent_port),
        }
        web_port = free_port()
        log_path = opts.worker_log or workdir / "worker.log"
        worker_log = cleanup.enter_context(open(log_path, "ab"))
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env=_worker_env(settings, web_port),
            stdout=worker_log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        cleanup.callback(_terminate, worker, 20)
        agent = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "policy", "run"],
            env=agent_env,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        cleanup.callback(_terminate, agent, 10)
        sent = _Sent()
        tally = OutputTally()
        lock = threading.Lock()

        def on_record(rec):
            with lock:
                tally.add(rec, phase_of=sent.phase_of_event.get)

        reader = OutputReader(settings, ("findings", "deadletter", "metrics", "actions", "control"), on_record).start()
        cleanup.callback(reader.stop)
        tap = Tap(settings=settings)
        cleanup.callback(tap.close, timeout_s=1)
        schedule = Schedule.for_run(opts.seconds)
        gen = TrafficGenerator(schedule, seed=opts.seed)
        start = time.monotonic()
        phase = "clean"
        live = Live(console=console, refresh_per_second=4, transient=False) if live_view else None
        if live:
            live.start()
        next_report = 0.0
        ready = False
        next_ready_check = 0.0
        clock_start: float | None = None  # when the incidents' schedule started (the worker was ready)
        warm_sent = 0  # records sent before it
        try:
            while True:
                elapsed = time.monotonic() - start
                if clock_start is None and (ready or elapsed >= opts.ready_wait_max_s):
                    clock_start, warm_sent = time.monotonic(), sent.valid + sent.malformed
                t = time.monotonic() - clock_start if clock_start is not None else 0.0  # schedule time
                if opts.seconds is not None and clock_start is not None and t >= opts.seconds:
                    break
                if worker.poll() is not None:
                    raise _exited("the worker", worker.returncode, log_path, kept=opts.worker_log is not None)
                if agent.poll() is not None:
                    raise _exited("the policy agent", agent.returncode, log_path, kept=opts.worker_log is not None)
                # Send what the rate allows up to now, then sleep a little.
                if clock_start is None:
                    due = min(int(elapsed * opts.rate), opts.warmup_events) - (sent.valid + sent.malformed)
                else:
                    due = warm_sent + int(t * opts.rate) - (sent.valid + sent.malformed)
                for _ in range(max(0, min(due, 1000))):
                    now_t = time.monotonic() - clock_start if clock_start is not None else 0.0
                    phase = schedule.phase_at(now_t)
                    kind, payload = gen.event(now_t)
                    if kind == "malformed":
                        tap.record(payload)
                        sent.malformed += 1
                    else:
                        assert isinstance(payload, InferenceEvent)
                        tap.record(payload)
                        sent.valid += 1
                        p = str(payload.metadata["phase"])
                        sent.phase_of_event[payload.event_id] = p
                        sent.by_phase[p] = sent.by_phase.get(p, 0) + 1
                        sent.first_at.setdefault(p, payload.timestamp.timestamp())
                if not ready and elapsed >= next_ready_check:
                    ready = _worker_ready(web_port)
                    next_ready_check = elapsed + 1.0
                if ready:  # the lag once the worker runs (before, everything waits in Kafka by design)
                    with lock:
                        lag = sent.valid - tally.events_processed
                    sent.lag_max = max(sent.lag_max, lag)
                if live and elapsed >= next_report:
                    with lock:
                        live.update(_view(tally, sent, phase, elapsed, opts, web_port, ready, agent_port))
                    next_report = elapsed + 0.25
                elif not live and elapsed >= next_report:
                    with lock:
                        console.print(
                            f"[{elapsed:5.1f}s] worker={'ready' if ready else 'loading'} phase={phase} sent={sent.valid} processed={tally.events_processed} "
                            f"lag={sent.valid - tally.events_processed} "
                            f"findings={len(tally.finding_ids)} dead_letters={tally.dead_letters} actions={tally.actions}"
                        )
                    next_report = elapsed + 5.0
                time.sleep(0.01)
            sending_s = time.monotonic() - start
            with lock:
                lag_at_end = sent.valid - tally.events_processed
            tap_stats = tap.close(timeout_s=30)
            # Drain: wait until the worker has accounted for everything that was sent, as long as it
            # keeps making progress (a slow machine drains late; a stuck worker is given up on).
            drain_start = time.monotonic()
            stalled_at, accounted = drain_start + opts.drain_stall_s, -1
            drained = False
            while time.monotonic() < min(stalled_at, drain_start + opts.drain_max_s):
                with lock:
                    done = tally.events_processed >= tap_stats.sent - sent.malformed and tally.dead_letters >= sent.malformed
                    now_accounted = tally.events_processed + tally.dead_letters
                if done:
                    drained = True
                    break
                if worker.poll() is not None:
                    break
                if now_accounted != accounted:
                    stalled_at, accounted = time.monotonic() + opts.drain_stall_s, now_accounted
                time.sleep(0.2)
            drain_s = time.monotonic() - drain_start
            time.sleep(max(settings.metrics_window_s, 3.0))  # one more window and evaluation: late findings and actions
            total_s = time.monotonic() - start
            if live:
                with lock:
                    live.update(_view(tally, sent, "done", total_s, opts, web_port, True, agent_port))
        finally:
            if live:
                live.stop()
        with lock:
            summary = {
                "seconds": round(sending_s, 2),
                "broker": "embedded tansu" if broker else settings.bootstrap,
                "events_sent": sent.valid,
                "malformed_sent": sent.malformed,
                "tap": {"accepted": tap_stats.accepted, "sent": tap_stats.sent, "dropped": tap_stats.dropped, "failed": tap_stats.failed},
                "events_processed": tally.events_processed,
                "events_per_s": round(tally.events_processed / total_s, 1) if total_s else 0.0,
                "drained": drained,
                "lag_at_end_of_sending": lag_at_end,
                "lag_max_after_ready": sent.lag_max,
                "drain_s": round(drain_s, 1),
                "findings": dict(sorted(tally.findings_by_detector.items())),
                "findings_by_kind": dict(sorted(tally.findings_by_kind.items())),
                "findings_total": len(tally.finding_ids),
                # What the detectors left unjudged, by detector: what they had nothing to judge on (grounding: no
                # context documents; consistency: no samples) and what a ration refused while the worker was behind.
                "events_unjudged": dict(sorted(tally.unjudged.items())),
                "findings_duplicated": tally.findings_duplicated,
                "events_by_phase": dict(sorted(sent.by_phase.items())),
                "findings_by_phase": _nest(tally.findings_by_phase),
                "dead_letters": tally.dead_letters,
                "dead_letter_reasons": dict(sorted(tally.dead_letter_reasons.items())),
                "actions": tally.actions,
                "actions_by_kind": _count_actions(tally.action_log),
                "action_log": [
                    {k: a.get(k) for k in ("action", "rule", "model", "model_version", "to_version", "decided_at", "reason", "action_id")}
                    for a in tally.action_log
                ],
                "action_outcomes": {a["action_id"]: tally.outcomes.get(a["action_id"]) for a in tally.action_log},
                "killswitch_engaged": sorted(m for m, st in tally.killswitch.items() if st and st.get("engaged")),
                "rollbacks_received_by_controller": [
                    {k: r.get(k) for k in ("model", "from_version", "to_version", "rule", "action_id")} for r in controller.rollbacks
                ],
                "pii_leak_first_event_to_action_s": _time_to_action(sent, tally.action_log),
                "incident_page": f"http://127.0.0.1:{agent_port}/",
                "incident_urls": _incident_urls(agent_port, tally.action_log),
                "metrics_records": tally.metrics_records,
                "worker_log": str(opts.worker_log) if opts.worker_log else None,
            }
        return summary
