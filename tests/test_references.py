"""References that outlive a worker: pinned, persisted as numbers, restored, refused from another space, reset."""

import json
import time

import numpy as np
import pytest

from detectors.contracts import PinnedReference
from detectors.descriptor_drift import COLUMNS, DescriptorDriftDetector, array_to_rows, rows_to_array
from detectors.drift import DriftMerger, EmbeddingDriftDetector
from streams.worker import references as wire

from .conftest import make_event
from .test_drift import _brown

NEWS = [" ".join(p.split()[:30]) for p in _brown("news", 160, 11)]
HOBBIES = [" ".join(p.split()[:30]) for p in _brown("hobbies", 80, 12)]


def _drift(**kw) -> EmbeddingDriftDetector:
    options = dict(reference_size=60, window_size=60, test_every=30, permutations=300, alpha=0.01, sample_rate=1.0, fields=["prompt"])
    options.update(kw)
    return EmbeddingDriftDetector(**options)


def _feed(det, texts, **event):
    findings = []
    for i in range(0, len(texts), 20):
        findings += det.score_batch([make_event(prompt=t, **event) for t in texts[i : i + 20]])
    return findings


@pytest.mark.unit
def test_a_restored_reference_catches_a_drift_that_started_before_the_restart():
    first = _drift()
    assert _feed(first, NEWS[:60]) == []
    pinned = first.pinned_references()
    assert [(p.detector, p.key) for p in pinned] == [("drift", ("m1", "v1", "prompt"))]
    assert pinned[0].space.startswith("static:") and pinned[0].rows.shape[0] == 60
    assert first.pinned_references() == []  # each handed over once
    # Through the wire, as the worker keeps it.
    restored = wire.decode(wire.encode(pinned[0], "worker-a"))
    assert (restored.detector, restored.key, restored.space) == (pinned[0].detector, pinned[0].key, pinned[0].space)
    assert np.allclose(restored.rows, pinned[0].rows, atol=1e-3)

    # After a restart the traffic has already moved to another topic.
    after_restart = _drift()
    after_restart.restore_references([restored])
    found = _feed(after_restart, HOBBIES[:60])
    assert [f.kind for f in found] == ["prompt_drift"]
    assert after_restart.pinned_references() == []  # it did not pin the drifted traffic
    assert after_restart.reference_counts()["restored"] == 1

    # Without the reference, the restarted detector pins the drifted traffic and stays silent.
    forgetful = _drift()
    assert _feed(forgetful, HOBBIES[:60] + HOBBIES[:60]) == []
    assert forgetful.pinned_references()[0].rows.shape[0] == 60


@pytest.mark.unit
def test_a_reference_of_another_embedding_is_refused_and_one_pinned_here_wins():
    det = _drift()
    other = PinnedReference("drift", ("m1", "v1", "prompt"), "model:all-MiniLM-L6-v2:384", np.ones((60, 384), np.float32), time.time())
    det.restore_references([other, other._replace(key=("m1", "v1", "response")), other._replace(detector="descriptor_drift")])
    _feed(det, NEWS[:60])
    counts = det.reference_counts()
    assert counts["refused"] == 2 and counts["restored"] == 0  # the prompt's and the response's; another detector's is not its own
    assert len(det.pinned_references()) == 1  # pinned from traffic instead

    own = _drift()
    _feed(own, NEWS[:60])
    mine = own.pinned_references()[0]
    later = mine._replace(rows=np.zeros_like(mine.rows), pinned_at=mine.pinned_at + 1)
    own.restore_references([later])  # e.g. the worker reading back what it persisted, or another worker's
    _feed(own, NEWS[60:80])
    assert own.reference_counts()["restored"] == 0


@pytest.mark.unit
def test_a_reset_forgets_the_reference_and_the_next_events_pin_a_new_one():
    det = _drift()
    _feed(det, NEWS[:60])
    det.pinned_references()
    det.forget_reference(("m1", "v1", "prompt"))
    assert _feed(det, HOBBIES[:60]) == []  # the new traffic is the new reference: no alarm
    repinned = det.pinned_references()
    assert len(repinned) == 1 and det.reference_counts()["forgotten"] == 1
    assert _feed(det, HOBBIES[60:80] + HOBBIES[:40]) == []  # and the same topic does not drift from it


