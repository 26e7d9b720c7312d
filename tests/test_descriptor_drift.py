import logging
import random
import threading
import time
from pathlib import Path

from detectors.descriptor_drift import DescriptorDriftDetector
from streams.worker.pipeline import Pipeline, RawRecord

from .conftest import make_event

ANSWERS = ["Paris is the capital of France.", "You can cancel from Settings. Your access stays active.", "Yes, that works worldwide."]


def _run(det, events, batch=25):
    out = []
    for i in range(0, len(events), batch):
        out.extend(det.score_batch(events[i : i + batch]))
    return out


def test_a_refusal_wave_drifts_the_descriptors_once_and_writes_the_report(tmp_path):
    rng = random.Random(0)
    det = DescriptorDriftDetector(reference_size=100, window_size=100, test_every=50, reports_dir=str(tmp_path))
    normal = [make_event(response=rng.choice(ANSWERS), latency_ms=rng.uniform(200, 800)) for _ in range(250)]
    refusing = [make_event(response="I'm sorry, but I can't help with that.", latency_ms=rng.uniform(200, 800)) for _ in range(150)]
    assert _run(det, normal) == []  # same distribution: no drift
    findings = _run(det, refusing)
    assert len(findings) == 1
    f = findings[0]
    assert "refusal" in f.details["drifted"] and f.details["tests"]["refusal"]["drifted"]
    assert f.event_id in {e.event_id for e in refusing}
    report = tmp_path / f"descriptor-drift-{f.finding_id}.html"
    assert f.details["report"] == str(report) and report.stat().st_size > 10_000
    assert "<html" in report.read_text(errors="ignore")[:5000].lower()


def test_pii_rate_is_a_descriptor():
    det = DescriptorDriftDetector(reference_size=60, window_size=60, test_every=30)
    clean = [make_event(response="Your order ships tomorrow.") for _ in range(120)]
    leaky = [make_event(response="Your order ships tomorrow to dana@example.com, card 4111 1111 1111 1111.") for _ in range(60)]
    findings = _run(det, clean + leaky, batch=20)
    assert len(findings) == 1 and "pii_entities" in findings[0].details["drifted"]
    assert "dana@example.com" not in findings[0].model_dump_json()


# -- background mode: the tests and reports on the detector's own thread -------------------------

REFUSAL = "I'm sorry, but I can't help with that."


def _shift(n_normal=250, n_refusing=150, seed=0):
    rng = random.Random(seed)
    normal = [make_event(response=rng.choice(ANSWERS), latency_ms=rng.uniform(200, 800)) for _ in range(n_normal)]
    refusing = [make_event(response=REFUSAL, latency_ms=rng.uniform(200, 800)) for _ in range(n_refusing)]
    return normal + refusing


def _wait_idle(det, timeout=60.0):
    """Until every submitted run has run or been replaced (a wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = det.run_counts()
        if c["ran"] + c["coalesced"] + c["dropped"] >= c["submitted"]:
            return c
        time.sleep(0.01)
    raise AssertionError(f"the background runs did not finish: {det.run_counts()}")


class Gate:
    """Wraps a detector's window test: each run says it started, then waits until the test opens the gate."""

    def __init__(self, det, fail_first=False):
        self.test, self.fail_first = det._test, fail_first
        self.started, self.open = threading.Event(), threading.Event()
        self.seen = []  # (current window length, last event id) of each run
        self.finished = 0
        det._test = self

    def __call__(self, key, ref_rows, rows, epoch=0):
        self.seen.append((len(rows), rows[-1]["_event"].event_id))
        self.started.set()
        assert self.open.wait(60), "the test never opened the gate"
        try:
            if self.fail_first and len(self.seen) == 1:
                raise RuntimeError("event text: " + "dana@example.com")  # the frames quote this line, never the joined message
            return self.test(key, ref_rows, rows, epoch)
        finally:
            self.finished += 1


def _records(events):
    return [RawRecord(e.model_dump_json().encode(), None, "in", 0, i) for i, e in enumerate(events)]


