"""The faust agent, run in faust's own test_context (no broker: the producer side is a recorder)."""

import asyncio
import json

import pytest

from detectors.base import Detector
from streams.worker.app import Worker
from streams.settings import Settings

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
        assert worker.gate.pending >= 1 and worker.metrics_topic.sent[-1:] and all(
            json.loads(v)["events"] == 0 for _, v, _ in worker.metrics_topic.sent)
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
    (key, value, headers), = worker.deadletter_topic.sent
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
