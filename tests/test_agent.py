"""The faust agent, run in faust's own test_context (no broker: the producer side is a recorder)."""

import asyncio
import json

import pytest
from faust.types import TP

from detectors.base import Detector
from streams.settings import Settings
from streams.worker.app import Worker
from streams.worker.pipeline import RawRecord

from .conftest import make_event


class RecordingTopic:
    """Stands in for a faust topic's send() in this unit test; the integration tests use the broker."""

    def __init__(self):
        self.sent = []

    async def send(self, key=None, value=None, headers=None):
        self.sent.append((key, value, headers))


class Exploding(Detector):
    name = "exploding"

    def score_batch(self, events):
        raise ValueError("broken")


@pytest.fixture
def worker():
    settings = Settings(profile="embedded", bootstrap="127.0.0.1:1", batch_size=4, batch_within_s=0.05, app_id="agent-test")
    w = Worker(settings)
    w.app.finalize()
    w.app.conf.store = "memory://"
    w.findings_topic = RecordingTopic()
    w.deadletter_topic = RecordingTopic()
    w.metrics_topic = RecordingTopic()
    return w


def run(coro):
    return asyncio.new_event_loop().run_until_complete(coro)


def test_agent_batches_records_and_publishes_findings_and_dead_letters(worker):
    worker.pipeline.detectors.insert(0, Exploding())
    refusals = [make_event(response="I'm sorry, but I can't help with that.") for _ in range(5)]
    clean = [make_event() for _ in range(3)]

    async def scenario():
        agent = worker.app.agents["streamwarden.detect"]
        async with agent.test_context() as test_agent:
            for e in refusals + clean:
                await test_agent.put(e.model_dump_json().encode(), key=e.event_id.encode())
            await test_agent.put(b"{broken", key=b"bad")
            for _ in range(100):
                if len(worker.deadletter_topic.sent) == 1 and len(worker.findings_topic.sent) == 5:
                    break
                await asyncio.sleep(0.05)
        await worker.flush_metrics()
        # Nothing is counted before Kafka has the batches' offsets committed...
        assert (
            worker.gate.pending >= 1
            and worker.metrics_topic.sent[-1:]
            and all(json.loads(v)["events"] == 0 for _, v, _ in worker.metrics_topic.sent)
        )
        assert worker.metrics.detector_errors.labels("exploding")._value.get() == 0
        # ...then, committed, every batch counts once.
        offsets = worker.gate.pending_offsets()
        worker.gate.on_commit({k: o + 1 for k, o in offsets.items()})
        worker.gate.on_commit({k: o + 1 for k, o in offsets.items()})
        assert worker.gate.pending == 0
        await worker.flush_metrics()

    run(scenario())
    finding_keys = sorted(k.decode() for k, _, _ in worker.findings_topic.sent)
    assert finding_keys == sorted(e.event_id for e in refusals)
    ((key, value, headers),) = worker.deadletter_topic.sent
    assert (key, value) == (b"bad", b"{broken")
    assert dict(headers)["streamwarden.dlq.reason_code"] == b"invalid_json"
    # The exploding detector was isolated and counted, on every batch it saw.
    assert worker.metrics.detector_errors.labels("exploding")._value.get() >= 1
    records = [v for _, v, _ in worker.metrics_topic.sent]

    by_scope = [json.loads(r) for r in records]
    assert sum(r["events"] for r in by_scope if r["scope"] == "model") == 8
    pipelines = [r for r in by_scope if r["scope"] == "pipeline"]
    assert sum(r["dead_letters"].get("invalid_json", 0) for r in pipelines) == 1
    assert sum(r["detector_errors"].get("exploding", 0) for r in pipelines) >= 1