def test_background_mode_publishes_a_shift_through_a_later_batch():
    det = DescriptorDriftDetector(reference_size=100, window_size=100, test_every=50, pii=False, background=True)
    gate = Gate(det)
    pipeline = Pipeline([det], max_event_bytes=1_000_000)
    events = _shift()
    early = [f for i in range(0, len(events), 25) for f in pipeline.process(_records(events[i : i + 25])).findings]
    assert early == [] and gate.started.is_set()  # the batches ran while the first test was held
    gate.open.set()
    counts = _wait_idle(det)
    assert counts["ran"] == 2 and counts["failed"] == 0  # the held run, then the newest window (the others coalesced)
    later = pipeline.process(_records([make_event(response=ANSWERS[0])])).findings
    assert len(later) == 1 and later[0].detector == "descriptor_drift" and "refusal" in later[0].details["drifted"]
    assert later[0].event_id in {e.event_id for e in events[250:]}
    assert pipeline.process(_records([make_event(response=ANSWERS[1])])).findings == []  # delivered once
    assert {g.name for g in det.gauges()} == {"descriptor_drift_score", "descriptor_drift_failed_runs"}
    det.close()


def test_score_batch_returns_before_a_slow_background_run_finishes():
    det = DescriptorDriftDetector(reference_size=20, window_size=20, test_every=10, pii=False, background=True)
    gate = Gate(det)
    returned = det.score_batch([make_event() for _ in range(30)])  # the reference, then a window that is due
    assert gate.started.wait(60)  # the run started on the detector's thread...
    assert returned == [] and gate.finished == 0  # ...and score_batch returned while it was still held
    gate.open.set()
    assert det.drain(60) == [] and gate.finished == 1  # same traffic: no drift
    det.close()


def test_triggers_while_a_run_is_in_flight_coalesce_into_one_more_run():
    det = DescriptorDriftDetector(reference_size=20, window_size=20, test_every=10, pii=False, background=True)
    gate = Gate(det)
    det.score_batch([make_event() for _ in range(30)])  # trigger 1: runs, held
    assert gate.started.wait(60)
    det.score_batch([make_event() for _ in range(10)])  # trigger 2: waits
    last = make_event(response=REFUSAL)
    det.score_batch([make_event(response=REFUSAL) for _ in range(9)] + [last])  # trigger 3: replaces trigger 2
    assert det.run_counts() == {"submitted": 3, "coalesced": 1, "ran": 0, "failed": 0, "dropped": 0}
    gate.open.set()
    det.drain(60)
    assert det.run_counts()["ran"] == 2 and len(gate.seen) == 2
    assert gate.seen[1] == (20, last.event_id)  # the run after the held one tested the newest window
    det.close()


def test_a_failing_background_run_is_counted_and_the_next_one_still_runs(caplog):
    det = DescriptorDriftDetector(reference_size=100, window_size=100, test_every=50, pii=False, background=True)
    gate = Gate(det, fail_first=True)
    gate.open.set()
    events = _shift()
    with caplog.at_level(logging.ERROR, logger="detectors.background"):
        det.score_batch(events[:150])  # the reference and a first window: its run fails
        assert det.drain(60) == []
    assert det.run_counts()["failed"] == 1
    assert "RuntimeError" in caplog.text and "event text: dana@example.com" not in caplog.text  # the type, never the message
    failed = [g for g in det.gauges() if g.name == "descriptor_drift_failed_runs"]
    assert [(g.labels, g.value) for g in failed] == [({"model": "m1", "model_version": "v1"}, 1.0)]
    findings = [f for i in range(150, len(events), 25) for f in det.score_batch(events[i : i + 25]) + det.drain(60)]
    assert len(findings) == 1 and "refusal" in findings[0].details["drifted"]
    assert det.run_counts()["failed"] == 1 and det.run_counts()["ran"] == len(gate.seen) > 1
    det.close()


