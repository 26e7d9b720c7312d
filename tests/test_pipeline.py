import contextlib
import json
import logging

import pytest

from detectors.base import Detector, Finding, Severity
from detectors.contracts import LeavesUnjudged, NeedsEmbeddings
from detectors.descriptors import ResponseDescriptorDetector
from streams.worker import pipeline as pl
from streams.worker.pipeline import HEADER_PREFIX, DeadLetter, Pipeline, RawRecord, decode

from .conftest import make_event


def rec(value: bytes | None, offset=0) -> RawRecord:
    return RawRecord(value=value, key=b"k", topic="in", partition=1, offset=offset)


@pytest.mark.parametrize(
    "value, code",
    [
        (None, pl.EMPTY),
        (b"", pl.EMPTY),
        (b"\xff\xfe", pl.INVALID_UTF8),
        (b"{oops", pl.INVALID_JSON),
        (b"[" * 100_000 + b"]" * 100_000, pl.INVALID_JSON),
        (b'"just a string"', pl.NOT_AN_OBJECT),
        (b'{"schema_version": 7}', pl.UNSUPPORTED_VERSION),
        (b'{"event_id": "x"}', pl.SCHEMA_VIOLATION),
        (b'{"x": "' + b"a" * 2000 + b'"}', pl.OVERSIZED),
    ],
)
def test_decode_gives_each_bad_record_its_reason(value, code):
    out = decode(rec(value), max_event_bytes=1024 if code == pl.OVERSIZED else 1_000_000)
    assert isinstance(out, DeadLetter)
    assert out.reason_code == code
    assert out.reason  # a readable reason, always
    assert out.record.value == value  # the original bytes, untouched


def test_schema_violation_reason_never_echoes_the_input_values():
    secret = "4111 1111 1111 1111"
    bad = json.dumps(
        {"event_id": "e", "timestamp": "2026-01-01T00:00:00Z", "model": "m", "model_version": "v", "prompt": secret, "response": 5}
    )
    out = decode(rec(bad.encode()), max_event_bytes=10_000)
    assert out.reason_code == pl.SCHEMA_VIOLATION
    assert "response" in out.reason
    assert secret not in out.reason and all(secret not in e for e in out.errors)
    headers = dict(out.headers("w1"))
    assert headers[HEADER_PREFIX + "reason_code"] == b"schema_violation"
    assert headers[HEADER_PREFIX + "source_offset"] == b"0"
    assert secret.encode() not in b"".join(headers.values())


def test_valid_record_decodes_to_an_event():
    e = make_event()
    out = decode(rec(e.model_dump_json().encode()), max_event_bytes=100_000)
    assert out == e


class Boom(Detector):
    name = "boom"

    def score_batch(self, events):
        raise RuntimeError("detector bug mentioning user text: " + events[0].response)


class Counting(Detector):
    name = "counting"

    def __init__(self):
        self.seen = 0

    def score_batch(self, events):
        self.seen += len(events)
        return [Finding.for_event(e, detector=self.name, kind="seen", severity=Severity.INFO, score=0.0, summary="seen") for e in events]


def test_a_failing_detector_is_isolated_and_counted(caplog):
    counting = Counting()
    p = Pipeline([Boom(), counting, ResponseDescriptorDetector()], max_event_bytes=100_000)
    events = [make_event(response="I'm sorry, but I can't help with that."), make_event(response="Paris.")]
    records = [rec(e.model_dump_json().encode(), i) for i, e in enumerate(events)] + [rec(b"nope", 9)]
    with caplog.at_level(logging.ERROR):
        result = p.process(records)
    assert result.detector_errors == {"boom": 1}
    assert counting.seen == 2  # the detector after the failing one still ran
    assert {f.kind for f in result.findings} == {"seen", "refusal"}
    assert [d.reason_code for d in result.dead_letters] == [pl.INVALID_JSON]
    assert "boom" in caplog.text and "RuntimeError" in caplog.text
    assert "I'm sorry" not in caplog.text  # the exception's message (event text) is not logged


class Rationed(Detector, LeavesUnjudged):
    """Judges the events whose response is short (a stand-in for a ration): the others it leaves unjudged."""

    name = "rationed"

    def score_batch(self, events):
        self._left = {e.event_id for e in events if len(e.response) > 10}
        return []

    def unjudged(self, events):
        return {e.event_id for e in events if e.event_id in self._left}


def test_events_a_detector_left_unjudged_are_counted_per_model_version_and_a_failure_leaves_all():
    from streams.worker.metrics import WindowAggregator, WorkerMetrics

    events = [
        make_event(response="Paris."),
        make_event(response="A longer answer than that.", model_version="v2"),
        make_event(response="Another long answer.", model_version="v2"),
    ]
    result = Pipeline([Boom(), Rationed(), Counting()], max_event_bytes=100_000).process(
        [rec(e.model_dump_json().encode(), i) for i, e in enumerate(events)]
    )
    assert result.unjudged == {"boom": {e.event_id for e in events}, "rationed": {e.event_id for e in events[1:]}}
    windows = WindowAggregator("w")
    windows.add(result)
    by_version = {r.model_version: r for r in windows.flush() if r.scope == "model"}
    assert by_version[events[0].model_version].unjudged == {"boom": 1}
    assert by_version["v2"].unjudged == {"boom": 2, "rationed": 2} and by_version["v2"].events == 2
    metrics = WorkerMetrics()
    metrics.count(result)
    assert metrics.unjudged.labels("m1", "v2", "rationed")._value.get() == 2
    assert metrics.unjudged.labels("m1", "v1", "boom")._value.get() == 1


