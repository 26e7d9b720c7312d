import json
import random

import numpy as np
import pytest

from detectors.drift import EmbeddingDriftDetector, mmd_permutation_test

from .conftest import make_event, shared_data


def test_same_distribution_is_not_drift_and_a_shift_is():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(150, 16)), rng.normal(size=(150, 16))
    same = mmd_permutation_test(a, b, permutations=300, alpha=0.05)
    assert same.p_value > 0.05 and not same.drifted
    shifted = mmd_permutation_test(a, rng.normal(loc=0.6, size=(150, 16)), permutations=300, alpha=0.05)
    assert shifted.p_value < 0.01 and shifted.drifted and shifted.statistic > same.statistic
    assert len(shifted.witness) == 150


def test_false_alarm_rate_stays_near_alpha():
    rng = np.random.default_rng(1)
    alarms = sum(
        mmd_permutation_test(rng.normal(size=(60, 8)), rng.normal(size=(60, 8)), permutations=200, alpha=0.1, seed=i).drifted
        for i in range(60)
    )
    assert alarms <= 14  # alpha 0.1 of 60 is 6 expected; 14 is beyond 3 standard deviations


def test_permutations_are_vectorised_not_looped(monkeypatch):
    import torch

    calls = []
    real = torch.Tensor.__matmul__

    def counting(self, other):
        calls.append(1)
        return real(self, other)

    monkeypatch.setattr(torch.Tensor, "__matmul__", counting)
    rng = np.random.default_rng(2)
    mmd_permutation_test(rng.normal(size=(40, 4)), rng.normal(size=(40, 4)), permutations=500, chunk=250)
    assert len(calls) <= 4  # observed statistic (2) + one per chunk of permutations (2), not 500


def _brown(category, n, seed):
    docs = [json.loads(l) for l in shared_data("drift_brown", "brown_docs.jsonl").read_text().splitlines()]
    paras = [p for d in docs if d["category"] == category for p in d["text"].split("\n") if len(p.split()) > 12]
    random.Random(seed).shuffle(paras)
    return paras[:n]


@pytest.mark.slow  # the embedding model on real text: seconds, not milliseconds
def test_real_text_topic_shift_is_detected_and_same_genre_is_not():
    det = EmbeddingDriftDetector(permutations=300, alpha=0.01)
    news_a, news_b = _brown("news", 60, 1), _brown("news", 120, 2)[60:]
    fiction = _brown("romance", 60, 3)
    assert det.test(news_a, fiction).drifted
    assert not det.test(news_a, news_b).drifted


@pytest.mark.slow  # the embedding model on real text: seconds, not milliseconds
def test_worker_mode_pins_a_reference_and_flags_one_episode_per_shift():
    det = EmbeddingDriftDetector(
        reference_size=40, window_size=40, test_every=20, permutations=300, alpha=0.01, sample_rate=1.0, fields=["prompt"]
    )
    news = _brown("news", 120, 4)
    hobbies = _brown("hobbies", 80, 5)
    events = [make_event(prompt=p) for p in news] + [make_event(prompt=p) for p in hobbies]
    findings = []
    for i in range(0, len(events), 20):
        findings.extend(det.score_batch(events[i : i + 20]))
    assert len(findings) == 1, [f.summary for f in findings]
    f = findings[0]
    assert f.kind == "prompt_drift" and f.details["p_value"] < 0.01
    assert f.event_id in {e.event_id for e in events[120:]}  # the example is from the shifted traffic
    gauges = {n: v for n, labels, v in det.gauges() if labels["field"] == "prompt"}
    assert gauges["drift_p_value"] < 0.01


def _drift_events():
    news = _brown("news", 120, 4)
    hobbies = _brown("hobbies", 80, 5)
    return [make_event(prompt=p) for p in news] + [make_event(prompt=p) for p in hobbies]


