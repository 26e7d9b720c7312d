"""Shared fixtures: a real Kafka-protocol broker (embedded tansu) and per-test settings."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest

from streams.events.schema import InferenceEvent
from streams.local.broker import EmbeddedBroker, free_port
from streams.local.outputs import OutputReader, OutputTally
from streams.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("STREAMWARDEN_SHARED_DATA", ROOT.parent / "shared" / "data"))
_counter = itertools.count()


def shared_data(*parts: str) -> Path:
    """A file of ``../shared/data`` (the public labelled data); the test skips, saying why, when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs the shared data {path} (set STREAMWARDEN_SHARED_DATA to its folder)")
    return path


# Test tiers (markers): unit (no broker, no child process), integration, slow. A test is unit unless
# it uses the broker or is listed here; `pytest -m unit` is the quick loop, `make test` runs every tier.
_INTEGRATION_MODULES = {
    "test_actions",
    "test_cli_errors",
    "test_dashboards",
    "test_prometheus_rules",
    "test_probes",
    "test_replay",
    "test_demo",
    "test_no_outbound",
    "test_incident_page",
}
_SLOW_MODULES = {
    "test_demo",
    "test_crash",
    "test_backpressure",
    "test_actions",
    "test_dashboards",
    "test_drift_workers",
    "test_fuzz_worker",
    "test_incident_page",
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        if module in _SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
        if "broker" in item.fixturenames or module in _INTEGRATION_MODULES:
            item.add_marker(pytest.mark.integration)
        if not any(item.get_closest_marker(name) for name in ("integration", "slow")):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def broker():
    with EmbeddedBroker() as b:
        yield b


def isolated_settings(broker, **overrides) -> Settings:
    """Settings of their own on the shared broker: a fresh topic prefix and app id, short windows."""
    fields = dict(
        profile="embedded",
        bootstrap=broker.bootstrap,
        topic_prefix=f"t{next(_counter)}-{uuid.uuid4().hex[:6]}.",
        app_id=f"streamwarden-test-{uuid.uuid4().hex[:8]}",
        input_partitions=3,
        output_partitions=2,
        metrics_window_s=0.5,
        batch_within_s=0.2,
        web_port=free_port(),
    )
    fields.update(overrides)
    return Settings(**fields)


@pytest.fixture
def settings(broker) -> Settings:
    """Settings for one test (see :func:`isolated_settings`)."""
    return isolated_settings(broker)


def make_event(**overrides) -> InferenceEvent:
    fields = dict(
        event_id=uuid.uuid4().hex,
        timestamp=datetime.now(timezone.utc),
        model="m1",
        model_version="v1",
        prompt="What is the capital of France?",
        response="The capital of France is Paris.",
        latency_ms=120.0,
    )
    fields.update(overrides)
    return InferenceEvent(**fields)


def worker_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        STREAMWARDEN_PROFILE=settings.profile,
        STREAMWARDEN_BOOTSTRAP=settings.bootstrap,
        STREAMWARDEN_TOPIC_PREFIX=settings.topic_prefix,
        STREAMWARDEN_APP_ID=settings.app_id,
        STREAMWARDEN_INPUT_PARTITIONS=str(settings.input_partitions),
        STREAMWARDEN_OUTPUT_PARTITIONS=str(settings.output_partitions),
        STREAMWARDEN_METRICS_WINDOW_S=str(settings.metrics_window_s),
        STREAMWARDEN_BATCH_WITHIN_S=str(settings.batch_within_s),
        STREAMWARDEN_WEB_PORT=str(settings.web_port),
    )
    return env


class WorkerProcess:
    """A real ``streamwarden worker`` process for a test."""

    def __init__(self, settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None, args: tuple[str, ...] = ("worker",)):
        self.log_path = log_path
        env = worker_env(settings)
        env.update(extra_env or {})
        self._log = open(log_path, "ab")  # noqa: SIM115 - the worker writes it until stop() closes it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", *args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def stop(self, sig=signal.SIGTERM, timeout=30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_worker(tmp_path):
    started: list[WorkerProcess] = []

    def _start(settings: Settings, **extra_env: str) -> WorkerProcess:
        w = WorkerProcess(settings, tmp_path / f"worker-{len(started)}.log", extra_env)
        started.append(w)
        return w

    yield _start
    for w in started:
        w.stop()


@pytest.fixture
def start_process(tmp_path):
    """Any ``streamwarden`` command as a real process: ``start_process(settings, "policy", "run", VAR=value)``."""
    started: list[WorkerProcess] = []

    def _start(settings: Settings, *args: str, **extra_env: str) -> WorkerProcess:
        p = WorkerProcess(settings, tmp_path / f"{args[0]}-{len(started)}.log", extra_env, args=args)
        started.append(p)
        return p

    yield _start
    for p in started:
        p.stop()


def wait_for(predicate, timeout: float, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def http_ok(url: str) -> bool:
    """True when ``url`` answers 200 (a health check)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


@contextmanager
def tally_outputs(settings: Settings, roles: tuple[str, ...]):
    """An :class:`OutputTally` of the output topics of ``roles``, kept up to date while the block runs."""
    tally, lock = OutputTally(), threading.Lock()

    def on_record(rec):
        with lock:
            tally.add(rec)

    reader = OutputReader(settings, roles, on_record).start()
    try:
        yield tally
    finally:
        reader.stop()
