"""A PII-heavy run through a real worker and the policy agent: no planted value appears in any output
(findings, metrics, actions, control, Prometheus, logs, and the dead letters, which are redacted by
default; with deadletter_payload=original they keep the exact bytes, as documented)."""

import threading
import time
import urllib.request

import pytest

from streams.events.topics import ensure_topics
from streams.local.outputs import OutputReader
from streams.tap import Tap

from .conftest import make_event, wait_for

pytestmark = pytest.mark.integration

PLANTED = ["dana.whitfield@example.com", "4111 1111 1111 1111", "GB82 WEST 1234 5698 7654 32", "AKIAIOSFODNN7EXAMPLE", "(212) 555-0187"]


def _is_kill(text: str) -> bool:
    return '"action": "kill"' in text or '"action":"kill"' in text


def _variants(value: str) -> set[str]:
    return {value, value.replace(" ", ""), value.replace(" ", "-"), value.lower()}


@pytest.mark.parametrize("payload", ["redacted", "original"])
def test_no_planted_value_reaches_findings_metrics_actions_prometheus_or_logs(settings, start_worker, start_process, payload):
    from streams.local.broker import free_port

    ensure_topics(settings)
    worker = start_worker(
        settings,
        STREAMWARDEN_DETECTORS='["descriptors", "pii", "bias"]',
        STREAMWARDEN_LOG_LEVEL="debug",
        STREAMWARDEN_DEADLETTER_PAYLOAD=payload,
    )
    agent_port = free_port()
    agent = start_process(settings, "--log-level", "debug", "policy", "run", STREAMWARDEN_POLICY_WEB_PORT=str(agent_port))
    outputs, dead_headers, dead_bodies = [], [], []
    lock = threading.Lock()

    def on_record(rec):
        with lock:
            if rec.role == "deadletter":
                dead_headers.append(repr(rec.headers))
                dead_bodies.append(rec.value.decode("utf-8", "replace"))
            elif rec.value is not None:  # (the control topic's read markers are tombstones)
                outputs.append(rec.value.decode("utf-8", "replace"))

    reader = OutputReader(settings, ("findings", "metrics", "deadletter", "actions", "control"), on_record).start()
    events = []
    for i in range(40):
        v = PLANTED[i % len(PLANTED)]
        events.append(make_event(prompt=f"As a woman, what is on file for account {i}?", response=f"The account holder's details: {v}."))
        events.append(make_event(prompt=f"My contact is {v}, please confirm", response=f"Confirmed, we have {v}."))
    with Tap(settings=settings) as tap:
        for e in events:
            tap.record(e)
        for v in PLANTED:  # malformed records that carry PII: kept whole as dead letters, reasons must not quote it
            tap.record(f'{{"event_id": "bad", "prompt": "{v}", "response": 5}}'.encode())
    try:
        wait_for(
            lambda: (
                sum('"scope":"model"' in o for o in outputs) > 0
                and len(dead_headers) >= len(PLANTED)
                and sum('"detector":"pii"' in o for o in outputs) >= 80
                and any(_is_kill(o) for o in outputs)
            ),
            timeout=90,
            message="findings, metrics, dead letters and the kill",
        )
        time.sleep(2 * settings.metrics_window_s)
    finally:
        reader.stop()
    prometheus = urllib.request.urlopen(f"http://127.0.0.1:{settings.web_port}/metrics", timeout=5).read().decode()
    prometheus += urllib.request.urlopen(f"http://127.0.0.1:{agent_port}/metrics", timeout=5).read().decode()
    worker.stop()
    agent.stop()
    log = worker.log() + agent.log()
    assert "pii_leak" in "".join(outputs) and "pii_echo" in "".join(outputs)  # the run did find them
    assert any(_is_kill(o) for o in outputs) and "streamwarden_killswitch_engaged" in prometheus  # and acted on them
    assert "streamwarden_pii_entities_total" in prometheus
    haystacks = {
        "findings+metrics": "\n".join(outputs),
        "dead-letter headers": "\n".join(dead_headers),
        "prometheus": prometheus,
        "worker log": log,
    }
    if payload == "redacted":  # then the dead letters' bodies too: masked, still there to read
        haystacks["dead-letter bodies"] = "\n".join(dead_bodies)
        assert all('"response": 5' in b for b in dead_bodies) and all("streamwarden.dlq.payload" in h for h in dead_headers)
    else:
        assert any(PLANTED[0] in b for b in dead_bodies)  # the original bytes, as documented
    leaks = [(where, v) for where, text in haystacks.items() for value in PLANTED for v in _variants(value) if v in text]
    for where, v in leaks:
        if where == "worker log":
            print([line[:300] for line in log.splitlines() if v in line][:3])
    assert leaks == []
    assert "[DEBUG]" in log or "DEBUG" in log  # debug logging was on, and still nothing leaked