@pytest.mark.parametrize("reference", ["pinned", "previous"])
def test_inline_and_background_modes_give_the_same_findings_and_results(reference):
    options = dict(reference_size=40, window_size=40, test_every=20, permutations=300, alpha=0.01, sample_rate=1.0, fields=["prompt"])
    options["reference"] = reference
    inline = EmbeddingDriftDetector(**options)
    background = EmbeddingDriftDetector(**options, background=True)
    events = _drift_events()
    a = [f for i in range(0, len(events), 20) for f in inline.score_batch(events[i : i + 20])]
    # Drained after each batch, so that every snapshot runs (none is replaced by a newer one while it waits).
    b = [f for i in range(0, len(events), 20) for f in background.score_batch(events[i : i + 20]) + background.drain(60)]
    counts = background.run_counts()
    background.close()
    if reference == "pinned":
        assert len(a) == 1 and a[0].event_id in {e.event_id for e in events[120:]}
    else:  # each window was compared with the one before: the reference rolled forward alike in both modes
        key = ("m1", "v1", "prompt")
        first = background.embeddings.encode([e.prompt_text for e in events[:40]])
        assert np.array_equal(inline._ref[key], background._ref[key]) and not np.allclose(background._ref[key], first)
    assert [(f.finding_id, f.event_id, f.score, f.details) for f in b] == [(f.finding_id, f.event_id, f.score, f.details) for f in a]
    assert inline.last == background.last
    assert counts["ran"] == counts["submitted"] > 1 and counts["failed"] == 0
    assert inline.run_counts()["submitted"] == 0


def test_score_batch_returns_before_a_slow_background_test_and_its_finding_comes_later(monkeypatch):
    import threading

    import detectors.drift as drift

    gate, started = threading.Event(), threading.Event()
    real = drift.mmd_permutation_test

    def slow(*args, **kwargs):
        started.set()
        assert gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(drift, "mmd_permutation_test", slow)
    det = EmbeddingDriftDetector(
        reference_size=40, window_size=40, test_every=20, permutations=300, alpha=0.01, sample_rate=1.0, fields=["prompt"], background=True
    )
    events = _drift_events()
    returned = [f for i in range(0, len(events), 20) for f in det.score_batch(events[i : i + 20])]
    assert started.wait(30) and returned == []  # every batch came back while the first test was held
    counts = det.run_counts()
    assert counts["coalesced"] > 0  # later snapshots of the one key replaced each other while they waited
    gate.set()
    later = det.drain(60)
    det.close()
    assert [f.kind for f in later] == ["prompt_drift"]  # the newest snapshot, taken after the shift, is tested


def test_a_held_test_does_not_hold_the_previous_reference_back(monkeypatch):
    import threading

    import detectors.drift as drift

    gate, started, calls = threading.Event(), threading.Event(), []
    real = drift.mmd_permutation_test

    def held(ref, window, *args, **kwargs):
        calls.append((np.asarray(ref).copy(), np.asarray(window).copy()))
        started.set()
        assert gate.wait(30)
        return real(ref, window, *args, **kwargs)

    monkeypatch.setattr(drift, "mmd_permutation_test", held)
    options = dict(reference_size=40, window_size=40, test_every=40, permutations=200, alpha=0.01, sample_rate=1.0, fields=["prompt"])
    det = EmbeddingDriftDetector(**options, reference="previous", background=True)
    events = _drift_events()  # 200 events: the reference, then four full windows, each due a test
    for i in range(0, len(events), 40):
        det.score_batch(events[i : i + 40])  # never drained: the first test is held while the others queue
        if i == 40:  # the first window is due: its test starts (and is held) before the next snapshot can replace it
            assert started.wait(30)
    gate.set()
    det.drain(60)
    det.close()
    windows = [det.embeddings.encode([e.prompt_text for e in events[i : i + 40]]) for i in range(0, len(events), 40)]
    # The held first test and the newest snapshot (the ones between were replaced while they waited).
    assert len(calls) == 2
    assert np.allclose(calls[0][0], windows[0]) and np.allclose(calls[0][1], windows[1])
    assert np.allclose(calls[1][1], windows[4]) and np.allclose(calls[1][0], windows[3])  # the window before, not the first