@pytest.mark.unit
def test_a_test_of_a_window_from_before_a_reset_is_discarded():
    det = _drift()
    _feed(det, NEWS[:60])
    snapshot_ref = det._ref[("m1", "v1", "prompt")]
    rows = [(v, make_event()) for v in det.embeddings.encode(HOBBIES[:40])]
    det.forget_reference(("m1", "v1", "prompt"))
    det.score_batch([])  # the next batch applies the reset
    assert det._run_test(("m1", "v1", "prompt"), snapshot_ref, rows, epoch=0) == []
    assert det.last == {}


@pytest.mark.unit
def test_descriptor_rows_travel_exactly_and_a_restored_reference_is_tested_against(tmp_path):
    rows = [
        {
            "prompt_chars": 10,
            "response_chars": 200,
            "sentiment": 0.25,
            "pii_entities": 0,
            "output_tokens": None,
            "latency_ms": 12.5,
            "refusal": 0,
        },
        {
            "prompt_chars": 12,
            "response_chars": 180,
            "sentiment": -0.5,
            "pii_entities": 2,
            "output_tokens": 40,
            "latency_ms": None,
            "refusal": 1,
        },
    ]
    assert array_to_rows(rows_to_array(rows)) == rows
    assert rows_to_array(rows).shape == (2, len(COLUMNS))

    def events(n, words, seed):
        rng = np.random.default_rng(seed)
        return [make_event(response=" ".join(["word"] * int(rng.integers(words, words + 5))), latency_ms=100.0) for _ in range(n)]

    first = DescriptorDriftDetector(reference_size=60, window_size=60, test_every=30, pii=False)
    first.score_batch(events(60, 20, 1))
    (pinned,) = first.pinned_references()
    assert pinned.key == ("m1", "v1") and pinned.space.startswith("descriptors:")
    restored = wire.decode(wire.encode(pinned, "worker-a"))
    assert np.array_equal(restored.rows, pinned.rows, equal_nan=True)

    again = DescriptorDriftDetector(reference_size=60, window_size=60, test_every=30, pii=False)
    again.restore_references([restored])
    again.score_batch([])
    assert again.has_reference("m1", "v1")
    with pytest.raises(LookupError):  # no current window yet: the report page answers 404, not 500
        again.report(("m1", "v1"), tmp_path / "report.html")
    found = again.score_batch(events(60, 80, 2))  # answers four times longer than the reference's
    assert [f.kind for f in found] == ["descriptor_drift"] and "response_chars" in found[0].details["drifted"]
    assert again.pinned_references() == []


@pytest.mark.unit
def test_the_merger_keeps_its_reference_across_a_restart():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(400, 16)).astype(np.float32)
    moved = base + 2.0
    merger = DriftMerger(window_size=100, window_intervals=1, permutations=300, alpha=0.01)
    merger.add("m1", "v1", "prompt", "w1", 1, 400, base[:200])
    assert merger.evaluate(1) == []
    (pinned,) = merger.pinned_references()
    assert pinned.detector == "drift.merged" and pinned.space == "merged:16"

    restarted = DriftMerger(window_size=100, window_intervals=1, permutations=300, alpha=0.01)
    restarted.restore_references([wire.decode(wire.encode(pinned, "worker-a"))])
    restarted.add("m1", "v1", "prompt", "w1", 2, 400, moved[200:])
    found = restarted.evaluate(2)
    assert [f.kind for f in found] == ["prompt_drift"] and restarted.pinned_references() == []


@pytest.mark.unit
def test_a_reference_too_large_for_a_message_travels_as_an_even_sample():
    big = PinnedReference("drift", ("m|1", "v1", "prompt"), "static:x:384", np.ones((3000, 384), np.float32), 1.0)
    value = wire.encode(big, "w", max_bytes=1_048_588)
    assert len(value) <= 1_048_588
    back = wire.decode(value)
    assert 1000 < back.rows.shape[0] < 3000 and back.key == ("m|1", "v1", "prompt")
    assert wire.parse_key(wire.reference_key("drift", ("m|1", "v1", "prompt"))) == ("drift", ("m|1", "v1", "prompt"))
    with pytest.raises((ValueError, KeyError, TypeError)):
        wire.decode(b"\x00\x00\x00\x02{}")


