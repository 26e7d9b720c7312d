"""Two workers in one consumer group; one is SIGKILLed mid-stream. No event is lost: the
survivor takes over the dead worker's partitions from their committed offsets, and what was
processed twice shows up as findings with the same deterministic finding_id (dropped by id)."""

from __future__ import annotations

import signal
import time

import pytest

from streams.events.topics import ensure_topics
from streams.local.broker import free_port
from streams.tap import Tap

from .conftest import http_ok, make_event, tally_outputs, wait_for

pytestmark = pytest.mark.integration


def refusals(n: int):
    """Every response a refusal: exactly one descriptors.refusal finding per event."""
    return [make_event(response=f"I'm sorry, but I can't help with that request ({i}).") for i in range(n)]


def test_sigkill_of_one_worker_loses_no_event(settings, start_worker):
    ensure_topics(settings)
    # Commits every ~2.8 s (they follow the metrics window): the killed worker surely has processed
    # work it had not committed, which the survivor processes again.
    env = dict(STREAMWARDEN_DETECTORS='["descriptors"]', STREAMWARDEN_METRICS_WINDOW_S="3")
    a = start_worker(settings, **env)
    b = start_worker(settings, **env, STREAMWARDEN_WEB_PORT=str(free_port()))
    events = refusals(3000)
    sent_ids = {e.event_id for e in events}
    with tally_outputs(settings, ("findings", "metrics")) as tally:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{settings.web_port}/healthz"), 90, message="worker a")
        with Tap(settings=settings) as tap:
            # Both workers have partitions (and some work done) before one of them dies.
            for e in events[:600]:
                tap.record(e)
            wait_for(lambda: len(tally.finding_event_ids) >= 300, 60, message="both workers processing")
            start = time.monotonic()
            for i, e in enumerate(events[600:]):
                tap.record(e)
                if i == 300:
                    a.stop(signal.SIGKILL)  # mid-stream: some of its work was done but not committed
                if i % 200 == 0:
                    time.sleep(0.2)
        killed_after = time.monotonic() - start
        wait_for(lambda: sent_ids <= set(tally.finding_event_ids), 120, 0.5, "a finding for every event")
        wait_for(lambda: tally.events_processed >= len(sent_ids), 30, 0.5, "the metrics windows")
        time.sleep(7)  # two more windows: a double count would show up now
    assert a.proc.returncode == -signal.SIGKILL
    assert b.proc.poll() is None
    assert set(tally.finding_event_ids) == sent_ids  # none lost, none invented
    assert tally.findings_by_kind["descriptors.refusal"] == len(sent_ids)  # unique by finding_id
    print(
        f"\nSIGKILL after {killed_after:.1f}s; re-processed findings dropped by id: {tally.findings_duplicated}; "
        f"events counted in metrics: {tally.events_processed} for {len(sent_ids)} sent"
    )
    assert tally.findings_duplicated > 0  # the survivor re-processed the dead worker's uncommitted work...
    assert tally.events_processed == len(sent_ids)  # ...and metrics counted every event once (at commit time)


def test_a_graceful_stop_publishes_the_last_counts(settings, start_worker):
    ensure_topics(settings)
    w = start_worker(settings, STREAMWARDEN_DETECTORS='["descriptors"]', STREAMWARDEN_METRICS_WINDOW_S="3")
    events = refusals(400)
    with tally_outputs(settings, ("findings", "metrics")) as tally:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{settings.web_port}/healthz"), 90, message="the worker")
        with Tap(settings=settings) as tap:
            for e in events:
                tap.record(e)
        wait_for(lambda: len(tally.finding_event_ids) >= len(events), 60, 0.2, "every finding")
        assert w.stop(signal.SIGTERM) == 0  # scale-down: at most 3 s of counts were still uncommitted
        wait_for(lambda: tally.events_processed >= len(events), 15, 0.2, "the last counts")
        time.sleep(1)
    assert tally.events_processed == len(events)
