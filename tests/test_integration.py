"""The whole path on a real Kafka-protocol broker: tap -> topic -> faust worker -> outputs."""

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest

from streams.events.topics import ensure_topics
from streams.local.outputs import OutputReader, OutputTally
from streams.tap import Tap
from streams.worker.pipeline import HEADER_PREFIX

from .conftest import make_event, wait_for

pytestmark = pytest.mark.integration

MALFORMED = [
    b"{not json",
    b"\xff\xfe\xfd",
    b"[1,2,3]",
    b'{"schema_version": 3}',
    b'{"event_id": "no-other-fields"}',
    b'{"event_id": "e", "timestamp": "2026-01-01T00:00:00Z", "model": "m", "model_version": "v", "prompt": "p", "response": "r", "latency_ms": "slow"}',
]


def test_valid_events_become_findings_and_malformed_ones_dead_letters(settings, start_worker):
    ensure_topics(settings)
    worker = start_worker(settings, STREAMWARDEN_DEADLETTER_PAYLOAD="original")  # byte-exact dead letters

    tally = OutputTally()
    dead = []
    lock = threading.Lock()

    def on_record(rec):
        with lock:
            tally.add(rec)
            if rec.role == "deadletter":
                dead.append(rec)

    reader = OutputReader(settings, ("findings", "deadletter", "metrics"), on_record).start()
    refusals = [make_event(response="I'm sorry, but I can't help with that request.", model="m1") for _ in range(120)]
    clean = [make_event(model="m2", model_version="v2") for _ in range(80)]
    n_valid = len(refusals) + len(clean)
    with Tap(settings=settings) as tap:
        for i, e in enumerate(refusals + clean):
            assert tap.record(e)
            if i % 40 == 0:
                assert tap.record(MALFORMED[(i // 40) % len(MALFORMED)])
        for bad in MALFORMED:
            assert tap.record(bad)
    m = len(MALFORMED) + len(range(0, n_valid, 40))
    assert tap.stats.sent == n_valid + m

    try:
        wait_for(
            lambda: tally.events_processed >= n_valid and tally.dead_letters >= m and len(tally.finding_ids) >= len(refusals),
            timeout=90,
            message=f"{n_valid} events processed and {m} dead letters",
        )
        time.sleep(4 * settings.metrics_window_s)  # let late (duplicate) outputs show up before counting
    except AssertionError:
        print(worker.log()[-5000:])
        raise
    finally:
        reader.stop()

    # Exactly N processed, exactly M dead letters: none lost, none counted twice.
    assert tally.events_processed == n_valid
    assert tally.dead_letters == m
    # One finding per refusing event, none for clean events, no duplicate finding.
    assert tally.findings_duplicated == 0
    assert Counter(tally.finding_event_ids) == Counter({e.event_id: 1 for e in refusals})
    assert tally.findings_by_kind == {"descriptors.refusal": len(refusals)}
    # In "original" mode every dead letter keeps the exact bytes and says why, with where it came from.
    originals = Counter(MALFORMED[(i // 40) % len(MALFORMED)] for i in range(0, n_valid, 40)) + Counter(MALFORMED)
    assert Counter(r.value for r in dead) == originals
    for r in dead:
        assert r.headers[HEADER_PREFIX + "reason"]
        assert r.headers[HEADER_PREFIX + "source_topic"].endswith("inference")
        assert int(r.headers[HEADER_PREFIX + "source_offset"]) >= 0
    assert set(tally.dead_letter_reasons) == {
        "invalid_json",
        "invalid_utf8",
        "not_an_object",
        "unsupported_schema_version",
        "schema_violation",
    }

    # The worker's Prometheus endpoint shows the same counts (web server on 127.0.0.1).
    body = urllib.request.urlopen(f"http://127.0.0.1:{settings.web_port}/metrics", timeout=5).read().decode()
    assert 'streamwarden_events_total{model="m1",model_version="v1"} 120.0' in body
    assert 'streamwarden_events_total{model="m2",model_version="v2"} 80.0' in body
    assert 'streamwarden_findings_total{detector="descriptors",kind="refusal",model="m1",model_version="v1",severity="low"} 120.0' in body
    # Drift reports are listed (none yet) and names outside the folder are refused.
    listing = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{settings.web_port}/reports", timeout=5).read())
    assert listing == {"reports": []} or all(r["url"].startswith("/reports/") for r in listing["reports"])
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{settings.web_port}/reports/..%2Fpyproject.toml", timeout=5)
    assert missing.value.code == 404
    assert worker.stop() == 0