def test_configuration_errors():
    with pytest.raises(ValueError):
        EmbeddingDriftDetector(reference="file")
    with pytest.raises(ValueError):
        EmbeddingDriftDetector(sample_rate=0)
    with pytest.raises(ValueError):
        EmbeddingDriftDetector(fields=["metadata"])


def test_weighted_merge_is_a_uniform_sample_of_the_union():
    from detectors.drift import IntervalReservoir, weighted_merge

    rng = np.random.default_rng(0)
    big, small = IntervalReservoir(50, seed=1), IntervalReservoir(50, seed=2)
    for i in range(900):
        big.add(np.array([0.0, i]))
    for i in range(100):
        small.add(np.array([1.0, i]))
    parts = [big.take(), small.take()]
    assert parts[0][0] == 900 and len(parts[0][1]) == 50
    shares = [weighted_merge(parts, 60, rng)[:, 0].mean() for _ in range(200)]
    assert abs(np.mean(shares) - 0.1) < 0.02  # small stands for 10% of the events, not half the rows
    assert big.take()[0] == 0  # a new interval


def test_merger_tests_the_window_merged_from_many_producers_and_ages_them_out():
    from detectors.drift import DriftMerger

    rng = np.random.default_rng(3)
    m = DriftMerger(window_size=120, window_intervals=2, permutations=300, alpha=0.01)
    for interval in range(3):  # reference traffic from three workers
        for w in range(3):
            m.add("m", "v", "prompt", f"w{w}", interval, 500, rng.normal(size=(40, 8)))
        assert m.evaluate(interval) == []
    for interval in range(3, 6):  # the traffic shifts
        for w in range(3):
            m.add("m", "v", "prompt", f"w{w}", interval, 500, rng.normal(loc=0.8, size=(40, 8)))
    findings = [f for i in range(3, 6) for f in m.evaluate(i)]
    assert len(findings) == 1 and findings[0].details["producers"] == 3 and findings[0].details["merged"]
    assert all(k[1] >= 4 for k in m._samples[("m", "v", "prompt")])  # older intervals aged out


def test_merger_keeps_workers_that_embed_differently_apart_and_re_pins_on_a_change_of_embedding():
    """A rolling change of drift's embedding (384-d model vectors -> 256-d static ones): never mixed, never a crash."""
    from detectors.drift import DriftMerger

    rng = np.random.default_rng(5)
    m = DriftMerger(window_size=120, window_intervals=2, permutations=300, alpha=0.01)
    for interval in range(3):  # every worker on the old embedding
        for w in range(3):
            m.add("m", "v", "prompt", f"w{w}", interval, 500, rng.normal(size=(40, 8)))
        assert m.evaluate(interval) == []
    assert m._ref[("m", "v", "prompt")].shape[1] == 8
    for interval in range(3, 5):  # one worker upgraded: the majority's window is tested, the other left out
        for w in range(3):
            m.add("m", "v", "prompt", f"w{w}", interval, 500, rng.normal(size=(40, 4 if w == 0 else 8)))
        assert m.evaluate(interval) == []
    assert m.mixed_dimensions >= 1 and m._ref[("m", "v", "prompt")].shape[1] == 8
    for interval in range(5, 12):  # all upgraded: the reference is pinned again in the new space, and shifts are found there
        for w in range(3):
            m.add("m", "v", "prompt", f"w{w}", interval, 500, rng.normal(loc=0.8 if interval >= 9 else 0.0, size=(40, 4)))
        m.evaluate(interval)
        if interval < 9:
            assert not [r for r in m.last_results().values() if r.drifted]
    assert m._ref[("m", "v", "prompt")].shape[1] == 4
    assert m.last_results()[("m", "v", "prompt")].drifted
