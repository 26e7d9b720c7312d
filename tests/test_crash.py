"""Two workers in one consumer group; one is SIGKILLed mid-stream. No event is lost: the
survivor takes over the dead worker's partitions from their committed offsets, and what was
processed twice shows up as findings with the same deterministic finding_id (dropped by id)."""

from __future__ import annotations

import re
import signal
import time
import urllib.request

import pytest

from streams.events.topics import ensure_topics
from streams.local.broker import free_port
from streams.tap import Tap

from .conftest import http_ok, make_event, tally_outputs, wait_for

pytestmark = pytest.mark.integration


def refusals(n: int):
    """Every response a refusal: exactly one descriptors.refusal finding per event."""
    return [make_event(response=f"I'm sorry, but I can't help with that request ({i}).") for i in range(n)]


def batches_processed(port: int) -> float:
    """Batches a worker has run through its detectors (counted when processed, committed or not)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0.0
    m = re.search(r"^streamwarden_batch_duration_seconds_count (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_sigkill_of_one_worker_loses_no_event(settings, start_worker):
    ensure_topics(settings)
    env = dict(STREAMWARDEN_DETECTORS='["descriptors"]', STREAMWARDEN_METRICS_WINDOW_S="3")
    # The worker to be killed commits once a minute: whatever it processes after the group settles is
    # surely uncommitted when it dies, so the survivor must process it again (a timing-free setup: with
    # commits every 2.8 s, a commit could land between its last batch and the kill).
    a = start_worker(settings, **env, STREAMWARDEN_COMMIT_INTERVAL_S="60")
    b_port = free_port()
    b = start_worker(settings, **env, STREAMWARDEN_WEB_PORT=str(b_port))
    events = refusals(3000)
    sent_ids = {e.event_id for e in events}
    with tally_outputs(settings, ("findings", "metrics")) as tally:
        for port in (settings.web_port, b_port):
            wait_for(lambda port=port: http_ok(f"http://127.0.0.1:{port}/healthz"), 90, message=f"worker on {port}")
        with Tap(settings=settings) as tap:
            # Both workers have partitions (and some work done) before one of them dies.
            for e in events[:600]:
                tap.record(e)
            tap.flush()
            wait_for(lambda: len(tally.finding_event_ids) >= 600, 60, message="the first events processed")
            # Events until each worker has processed some (the group may still have been settling before).
            rest = iter(events[600:])
            before = {p: batches_processed(p) for p in (settings.web_port, b_port)}
            start = time.monotonic()
            for i, e in enumerate(rest):
                tap.record(e)
                if i % 50 == 49:
                    tap.flush()
                    if all(batches_processed(p) > before[p] for p in before):
                        break
                    time.sleep(0.05)
            tap.flush()
            wait_for(lambda: batches_processed(settings.web_port) > before[settings.web_port], 30, message="worker a at work")
            a.stop(signal.SIGKILL)  # some of its work was done but not committed
            for e in rest:
                tap.record(e)
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


def test_a_worker_whose_broker_is_gone_still_obeys_sigterm(tmp_path):
    """Without its broker, faust's clean stop can wait forever (a worker orphaned that way ran on for half an hour):
    past shutdown_timeout_s of the signal the worker exits with status 75 instead, so an orchestrator's SIGTERM is
    obeyed; what it had not committed goes to the partitions' next owner."""
    from streams.local.broker import EmbeddedBroker
    from streams.worker.shutdown import EXIT_STOP_TIMED_OUT

    from .conftest import WorkerProcess, isolated_settings

    broker = EmbeddedBroker().start()  # its own: this test stops it
    try:
        settings = isolated_settings(broker)
        ensure_topics(settings)
        w = WorkerProcess(
            settings, tmp_path / "worker.log", dict(STREAMWARDEN_DETECTORS='["descriptors"]', STREAMWARDEN_SHUTDOWN_TIMEOUT_S="3")
        )
        try:
            wait_for(lambda: http_ok(f"http://127.0.0.1:{settings.web_port}/healthz"), 90, message="the worker")
            broker.stop()
            w.proc.send_signal(signal.SIGTERM)
            status = w.proc.wait(120)  # TimeoutExpired (a failure) if it never stops
        finally:
            w.stop(signal.SIGKILL)
    finally:
        broker.stop()
    assert status == EXIT_STOP_TIMED_OUT, w.log()[-2000:]
    assert "did not stop within 3 s of the signal" in w.log()