def test_inline_and_background_modes_give_the_same_findings(tmp_path):
    events = _shift(seed=3)
    inline = DescriptorDriftDetector(reference_size=100, window_size=100, test_every=50, reports_dir=str(tmp_path / "inline"))
    background = DescriptorDriftDetector(
        reference_size=100, window_size=100, test_every=50, reports_dir=str(tmp_path / "background"), background=True
    )
    a = _run(inline, events)
    b = [f for i in range(0, len(events), 25) for f in background.score_batch(events[i : i + 25]) + background.drain(60)]
    background.close()
    assert len(a) == 1 and inline.run_counts()["submitted"] == 0
    assert [(f.finding_id, f.event_id, f.score, f.details["tests"]) for f in b] == [
        (f.finding_id, f.event_id, f.score, f.details["tests"]) for f in a
    ]
    assert Path(b[0].details["report"]).stat().st_size > 10_000  # the report is built on the background thread too
    assert inline.last == background.last


def test_close_stops_the_thread_without_waiting_for_a_stuck_run():
    det = DescriptorDriftDetector(reference_size=20, window_size=20, test_every=10, pii=False, background=True)
    gate = Gate(det)
    det.score_batch([make_event() for _ in range(30)])
    assert gate.started.wait(60)
    det.score_batch([make_event() for _ in range(10)])  # waits behind the held run
    det.close(timeout=0.01)  # returns though the run is still held
    assert det.run_counts()["dropped"] == 1 and gate.finished == 0
    det.score_batch([make_event() for _ in range(10)])  # due, but closed: dropped, nothing runs inline
    assert det.run_counts()["dropped"] == 2 and len(gate.seen) == 1
    thread = det._runner._thread  # this detector's own (other tests' detectors may have left threads of that name)
    assert thread is not None and thread.name == "descriptor_drift-background" and thread.daemon
    gate.open.set()
    thread.join(60)
    assert not thread.is_alive() and det.drain(0) == []


def test_the_finding_points_at_an_event_that_moved_the_way_the_window_did():
    """Answers got much shorter; one long answer in the window is further from the reference, on the other side:
    the example is a short one (what drifted), not that outlier."""
    rng = random.Random(1)
    det = DescriptorDriftDetector(reference_size=100, window_size=100, test_every=100, pii=False)
    medium = "You can cancel from Settings. Your access stays active until the end of the period, and no new charge."
    normal = [make_event(response=medium + " " * rng.randint(0, 20), latency_ms=rng.uniform(400, 600)) for _ in range(100)]
    long_one = make_event(response=medium * 30, latency_ms=500.0)
    short = [make_event(response="Sure, done." + "!" * rng.randint(0, 3), latency_ms=rng.uniform(400, 600)) for _ in range(99)]
    assert _run(det, normal) == []
    (f,) = _run(det, [long_one, *short])
    assert "response_chars" in f.details["drifted"]
    assert f.event_id in {e.event_id for e in short}


# -- the tests' calibration: equal windows drawn from one distribution ---------------------------


def test_windows_of_few_values_from_one_distribution_read_no_more_false_alarms_than_the_threshold():
    """A count with five values (output tokens of templated answers, say): evidently's default chi-square takes the
    reference's counts as the true frequencies and flags ~18% of such equal windows at 0.01; the two-sample test
    flags about 1%."""
    import numpy as np
    import pandas as pd

    from detectors.descriptor_drift import stattest_for

    rng = np.random.default_rng(7)
    values, p = [37.0, 38.0, 39.0, 40.0, 41.0], [0.085, 0.42, 0.34, 0.11, 0.045]
    alarms = 0
    for _ in range(400):
        r, c = pd.Series(rng.choice(values, 200, p=p)), pd.Series(rng.choice(values, 200, p=p))
        test = stattest_for("output_tokens", r, c)
        alarms += test(r, c, "num", 0.01).drifted
    assert alarms <= 12  # 400 x 0.01 = 4 expected; the one-sample chi-square gives ~70


