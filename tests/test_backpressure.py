"""Detectors slower than the input: the worker slows its consumption, memory stays bounded,
the backlog waits in Kafka and shows as lag, and nothing is dropped."""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest

from streams.events.topics import ensure_topics
from streams.tap import Tap

from .conftest import http_ok, make_event, tally_outputs, wait_for

pytestmark = pytest.mark.integration

SLOW = "tests.slow_detector:SlowDetector"


def _metric(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return int(re.search(r"VmRSS:\s+(\d+) kB", fh.read()).group(1)) / 1024


def test_a_slow_detector_slows_consumption_with_bounded_memory_and_visible_lag(settings, start_worker, tmp_path):
    ensure_topics(settings)
    hold = tmp_path / "hold"
    hold.touch()
    worker = start_worker(
        settings,
        STREAMWARDEN_DETECTORS=json.dumps([SLOW]),
        # The detector is stuck while the events arrive (whatever the tap's speed on this machine),
        # then takes 0.05 s a batch: the backlog builds in Kafka, then is worked off.
        STREAMWARDEN_DETECTOR_OPTIONS=json.dumps({SLOW: {"seconds_per_batch": 0.05, "hold_while": str(hold)}}),
        STREAMWARDEN_BATCH_SIZE="16",
        STREAMWARDEN_STREAM_BUFFER_EVENTS="64",
    )
    url = f"http://127.0.0.1:{settings.web_port}"
    wait_for(lambda: http_ok(url + "/healthz"), 90, message="the worker")
    n, size = 3000, 64_000  # 192 MB of events: far more than the worker may hold
    rss_before = _rss_mb(worker.proc.pid)
    peak_rss, peak_in_flight, backlog, lag = rss_before, 0.0, [], []
    with tally_outputs(settings, ("metrics",)) as tally:
        with Tap(settings=settings) as tap:
            for i in range(n):
                tap.record(make_event(response=f"{i} " + "all good. " * (size // 10)), wait_s=10)
            # Everything in Kafka before the backlog is measured: 192 MB can take the tap longer
            # than its default 10 s close (it then reports the rest as dropped).
            assert tap.close(timeout_s=180).sent == n

        def sample():
            nonlocal peak_rss, peak_in_flight
            text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
            unprocessed = n - tally.events_processed  # everything is in Kafka by now
            backlog.append(unprocessed)
            lag.append(_metric(text, "streamwarden_consumer_lag_records"))
            peak_in_flight = max(peak_in_flight, _metric(text, "streamwarden_batches_in_flight"))
            peak_rss = max(peak_rss, _rss_mb(worker.proc.pid))
            return unprocessed <= 0

        for _ in range(10):  # every event in Kafka, the detector still stuck on its first batch
            sample()
            time.sleep(0.2)
        hold.unlink()  # the detector catches up
        wait_for(sample, 240, 0.2, "the backlog to be worked off")
    print(
        f"\nbacklog up to {max(backlog)} events, lag up to {max(lag):.0f}; "
        f"RSS {rss_before:.0f} -> peak {peak_rss:.0f} MB; in flight <= {peak_in_flight:.0f}"
    )
    assert max(backlog) > 1500  # the detectors were far behind...
    assert max(lag) >= 0.5 * max(backlog)  # ...the backlog shows as lag...
    assert peak_rss - rss_before < 80  # ...and memory stayed flat: it waited in Kafka (the events are 192 MB;
    # with faust's default 4,096-event buffer instead of 64 the same run grew 139 MB)
    assert peak_in_flight <= 1  # one batch in the detectors at a time
    assert tally.events_processed == n  # and every event was processed: nothing dropped