@pytest.mark.unit
def test_a_reference_read_back_replaces_a_pin_not_handed_over_yet_and_only_that():
    """A worker that started consuming before it could read the topic (the broker was slow) pinned from live traffic;
    the worker hands nothing over before its first reading is done, so the reference read back replaces the pin,
    which is withdrawn. A pin already handed over (persisted) is not replaced."""
    news = _drift()
    _feed(news, NEWS[:60])
    (before_restart,) = news.pinned_references()

    det = _drift(background=True)
    _feed(det, HOBBIES[:60])  # pinned from traffic that has already drifted, not handed over yet
    det.restore_references([before_restart])
    found = _feed(det, HOBBIES[60:80] + HOBBIES[:20]) + det.drain(60)
    assert [f.kind for f in found] == ["prompt_drift"]  # tested against the reference read back
    assert det.pinned_references() == []  # its own pin is withdrawn: never written over the one on the topic
    assert det.reference_counts()["restored"] == 1
    det.close()

    handed = _drift()
    _feed(handed, HOBBIES[:60])
    (own,) = handed.pinned_references()  # persisted: the topic's order puts it after any reference read back now
    handed.restore_references([before_restart])
    assert _feed(handed, HOBBIES[60:80] + HOBBIES[:20]) == []
    assert handed.reference_counts()["restored"] == 0 and handed.reference_is_current(own)


@pytest.mark.unit
def test_a_reset_withdraws_what_waits_to_be_handed_over_and_what_a_retry_holds():
    det = _drift()
    _feed(det, NEWS[:60])
    det.forget_reference(("m1", "v1", "prompt"))
    assert det.pinned_references() == []  # withdrawn at once, before the next batch
    _feed(det, NEWS[60:120])  # the reset applies; the next events pin a new reference
    (new,) = det.pinned_references()
    assert det.reference_is_current(new)
    det.forget_reference(("m1", "v1", "prompt"))  # the worker holds it for a retry: it must not write it back
    assert not det.reference_is_current(new)


@pytest.mark.unit
def test_a_reference_read_back_withdraws_the_pin_at_once_and_a_refused_one_gives_it_back():
    news = _drift()
    _feed(news, NEWS[:60])
    (before_restart,) = news.pinned_references()
    det = _drift()
    _feed(det, HOBBIES[:60])
    det.restore_references([before_restart])
    assert det.pinned_references() == []  # withdrawn before any batch: the worker's timer can never take it

    other = _drift()
    _feed(other, HOBBIES[:60])
    other.restore_references([before_restart._replace(space="model:elsewhere:384")])
    assert other.pinned_references() == []
    _feed(other, HOBBIES[60:61])  # the next batch refuses it: the detector keeps its own pin, handed over now
    (own,) = other.pinned_references()
    assert own.key == ("m1", "v1", "prompt") and other.reference_is_current(own) and other.reference_counts()["refused"] == 1


@pytest.mark.unit
def test_a_reset_refuses_what_was_pinned_before_it_and_keeps_what_was_pinned_after():
    det = _drift()
    _feed(det, NEWS[:60])
    (old,) = det.pinned_references()
    det.forget_reference(old.key, at=old.pinned_at - 100)  # an old tombstone read again: the pin came after it
    assert det.reference_is_current(old)
    _feed(det, NEWS[60:90])
    assert det.reference_counts()["forgotten"] == 0 and det.pinned_references() == []  # no re-pin

    det.forget_reference(old.key, at=old.pinned_at + 1)  # the reset came after the pin
    det.restore_references([old])  # the echo of a write that was in flight when the reset came
    _feed(det, HOBBIES[:60])
    assert det.reference_counts()["refused"] == 1 and det.reference_counts()["restored"] == 0
    (new,) = det.pinned_references()  # pinned from the traffic after the reset
    assert new.pinned_at > old.pinned_at
    later = new._replace(pinned_at=new.pinned_at + 1)
    fresh = _drift()
    fresh.forget_reference(old.key, at=old.pinned_at + 1)  # a restart reading [old, tombstone, new]
    fresh.restore_references([later])
    assert _feed(fresh, HOBBIES[60:80] + HOBBIES[:10]) == [] and fresh.reference_counts()["restored"] == 1


