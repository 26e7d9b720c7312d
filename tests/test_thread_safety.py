"""Detector state read from other threads while score_batch (or DriftMerger.evaluate) runs.

The worker runs ``score_batch`` on its detector thread and, meanwhile, reads gauges and drift
samples on the event loop and builds reports and merged drift tests on a background thread.
Each test runs both sides at once with forced thread switching and asserts neither raised
(on the unguarded code they raised "dictionary changed size during iteration" or "deque
mutated during iteration").
"""

from __future__ import annotations

import sys
import threading
import time
import zlib
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
import pytest

from detectors.bias import BiasDetector
from detectors.descriptor_drift import DescriptorDriftDetector
from detectors.drift import DriftMerger, EmbeddingDriftDetector

from .conftest import make_event


class FakeEmbeddings:
    """Deterministic 8-d vectors per text: the drift logic without the model."""

    def encode(self, texts):
        rows = [np.random.default_rng(zlib.crc32(t.encode())).normal(size=8) for t in texts]
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), 8)

    def warm_up(self):
        pass

    @contextmanager
    def batch(self, texts):
        yield self


@contextmanager
def forced_switching():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


@pytest.fixture(autouse=True, scope="module")
def imports_done():
    """The slow imports happen before the races (under forced switching they take seconds)."""
    import evidently.legacy.calculations.stattests  # noqa: F401
    import pandas  # noqa: F401
    import torch  # noqa: F401

    from detectors.descriptors import sentiment

    sentiment("warm")


def race(writer: Callable[[], None], reader: Callable[[], object], timeout: float = 60) -> list[BaseException]:
    """Run ``writer`` once on one thread and ``reader`` over and over on another until the writer
    is done; every exception either raised (the reader goes on after one)."""
    errors: list[BaseException] = []
    done = threading.Event()

    def write():
        try:
            writer()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)
        finally:
            done.set()

    def read():
        while not done.is_set():
            try:
                reader()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    with forced_switching():
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a side did not finish"
    return errors


def _describe(errors):
    return [f"{type(e).__name__}: {e}" for e in errors[:5]]


def test_merger_add_while_evaluate_runs():
    merger = DriftMerger(window_size=10**6, window_intervals=1000)  # windows never fill: no MMD, merging and ageing
    rows = np.zeros((2, 4), dtype=np.float32)
    interval = 0

    def add():  # the event loop: samples from the drift topic, a new interval each
        nonlocal interval
        for interval in range(20_000):
            merger.add("m", "v", "prompt", "w1", interval, 10, rows)
            if interval % 50 == 0:
                time.sleep(0)  # let evaluate in

    errors = race(add, lambda: merger.evaluate(interval))
    assert errors == [], _describe(errors)


def test_merger_last_results_while_evaluate_writes():
    rng = np.random.default_rng(0)
    merger = DriftMerger(window_size=20, window_intervals=2, permutations=10)
    keys = [(f"m{i}", "v", "prompt") for i in range(100)]
    for interval in (0, 1):  # the first evaluate pins the references, the next windows are tested
        for key in keys:
            merger.add(*key, "w1", interval, 20, rng.normal(size=(20, 4)))
        if interval == 0:
            merger.evaluate(0)

    def read():  # the worker's gauges: every merged p-value
        return [(k, r.p_value) for k, r in merger.last_results().items()]

    errors = race(lambda: merger.evaluate(1), read)
    assert errors == [], _describe(errors)
    assert len(merger.last_results()) == len(keys)


def _versions(n, per, **fields):
    return [make_event(model_version=f"v{i}", **fields) for i in range(n) for _ in range(per)]


def _score_in_batches(det, events, batch=20):
    def score():
        for i in range(0, len(events), batch):
            det.score_batch(events[i : i + batch])
            time.sleep(0)  # let the reader in

    return score


def test_drift_gauges_while_score_batch_runs():
    det = EmbeddingDriftDetector(
        reference_size=4, window_size=4, test_every=2, permutations=10, sample_rate=1.0, fields=["prompt"], embeddings=FakeEmbeddings()
    )
    events = [make_event(model_version=f"v{i}", prompt=f"question {i}.{j}") for i in range(400) for j in range(6)]
    errors = race(_score_in_batches(det, events, batch=24), det.gauges)
    assert errors == [], _describe(errors)
    assert len(det.gauges()) == 2 * 400  # statistic and p-value per model version


@pytest.mark.slow  # the embedding model on real text: seconds, not milliseconds
def test_drift_export_samples_while_score_batch_runs_in_publish_mode():
    det = EmbeddingDriftDetector(mode="publish", reservoir_size=3, sample_rate=1.0, embeddings=FakeEmbeddings())
    events = [make_event(model_version=f"v{i}", prompt=f"q{i}.{j}", response=f"a{i}.{j}") for i in range(300) for j in range(4)]
    exported = []
    errors = race(_score_in_batches(det, events), lambda: exported.extend(det.export_samples()))
    exported.extend(det.export_samples())
    assert errors == [], _describe(errors)
    assert sum(count for *_, count, _ in exported) == 2 * len(events)  # every event counted once, per field


def test_bias_gauges_while_score_batch_runs():
    det = BiasDetector(window=2, min_events=1, stereotype=False)
    events = [
        make_event(model_version=f"v{i}", prompt=f"As a {who}, can I change my plan?", response="Sure, here is how.")
        for i in range(500)
        for who in ("woman", "man")
    ]
    errors = race(_score_in_batches(det, events), det.gauges)
    assert errors == [], _describe(errors)
    assert det.gauges()


def test_descriptor_drift_gauges_while_score_batch_runs():
    det = DescriptorDriftDetector(reference_size=2, window_size=2, test_every=1, pii=False)
    events = _versions(100, 3)
    errors = race(_score_in_batches(det, events, batch=30), det.gauges)
    assert errors == [], _describe(errors)
    assert len(det.last) == 100


def test_descriptor_drift_report_while_score_batch_runs(tmp_path):
    det = DescriptorDriftDetector(reference_size=30, window_size=10_000, test_every=10**9, pii=False)
    det.score_batch(_versions(1, 3000))  # the reference, and a current window to report on
    det.report(("m1", "v0"), tmp_path / "warm.html")  # evidently's imports, before the race
    more = _versions(1, 1000)
    reports = []
    errors = race(
        _score_in_batches(det, more, batch=1), lambda: reports.append(det.report(("m1", "v0"), tmp_path / f"r{len(reports)}.html"))
    )
    assert errors == [], _describe(errors)
    assert reports and reports[-1].stat().st_size > 10_000