def test_templated_traffic_does_not_drift_and_a_real_shift_of_a_count_still_does():
    rng = random.Random(3)
    answers = [a + " " * k for a in ANSWERS for k in range(2)]  # few distinct lengths: the low-cardinality path

    def event(tokens):
        return make_event(response=rng.choice(answers), output_tokens=tokens, latency_ms=rng.uniform(200, 800))

    # At 1e-4: 40 tests of 7 columns make a chance finding unlikely with a calibrated test (at 0.001, a few seeds in
    # 20 give one); evidently's own chi-square still reads p < 1e-4 on these windows.
    det = DescriptorDriftDetector(reference_size=200, window_size=200, test_every=100, threshold=1e-4)
    stationary = [event(rng.choices([37, 38, 39, 40, 41], weights=[17, 84, 68, 22, 9])[0]) for _ in range(4200)]
    assert _run(det, stationary, batch=64) == []
    longer = [event(rng.choices([39, 40, 41], weights=[20, 40, 40])[0]) for _ in range(200)]
    findings = _run(det, longer, batch=64)
    assert len(findings) == 1 and "output_tokens" in findings[0].details["drifted"]
    assert findings[0].details["tests"]["output_tokens"]["stattest"] == "streamwarden_chisquare_homogeneity"


def test_a_reference_over_a_thousand_rows_is_still_tested_with_p_values():
    """Above 1,000 reference rows evidently's defaults are distances (Wasserstein, Jensen-Shannon), which a p-value
    threshold of 0.001 would call drifted on any two samples."""
    rng = random.Random(5)

    def event(lo, hi):
        return make_event(response="x" * rng.randint(lo, hi), latency_ms=rng.uniform(200, 800))

    det = DescriptorDriftDetector(reference_size=1200, window_size=1200, test_every=600)
    assert _run(det, [event(20, 400) for _ in range(3600)], batch=200) == []
    assert {t["stattest"] for t in det.last[("m1", "v1")].values()} <= {"streamwarden_ks", "streamwarden_chisquare_homogeneity"}
    findings = _run(det, [event(300, 700) for _ in range(1200)], batch=200)
    assert len(findings) == 1 and "response_chars" in findings[0].details["drifted"]


def test_the_homogeneity_test_is_registered_once_when_threads_first_use_it_together(monkeypatch):
    """evidently's register_stattest empties a test's implementations before it fills them: a second registration
    racing a first use would make that use fail. Eight threads at once, the registration slowed: each test registered
    once."""
    import evidently.legacy.calculations.stattests.registry as registry
    import pandas as pd

    import detectors.descriptor_drift as dd

    real, calls = registry.register_stattest, []

    def slow_register(*args, **kwargs):
        calls.append(1)
        time.sleep(0.05)
        return real(*args, **kwargs)

    monkeypatch.setattr(registry, "register_stattest", slow_register)
    monkeypatch.setattr(dd, "_TESTS", {})
    barrier, got, errors = threading.Barrier(8), [], []

    def use():
        barrier.wait()
        try:
            test = dd.stattest_for("pii_entities", pd.Series([0, 1, 2] * 30), pd.Series([0, 1, 2] * 30))
            got.append(test(pd.Series([0, 1, 2] * 30), pd.Series([0, 1, 2] * 30), "num", 0.001).drifted)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and got == [False] * 8
    assert len(calls) == 2  # the homogeneity test and K-S, each once