def test_duplicate_event_ids_in_a_batch_are_processed_once():
    e = make_event(response="I'm sorry, but I can't help with that.")
    raw = e.model_dump_json().encode()
    result = Pipeline([ResponseDescriptorDetector()], 100_000).process([rec(raw, 0), rec(raw, 1)])
    assert len(result.events) == 1 and result.duplicates == 1
    assert len(result.findings) == 1


def test_no_detector_runs_on_a_batch_without_valid_events():
    counting = Counting()
    result = Pipeline([counting], 100_000).process([rec(b"x")])
    assert counting.seen == 0 and result.findings == [] and len(result.dead_letters) == 1


# -- the forward pass beside the detectors that need no vectors ------------------------------------


class GatedService:
    """An embedding service whose forward pass waits until a detector that needs no vectors has run."""

    def __init__(self, release, timeout):
        self.release, self.timeout, self.forward_threads, self.cached = release, timeout, set(), {}

    @contextlib.contextmanager
    def batch(self, texts):
        import threading

        self.forward_threads.add(threading.current_thread().name)
        self.waited = self.release.wait(self.timeout)
        self.cached = {t: len(t) for t in texts}
        try:
            yield self
        finally:
            self.cached = {}


class NeedsVectors(Detector, NeedsEmbeddings):
    name = "needs_vectors"

    def __init__(self, service):
        self.service = service

    @property
    def embeddings(self):
        return self.service

    def texts_to_embed(self, events):
        return [e.response for e in events]

    def score_batch(self, events):
        # Runs once the forward pass is done: every vector is there.
        assert all(e.response in self.service.cached for e in events)
        return [Finding.for_event(e, detector=self.name, kind="vector", severity=Severity.INFO, score=0.0, summary="v") for e in events]


class Releases(Counting):
    name = "releases"

    def __init__(self, release):
        super().__init__()
        self.release = release

    def score_batch(self, events):
        out = super().score_batch(events)
        self.release.set()
        return out


@pytest.mark.parametrize("overlap", [True, False])
def test_the_forward_pass_runs_beside_the_detectors_that_need_no_vectors(overlap):
    import threading

    release = threading.Event()
    service = GatedService(release, timeout=30 if overlap else 0.2)
    # The detector that needs vectors comes first and the one that releases the forward pass last.
    detectors = [NeedsVectors(service), ResponseDescriptorDetector(), Releases(release)]
    p = Pipeline(detectors, 100_000, overlap=overlap)
    events = [make_event(response="I'm sorry, but I can't help with that."), make_event(response="Paris.")]
    result = p.process([rec(e.model_dump_json().encode(), i) for i, e in enumerate(events)])
    p.close()
    assert result.detector_errors == {}
    # Findings in the detectors' order, whichever ran first.
    assert [f.detector for f in result.findings] == ["needs_vectors", "needs_vectors", "descriptors", "releases", "releases"]
    if overlap:  # released by a detector while the forward pass waited on its own thread
        assert service.waited and service.forward_threads == {"forward_0"}
    else:  # inline: the forward pass came first and waited in vain
        assert not service.waited and service.forward_threads == {threading.current_thread().name}
    assert {"embed", "needs_vectors", "descriptors", "releases"} <= set(result.detector_seconds)


def test_a_detector_encoding_beside_the_forward_pass_waits_for_the_model_and_gets_its_vectors():
    import threading
    import time

    import numpy as np

    from detectors.embeddings import EmbeddingService

    class Service(EmbeddingService):
        def __init__(self):
            super().__init__(cache_entries=0)
            self.active = self.most = 0
            self.entered = threading.Event()
            self.threads = []

        def _forward(self, texts):
            self.active += 1
            self.most = max(self.most, self.active)
            self.threads.append(threading.current_thread().name)
            self.entered.set()
            time.sleep(0.2)  # long enough for the other thread to try
            self.active -= 1
            return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32)

    service = Service()

    class AsksForTexts(NeedsVectors):
        name = "asks"

        def score_batch(self, events):
            vectors = service.encode([e.response for e in events])  # from the batch's pass
            assert vectors[:, 0].tolist() == [float(len(e.response)) for e in events]
            return []

    class EncodesItsOwn(Detector, NeedsEmbeddings):
        name = "own"
        got = None

        @property
        def embeddings(self):
            return service

        def texts_to_embed(self, events):
            return []  # nothing for the batch's pass: it runs beside it

        def score_batch(self, events):
            assert service.entered.wait(30)  # the forward pass is under way on the other thread
            self.got = service.encode(["a text of its own"])
            return []

    own = EncodesItsOwn()
    p = Pipeline([AsksForTexts(service), own], 100_000)
    events = [make_event(response="Paris."), make_event(response="Lyon is big.")]
    result = p.process([rec(e.model_dump_json().encode(), i) for i, e in enumerate(events)])
    p.close()
    assert result.detector_errors == {}
    assert service.most == 1 and len(set(service.threads)) == 2  # both threads called the model, one at a time
    assert own.got is not None and own.got.tolist() == [[17.0, 1.0]]