def test_torch_threads_caps_the_workers_cpu_threads():
    import torch

    before = torch.get_num_threads()
    try:
        Worker(Settings(profile="embedded", bootstrap="127.0.0.1:1", detectors=["descriptors"], torch_threads=1, app_id="threads-test"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


class FailingTopic(RecordingTopic):
    """A topic whose first ``failures`` sends raise, as a producer whose broker timed out would."""

    def __init__(self, failures: int):
        super().__init__()
        self.failures = failures

    async def send(self, key=None, value=None, headers=None):
        if self.failures:
            self.failures -= 1
            raise TimeoutError("the broker did not answer")
        await super().send(key, value, headers)


def _records(events, extra=()):
    return [RawRecord(e.model_dump_json().encode(), e.event_id.encode(), "in", 0, i) for i, e in enumerate(events)] + [
        RawRecord(v, k, "in", 0, 100 + i) for i, (k, v) in enumerate(extra)
    ]


def test_no_stage_loses_a_batch_every_record_is_a_processed_event_or_a_dead_letter(worker, monkeypatch):
    """Decoding, a detector and publishing each fail once: every record is still accounted for."""
    from streams.events.schema import InferenceEvent

    worker.pipeline.detectors.insert(0, Exploding())  # detector stage
    refusals = [make_event(response="I'm sorry, but I can't help with that.") for _ in range(4)]
    cursed = make_event()
    original = InferenceEvent.model_validate.__func__

    def validate(cls, data, *a, **kw):  # decode stage: an unforeseen failure on one record
        if isinstance(data, dict) and data.get("event_id") == cursed.event_id:
            raise RuntimeError("unforeseen")
        return original(cls, data, *a, **kw)

    monkeypatch.setattr(InferenceEvent, "model_validate", classmethod(validate))
    bad = [(b"bad", b"{broken"), (b"nan", b'{"metadata": {"x": NaN}}')]
    records = _records([*refusals, cursed], bad)

    result = run(worker.handle(records))
    reasons = sorted(dict(h)["streamwarden.dlq.reason_code"].decode() for _, _, h in worker.deadletter_topic.sent)
    assert reasons == ["invalid_json", "invalid_json", "undecodable"]
    assert len(result.events) + len(result.dead_letters) == len(records)
    assert sorted(k.decode() for k, _, _ in worker.findings_topic.sent) == sorted(e.event_id for e in refusals)

    # Publishing stage: the findings topic fails; the batch's records are dead-lettered, not dropped.
    worker.findings_topic = FailingTopic(failures=1)
    worker.deadletter_topic = RecordingTopic()
    again = [make_event(response="I'm sorry, but I can't help with that.") for _ in range(3)]
    records = _records(again, bad)
    result = run(worker.handle(records))
    assert len(result.dead_letters) == len(records)
    assert {dict(h)["streamwarden.dlq.reason_code"] for _, _, h in worker.deadletter_topic.sent} == {b"processing_failed"}
    assert sorted(k for k, _, _ in worker.deadletter_topic.sent) == sorted(r.key for r in records)
    assert all(b"TimeoutError" in dict(h)["streamwarden.dlq.reason"] for _, _, h in worker.deadletter_topic.sent)
    # Counted once committed: faust's consumer tells the app's monitor, the worker's CommitMonitor.
    worker.app.monitor.on_tp_commit({TP("in", 0): 1_000})
    assert worker.app.monitor.tp_committed_offsets[TP("in", 0)] == 1_000  # faust's own bookkeeping kept
    assert worker.metrics.dead_letters.labels("processing_failed")._value.get() == len(records)

    # Even dead-lettering fails for a while (the broker is away): the batch waits, then is kept whole.
    worker.findings_topic = FailingTopic(failures=1)
    worker.deadletter_topic = FailingTopic(failures=2)
    records = _records([make_event(response="I'm sorry, but I can't help with that.")], bad)
    result = run(worker.handle(records))
    assert sorted(k for k, _, _ in worker.deadletter_topic.sent) == sorted(r.key for r in records)


def test_the_drift_merger_tests_as_the_drift_detector_is_configured():
    drift = {"mode": "publish", "alpha": 0.05, "permutations": 123, "device": "cpu"}
    w = Worker(
        Settings(profile="embedded", bootstrap="127.0.0.1:1", detectors=["drift"], app_id="merger-test", detector_options={"drift": drift})
    )
    assert w.drift_merger is not None
    assert (w.drift_merger.alpha, w.drift_merger.permutations, w.drift_merger.device) == (0.05, 123, "cpu")


def test_the_worker_keeps_its_state_in_the_state_directory_not_the_current_one(tmp_path, monkeypatch):
    cwd, state = tmp_path / "cwd", tmp_path / "state"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    w = Worker(Settings(profile="embedded", bootstrap="127.0.0.1:1", detectors=["descriptors"], app_id="state-test", state_dir=state))
    w.app._create_directories()  # what faust does as the worker starts
    appdir = w.app.conf.appdir
    assert appdir.is_dir() and state in appdir.parents
    assert list(cwd.iterdir()) == []


def _descriptor_drift_worker(tmp_path, app_id):
    """A worker with descriptor_drift alone, its windows small (a test every 10 events), findings recorded."""
    small = {"reference_size": 20, "window_size": 20, "test_every": 10, "pii": False}
    settings = Settings(
        profile="embedded",
        bootstrap="127.0.0.1:1",
        detectors=["descriptor_drift"],
        detector_options={"descriptor_drift": small},
        app_id=app_id,
        state_dir=tmp_path / "state",
        reports_dir=tmp_path / "reports",
    )
    w = Worker(settings)
    w.findings_topic = RecordingTopic()
    return w


def test_descriptor_drift_runs_on_its_own_thread_in_the_worker_and_stops_with_it(tmp_path):
    import time

    w = _descriptor_drift_worker(tmp_path, "background-test")
    (det,) = w.detectors
    assert det.background  # the worker's default
    refusing = [make_event(response="I'm sorry, but I can't help with that.") for _ in range(20)]
    result = run(w.handle(_records([make_event() for _ in range(40)] + refusing)))
    assert result.findings == []  # the tests were handed to the detector's thread
    deadline = time.monotonic() + 60
    while (c := det.run_counts())["ran"] + c["coalesced"] < c["submitted"] and time.monotonic() < deadline:
        time.sleep(0.01)
    recording = w.findings_topic

    class Away:
        async def send(self, key=None, value=None, headers=None):
            raise ConnectionError("broker away")

    w.findings_topic = Away()
    run(w.publish_background_findings())  # the publish fails: the findings are kept, not lost
    w.findings_topic = recording
    assert w.findings_topic.sent == []
    run(w.publish_background_findings())  # traffic paused: the next tick publishes what the thread completed
    (key, value, _), *more = w.findings_topic.sent
    assert more == [] and json.loads(value)["detector"] == "descriptor_drift" and key.decode() in {e.event_id for e in refusing}
    assert w.metrics.findings.labels("m1", "v1", "descriptor_drift", "descriptor_drift", "medium")._value.get() == 1
    run(w.stop_background())
    assert not det._runner._thread.is_alive()
    run(w.handle(_records([make_event() for _ in range(10)])))  # a batch after shutdown: its due test is dropped
    assert det.run_counts()["dropped"] == 1 and len(w.findings_topic.sent) == 1


def test_a_failed_run_of_a_detectors_own_thread_counts_as_that_detectors_error(tmp_path):
    import time

    w = _descriptor_drift_worker(tmp_path, "background-failure-test")
    (det,) = w.detectors
    # The counter exists at 0 from the start, so that Prometheus sees the first error as an increase.
    assert [(s.labels, s.value) for m in w.metrics.detector_errors.collect() for s in m.samples if s.name.endswith("_total")] == [
        ({"detector": "descriptor_drift"}, 0.0)
    ]

    def broken(key, ref_rows, rows, epoch=0):
        raise RuntimeError("the window test broke")

    det._test = broken
    run(w.handle(_records([make_event() for _ in range(40)])))
    deadline = time.monotonic() + 60
    while det.run_counts()["failed"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    failed = det.run_counts()["failed"]
    assert failed >= 1
    errors = w.metrics.detector_errors.labels("descriptor_drift")
    assert errors._value.get() == 0  # not counted before the worker's tick
    run(w.publish_background_findings())
    assert errors._value.get() == failed
    run(w.publish_background_findings())  # counted once, not again on the next tick
    assert errors._value.get() == failed
    (pipeline,) = [r for r in w.windows.flush() if r.scope == "pipeline"]
    assert pipeline.detector_errors == {"descriptor_drift": failed}  # the metrics topic carries them too
    run(w.stop_background())


def test_the_pipelines_forward_pass_thread_stops_with_the_worker():
    # toxicity asks for vectors and pii does not: the batch's forward pass runs on the pipeline's own thread
    w = Worker(Settings(profile="embedded", bootstrap="127.0.0.1:1", detectors=["pii", "toxicity"], app_id="forward-test"))
    w.findings_topic = RecordingTopic()
    run(w.handle(_records([make_event(response=f"Answer number {i}, with a new text each.") for i in range(8)])))
    thread = w.pipeline._forward_thread
    assert thread is not None
    run(w.stop_background())
    assert w.pipeline._forward_thread is None and thread._shutdown


def test_a_worker_forgets_the_lag_of_partitions_it_no_longer_holds():
    w = Worker(Settings(profile="embedded", bootstrap="127.0.0.1:1", detectors=["descriptors"], app_id="lag-test"))
    w.metrics.lag.labels("inference", "0").set(500)
    w.metrics.lag.labels("inference", "1").set(7)

    def reported():
        return {s.labels["partition"]: s.value for m in w.metrics.lag.collect() for s in m.samples}

    assert reported() == {"0": 500, "1": 7}
    w.forget_lag({TP("inference", 0), TP("inference", 9)})  # revoked: one it reported, one it never did
    assert reported() == {"1": 7}  # the next owner of partition 0 reports it; a stale 500 here would add to the backlog


def test_the_lag_keeps_growing_on_the_dashboards_while_a_batch_hangs():
    """Set after each batch only, a caught-up worker's lag would read 0 while its next batch hangs and the backlog
    grows in Kafka: a timer recomputes it from the broker's latest high watermark."""
    w = Worker(Settings(profile="embedded", bootstrap="127.0.0.1:1", detectors=["descriptors"], app_id="lag-timer-test"))

    class Consumer:
        highwaters = {TP("in", 0): 10}

        def highwater(self, tp):
            return self.highwaters.get(tp)

    w.app.consumer = Consumer()
    w._observe_lag(_records([make_event() for _ in range(10)]))  # offsets 0-9 of partition 0: caught up

    def lag():
        return {s.labels["partition"]: s.value for m in w.metrics.lag.collect() for s in m.samples}

    assert lag() == {"0": 0}
    Consumer.highwaters[TP("in", 0)] = 5_010  # 5,000 more arrive; the next batch never returns
    w.refresh_lag()
    assert lag() == {"0": 5_000}
    w.forget_lag({TP("in", 0)})  # given up: neither reported nor refreshed any more
    w.refresh_lag()
    assert lag() == {}


def test_a_sampler_that_raises_costs_a_batch_its_resampling_not_its_commit_or_counts(caplog):
    w = Worker(Settings(profile="embedded", bootstrap="127.0.0.1:1", detectors=["consistency"], app_id="sampler-raises-test"))
    w.findings_topic = RecordingTopic()

    class Broken:
        def offer(self, event):
            raise RuntimeError("the sampler broke")

    w.sampler = Broken()
    events = [make_event() for _ in range(3)]
    result = run(w.handle(_records(events)))
    assert result.unjudged["consistency"] == {e.event_id for e in events}  # no samples, and none coming
    assert len(w.gate._pending) == 1 and w.gate._pending[0][1] is result  # still waits for its commit, to be counted
    assert "the sampler failed on a batch: RuntimeError" in caplog.text