def test_the_detectors_array_tests_give_the_verdicts_and_p_values_of_the_registered_evidently_tests():
    """The detector tests arrays (no data frames on its thread); the report and bench/bench_descriptor_drift.py call
    the same tests through evidently's stat-test interface. Both must pick the same test per column and give the
    same p-value: on windows with missing values (latency), few-valued counts, a constant column, and a real shift."""
    import numpy as np

    from detectors.descriptor_drift import array_tests, column_tests, rows_to_array, rows_to_frame

    rng = random.Random(11)
    det = DescriptorDriftDetector(background=False)

    def events(n, refusing=0.0, long=False):
        out = []
        for _ in range(n):
            response = "I'm sorry, but I can't help with that." if rng.random() < refusing else rng.choice(ANSWERS)
            out.append(
                make_event(
                    response=response * (3 if long else 1),
                    output_tokens=rng.choice([37, 38, 39, 40, 41]),
                    latency_ms=rng.uniform(200, 800) if rng.random() < 0.8 else None,
                )
            )
        return out

    cases = [(events(200), events(200)), (events(200), events(150, refusing=0.3)), (events(60), events(200, long=True))]
    for ref_events, cur_events in cases:
        ref, cur = det.describe_events(ref_events), det.describe_events(cur_events)
        fast = array_tests(rows_to_array(ref), rows_to_array(cur), 0.01)
        through_evidently = column_tests(rows_to_frame(ref), rows_to_frame(cur), 0.01)
        assert fast.keys() == through_evidently.keys() and len(fast) >= 4
        for col, result in fast.items():
            other = through_evidently[col]
            assert (result["stattest"], result["drifted"]) == (other["stattest"], other["drifted"])
            assert np.isclose(result["score"], other["score"], rtol=1e-12, atol=0.0)
    shifted = array_tests(rows_to_array(det.describe_events(cases[1][0])), rows_to_array(det.describe_events(cases[1][1])), 0.01)
    assert shifted["refusal"]["drifted"]  # the cases hold a real shift, so the comparison covers a drifted verdict


def test_the_two_tests_give_scipys_p_values():
    """homogeneity_p computes Pearson's statistic itself and ks_p calls ks_2samp past its wrapper: both must give what
    scipy's public chi2_contingency (no continuity correction) and ks_2samp give, ties and few values included."""
    from collections import Counter

    import numpy as np
    from scipy.stats import chi2_contingency, ks_2samp

    from detectors.descriptor_drift import homogeneity_p, ks_p

    rng = np.random.default_rng(4)
    for _ in range(300):
        n1, n2 = rng.integers(20, 600, 2)
        k = int(rng.integers(2, 8))
        shift = rng.uniform(0, 0.3)
        a = rng.choice(k, n1, p=np.full(k, 1 / k)).astype(float)
        b = np.minimum(k - 1, rng.choice(k, n2, p=np.full(k, 1 / k)) + (rng.random(n2) < shift)).astype(float)
        counts = Counter(a.tolist()), Counter(b.tolist())
        keys = sorted(set(counts[0]) | set(counts[1]))
        table = [[c.get(key, 0) for key in keys] for c in counts]
        expected = chi2_contingency(table, correction=False)[1] if len(keys) > 1 else 1.0
        assert np.isclose(homogeneity_p(a, b), expected, rtol=1e-9, atol=1e-300)
        x, y = rng.normal(0, 1, n1).round(int(rng.integers(0, 3))), rng.normal(shift, 1, n2).round(int(rng.integers(0, 3)))
        assert ks_p(x, y) == ks_2samp(x, y).pvalue


def test_a_column_is_tested_with_twenty_values_a_side_and_two_distinct_values_between_them():
    import numpy as np
    import pandas as pd

    from detectors.descriptor_drift import COLUMNS, array_tests, column_tests

    col = COLUMNS.index("response_chars")

    def arrays(n_ref, n_cur, ref_value=None, cur_value=None):
        ref, cur = np.full((n_ref, len(COLUMNS)), np.nan), np.full((n_cur, len(COLUMNS)), np.nan)
        ref[:, col] = ref_value if ref_value is not None else np.arange(n_ref) % 7
        cur[:, col] = cur_value if cur_value is not None else np.arange(n_cur) % 7 + 3
        return ref, cur

    def tested(ref, cur):
        fast = array_tests(ref, cur, 0.01)
        frames = column_tests(*(pd.DataFrame(a, columns=list(COLUMNS)) for a in (ref, cur)), 0.01)
        assert fast.keys() == frames.keys()  # one rule for both
        return set(fast)

    assert tested(*arrays(20, 20)) == {"response_chars"}
    assert tested(*arrays(19, 20)) == set() and tested(*arrays(20, 19)) == set()  # too few values on a side
    assert tested(*arrays(30, 30, ref_value=5.0, cur_value=5.0)) == set()  # one constant value on both sides
    assert tested(*arrays(30, 30, ref_value=5.0, cur_value=6.0)) == {"response_chars"}  # constant, but not the same