@pytest.mark.unit
def test_the_keeper_under_interleavings_of_reads_resets_and_pins():
    from detectors.references import ReferenceKeeper

    def ref(at, key=("m", "v", "prompt")):
        return PinnedReference("drift", key, "s", np.zeros((2, 2), np.float32), at)

    k = ("m", "v", "prompt")
    # A refused reference gives back the pin it withdrew, with its own time: a later reset still removes it.
    keeper = ReferenceKeeper("drift")
    keeper._pinned.append(ref(10))
    keeper._held[k] = 10
    keeper.offer([ref(5)])
    assert keeper.take_pinned() == []
    assert keeper.should_adopt(k, has_own=True)
    keeper.give_back(k)  # the detector refused it (another space)
    keeper.forget(k, at=20)
    assert keeper.take_pinned() == [] and keeper.take_changes()[0] == [k]  # the pin (10) predates the reset (20)

    # A pin made after the reset, withdrawn by a reference from before it, comes back when the reset arrives.
    keeper = ReferenceKeeper("drift")
    keeper._pinned.append(ref(30))
    keeper._held[k] = 30
    keeper.offer([ref(5)])
    keeper.forget(k, at=20)
    (back,) = keeper.take_pinned()
    assert back.pinned_at == 30 and keeper.is_current(back)
    assert keeper.take_changes() == ([], {})  # nothing to reset, nothing to adopt: the detector keeps its pin
    assert not keeper.should_adopt(k, has_own=True)

    # A write that was in flight when the reset came, read back after the tombstone: refused; the same reset
    # read again changes nothing.
    keeper = ReferenceKeeper("drift")
    keeper.forget(k, at=20)
    keeper.take_changes()
    keeper.offer([ref(15)])
    assert keeper.take_changes() == ([], {}) and keeper.counts()["refused"] == 1
    keeper.forget(k, at=20)
    assert keeper.take_changes() == ([], {}) and keeper.counts()["forgotten"] == 1


