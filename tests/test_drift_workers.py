"""Drift across two workers of one consumer group: interval samples merged per model version."""

import json
import threading
import time

import pytest

from streams.events.topics import ensure_topics
from streams.local.broker import free_port
from streams.local.outputs import OutputReader
from streams.tap import Tap

from .conftest import http_ok, make_event, wait_for
from .test_drift import _brown

pytestmark = pytest.mark.integration


def test_two_workers_publish_samples_and_one_merged_test_flags_the_shift(settings, start_worker):
    ensure_topics(settings)
    env = dict(
        STREAMWARDEN_DETECTORS='["drift"]',
        STREAMWARDEN_DETECTOR_OPTIONS=json.dumps(
            {"drift": {"mode": "publish", "sample_rate": 1.0, "fields": ["prompt"], "reservoir_size": 100}}
        ),
        STREAMWARDEN_DRIFT_INTERVAL_S="2",
        STREAMWARDEN_DRIFT_MERGE_WINDOW="120",
        STREAMWARDEN_DRIFT_MERGE_INTERVALS="2",
    )
    b_port = free_port()
    workers = [start_worker(settings, **env), start_worker(settings, **env, STREAMWARDEN_WEB_PORT=str(b_port))]
    # Both workers up before the traffic starts: a worker that joins the group after the shift has no
    # samples in the merged window (a CI run failed so: one producer, the other still starting).
    for port in (settings.web_port, b_port):
        wait_for(lambda port=port: http_ok(f"http://127.0.0.1:{port}/healthz"), 90, message=f"the worker on {port}")
    found = []
    lock = threading.Lock()

    def on_record(rec):
        f = rec.json()
        with lock:
            found.append(f)

    reader = OutputReader(settings, ("findings",), on_record).start()
    # Short texts at 50 events/s: two workers on a 2-core CI machine keep up with that.
    news = [" ".join(p.split()[:25]) for p in _brown("news", 600, 7)]
    hobbies = [" ".join(p.split()[:25]) for p in _brown("hobbies", 600, 8)]
    try:
        with Tap(settings=settings) as tap:
            start = time.monotonic()
            i = 0
            while time.monotonic() - start < 40 and not found:
                phase_news = time.monotonic() - start < 16
                text = (news if phase_news else hobbies)[i % 600]
                tap.record(make_event(prompt=text))
                i += 1
                time.sleep(0.02)
        wait_for(lambda: found, timeout=30, message="a merged drift finding")
    except AssertionError:
        for w in workers:
            print(w.log()[-3000:])
        raise
    finally:
        reader.stop()
    (f,) = found
    assert f["kind"] == "prompt_drift" and f["details"]["merged"] is True
    assert f["details"]["producers"] == 2  # both workers' samples are in the merged window