@pytest.mark.unit
def test_a_reset_of_the_merger_drops_its_window_and_a_reference_of_another_width_does_not_replace_its_own():
    rng = np.random.default_rng(1)
    merger = DriftMerger(window_size=100, window_intervals=2, permutations=300, alpha=0.01)
    merger.add("m1", "v1", "prompt", "w1", 1, 200, rng.normal(size=(100, 16)).astype(np.float32))
    merger.evaluate(1)
    (own,) = merger.pinned_references()
    merger.add("m1", "v1", "prompt", "w1", 2, 200, rng.normal(size=(100, 16)).astype(np.float32) + 3.0)
    merger.forget_reference(("m1", "v1", "prompt"))
    merger.evaluate(2)  # the reset applies: the pre-reset window goes with the reference
    assert merger.pinned_references() == [] and not any(merger._samples.values())
    merger.add("m1", "v1", "prompt", "w2", 2, 200, rng.normal(size=(100, 16)).astype(np.float32))  # late, from before
    merger.add("m1", "v1", "prompt", "w1", 3, 200, rng.normal(size=(100, 16)).astype(np.float32) + 3.0)
    merger.evaluate(3)
    (new,) = merger.pinned_references()
    assert new.rows.mean() > 2.0  # pinned from the traffic after the reset only

    merger.restore_references([own._replace(rows=np.zeros((100, 8), np.float32), space="merged:8")])
    merger.evaluate(4)
    assert merger.reference_counts()["refused"] == 1 and merger._ref[("m1", "v1", "prompt")].shape[1] == 16

    started = DriftMerger(window_size=100, window_intervals=2, permutations=300, alpha=0.01, interval_s=30.0)
    now = int(time.time() // 30)
    started.forget_reference(("m1", "v1", "prompt"), at=time.time() - 86_400)  # yesterday's reset, read again
    started.add("m1", "v1", "prompt", "w1", now, 200, rng.normal(size=(100, 16)).astype(np.float32))
    started.evaluate(now)
    assert len(started.pinned_references()) == 1  # today's traffic was kept and pinned


@pytest.mark.unit
def test_the_watcher_skips_what_is_not_a_reference_and_a_second_reading_does_not_replay_resets():
    seen, resets = [], []
    watcher = wire.ReferenceWatcher.__new__(wire.ReferenceWatcher)
    wire.ReferenceWatcher.__init__(watcher, None, seen.append, lambda d, k, at: resets.append((d, k, at)))  # type: ignore[arg-type]
    ref = PinnedReference("drift", ("m1", "v1", "prompt"), "static:x:8", np.ones((5, 8), np.float32), 1.0)
    key = wire.reference_key(ref.detector, ref.key)
    records = [
        (key, wire.encode(ref, "w"), 0),
        (key, b"\x00\x00\x00\x015", 1),  # a header that is JSON but no object
        (wire.reference_key("drift", ("m2", "v1", "prompt")), wire.encode(ref, "w"), 2),  # filed under another key
        (key, None, 3),
        (key, wire.encode(ref._replace(pinned_at=2.0), "w"), 4),
    ]
    for k, v, o in records:
        watcher._record(k, v, o, 1_500 + o)
    assert watcher.skipped == 2 and [r.pinned_at for r in seen] == [1.0, 2.0] and resets == [("drift", ("m1", "v1", "prompt"), 1.503)]
    watcher.references = {}
    for k, v, o in records:  # the topic read again from its start, after the broker went away
        watcher._record(k, v, o, 1_500 + o)
    assert len(resets) == 1 and len(seen) == 2  # nothing handed over twice
    assert set(watcher.references) == {("drift", ("m1", "v1", "prompt"))}


@pytest.mark.unit
def test_the_worker_keeps_what_the_broker_refused_and_persists_it_in_order_later():
    import asyncio

    from streams.settings import Settings
    from streams.worker.app import Worker

    w = Worker(Settings(profile="embedded", bootstrap="127.0.0.1:1", detectors=["drift", "descriptor_drift"], app_id="refs-test"))
    sent, fail = [], [True]

    async def send(key, value, partition):
        assert partition == 0
        if fail[0]:
            fail[0] = False
            raise ConnectionError("the broker is away")
        sent.append(wire.parse_key(key))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    w.references_topic.send = send  # type: ignore[method-assign]
    assert w.references is not None
    w.references.ready.set()  # the topic read back (the watcher is not started here)
    drift, descriptor = (d for d in w.detectors if d.name in ("drift", "descriptor_drift"))
    drift._references.pinned(("m1", "v1", "prompt"), "static:x:2", np.ones((3, 2), np.float32))
    descriptor._references.pinned(("m1", "v1"), "descriptors:x", np.ones((3, 7)))
    loop = asyncio.new_event_loop()
    w.references.ready.clear()
    loop.run_until_complete(w.publish_references())  # the topic not read back yet: nothing is written, nothing lost
    assert sent == [] and fail == [True]
    w.references.ready.set()
    loop.run_until_complete(w.publish_references())
    assert sent == []
    drift._references.pinned(("m1", "v2", "prompt"), "static:x:2", np.ones((3, 2), np.float32))
    drift._references.pinned(("m1", "v3", "prompt"), "static:x:2", np.ones((3, 2), np.float32))
    drift.forget_reference(("m1", "v3", "prompt"))  # reset before it was written: never written
    loop.run_until_complete(w.publish_references())
    assert sent == [("drift", ("m1", "v1", "prompt")), ("descriptor_drift", ("m1", "v1")), ("drift", ("m1", "v2", "prompt"))]
    counts = {
        (s.labels["detector"], s.labels["outcome"]): s.value
        for m in w.metrics.references.collect()
        for s in m.samples
        if s.name.endswith("_total")
    }
    assert counts[("drift", "persist_failed")] == 1 and counts[("drift", "persisted")] == 2 and counts[("drift", "pinned")] == 3
    assert counts[("descriptor_drift", "persist_failed")] == 0  # created at 0 from the start (the health alert)
    loop.close()


@pytest.mark.integration
def test_the_watcher_reads_references_back_follows_them_and_hears_a_reset(settings):
    from streams import kafka_clients
    from streams.events.topics import ensure_topics, topic_name

    ensure_topics(settings)
    topic = topic_name(settings, "references")
    ref = PinnedReference("drift", ("m1", "v1", "prompt"), "static:x:8", np.ones((5, 8), np.float32), 1.0)
    prod = kafka_clients.producer(settings, "test-references", linger_ms=0)
    prod.send(topic, key=wire.reference_key(ref.detector, ref.key), value=wire.encode(ref, "w"), partition=0).get(10)
    prod.send(topic, key=b"not json", value=b"junk", partition=0).get(10)

    seen, resets = [], []
    watcher = wire.ReferenceWatcher(settings, seen.append, lambda d, k, at: resets.append((d, k)), poll_ms=100).start()
    try:
        assert watcher.ready.wait(30)
        assert [(r.detector, r.key) for r in seen] == [("drift", ("m1", "v1", "prompt"))] and watcher.skipped == 1
        later = ref._replace(key=("m1", "v2", "prompt"))
        prod.send(topic, key=wire.reference_key(later.detector, later.key), value=wire.encode(later, "w"), partition=0).get(10)
        assert wire.publish_resets(settings, [("drift", ("m1", "v1", "prompt"))]) == 1
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not resets:
            time.sleep(0.1)
        assert resets == [("drift", ("m1", "v1", "prompt"))] and seen[-1].key == ("m1", "v2", "prompt")
    finally:
        watcher.stop()
        prod.close(timeout=5)
    assert set(wire.ReferenceWatcher(settings).read_all()) == {("drift", ("m1", "v2", "prompt"))}


@pytest.mark.integration
def test_a_restarted_worker_tests_against_the_reference_its_predecessor_pinned(settings, start_worker):
    """Worker A pins the news reference and stops; worker B starts while the traffic is already hobbies, reads the
    reference back, and raises the drift (a worker without it would pin the hobbies and stay silent)."""
    from typer.testing import CliRunner

    from streams.cli import app as cli
    from streams.events.topics import ensure_topics
    from streams.local.outputs import OutputReader
    from streams.tap import Tap

    from .conftest import http_ok, wait_for, worker_env

    ensure_topics(settings)
    env = dict(
        STREAMWARDEN_DETECTORS='["drift"]',
        STREAMWARDEN_DETECTOR_OPTIONS=json.dumps(
            {"drift": {"sample_rate": 1.0, "fields": ["prompt"], "reference_size": 60, "window_size": 60, "test_every": 30, "alpha": 0.01}}
        ),
    )
    a = start_worker(settings, **env)
    wait_for(lambda: http_ok(f"http://127.0.0.1:{settings.web_port}/healthz"), 90, message="worker A")
    with Tap(settings=settings) as tap:
        for t in NEWS[:80]:
            tap.record(make_event(prompt=t))
    wait_for(lambda: wire.ReferenceWatcher(settings).read_all(timeout_s=10), 60, interval=1.0, message="the reference on its topic")
    a.stop()

    runner = CliRunner()
    listed = runner.invoke(cli, ["references", "list", "--json"], env=worker_env(settings))
    assert listed.exit_code == 0, listed.output
    assert [(r["detector"], r["model"], r["field"], r["rows"]) for r in json.loads(listed.output)] == [("drift", "m1", "prompt", 60)]

    found = []
    reader = OutputReader(settings, ("findings",), lambda rec: found.append(rec.json())).start()
    try:
        start_worker(settings, **env)
        wait_for(lambda: http_ok(f"http://127.0.0.1:{settings.web_port}/healthz"), 90, message="worker B")
        with Tap(settings=settings) as tap:
            for t in HOBBIES[:80]:
                tap.record(make_event(prompt=t))
        wait_for(lambda: [f for f in found if f["kind"] == "prompt_drift"], 60, message="a drift finding from worker B")
    finally:
        reader.stop()

    reset = runner.invoke(cli, ["references", "reset", "m1", "v1"], env=worker_env(settings))
    assert reset.exit_code == 0 and "reset drift m1 v1 prompt" in reset.output
    missing = runner.invoke(cli, ["references", "reset", "m9", "v1"], env=worker_env(settings))
    assert missing.exit_code == 2

    # Worker B hears the reset and drops the reference at its next batch.
    def forgotten() -> bool:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{settings.web_port}/metrics", timeout=2) as r:
            text = r.read().decode()
        return 'streamwarden_references_total{detector="drift",outcome="forgotten"} 1.0' in text

    with Tap(settings=settings) as tap:  # traffic goes on: the reset applies at the first batch after B hears it

        def one_more_and_forgotten() -> bool:
            tap.record(make_event(prompt=HOBBIES[0]))
            return forgotten()

        wait_for(one_more_and_forgotten, 30, interval=0.5, message="worker B forgetting the reset reference")


def test_a_watcher_never_started_stops_at_once():
    """The kill-switch and reference watchers share their thread's life (streams.events.topics.TopicWatcher):
    stopping one that never started (a worker or gateway failing during its start-up) must not raise."""
    from streams.actions.killswitch import ControlWatcher
    from streams.settings import Settings
    from streams.worker.references import ReferenceWatcher

    for watcher in (ControlWatcher(Settings()), ReferenceWatcher(Settings())):
        watcher.stop()
        assert not watcher.ready.is_set() and watcher.error is None
