"""Descriptor drift: cheap per-event descriptors, tested window against reference; evidently's report of a drift.

Descriptors per event: prompt and response length, response sentiment (VADER), refusal
(0/1), PII entities in the response (pattern recognizers), output tokens and latency when
the producer reports them. Per model version the first ``reference_size`` events pin the
reference; every ``test_every`` events the last ``window_size`` are compared with it, one
column at a time (:func:`array_tests`, on numpy arrays), with two-sample tests that are also registered with
evidently's stat-test registry for its report, at ``threshold`` (a p-value; :func:`stattest_for`): K-S for a
numeric column of more than five values,
otherwise a chi-square test of homogeneity of the two windows' counts (for two values, the Z test of
two proportions). Evidently's own defaults are not used: its chi-square takes the reference's counts
as the expected frequencies, as if they had no sampling noise (equal windows drawn from one
distribution then read p < 0.001 in about 8% of tests instead of 0.1%), and above 1,000 reference
rows it picks distances (Wasserstein, Jensen-Shannon) that a p-value threshold does not fit.

Evidently's HTML drift report is never built in the loop: it is built once when a drift
finding fires (saved under ``reports_dir``, its path in the finding) and on demand with
:meth:`DescriptorDriftDetector.report`.

Where the tests run: inline (``background=False``, the default for a library user: ``score_batch``
returns every finding of its events, deterministically) or on the detector's own thread
(``background=True``, the worker's default through its settings): ``score_batch`` then only
describes the events and fills the windows, hands a snapshot of each window that is due to the
thread (one run at a time; a model version whose run is still waiting gets the newer snapshot
instead of a second run), and returns the findings the thread completed since the last call
(:class:`~detectors.contracts.RunsInBackground`).

A pinned reference is handed to the worker as numbers (the descriptor columns; never a text), which keeps
it across restarts and gives it back (:class:`~detectors.contracts.KeepsReferences`).
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections import deque
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .background import BackgroundRunsMixin, CoalescingRunner
from .base import Detector, EventLike, Finding, Severity, finding_id
from .contracts import BuildsReports, ExposesGauges, Gauge, KeepsReferences, KeepsWindows, RunsInBackground
from .descriptors import is_refusal, sentiment
from .references import ReferenceKeeper, ReferencesMixin

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

# warnings.catch_warnings() swaps the process's filters and puts them back on exit: two threads inside at once
# (the tests on the detector's thread, a report on demand on another) could leave "ignore" behind. One at a time.
_QUIET = threading.Lock()

NUMERIC = ("prompt_chars", "response_chars", "sentiment", "pii_entities", "output_tokens", "latency_ms")
CATEGORICAL = ("refusal",)
COLUMNS = (*NUMERIC, *CATEGORICAL)
_INTEGER = frozenset({"prompt_chars", "response_chars", "pii_entities", "output_tokens", "refusal"})
# A persisted reference says which columns its rows hold, in order: one of other columns is not restored.
SPACE = "descriptors:" + ",".join(COLUMNS)


def rows_to_array(rows: Sequence[dict]) -> np.ndarray:
    """Descriptor rows as a float64 array of COLUMNS (NaN for a missing value)."""
    return np.array([[np.nan if r.get(c) is None else float(r[c]) for c in COLUMNS] for r in rows], dtype=np.float64).reshape(
        len(rows), len(COLUMNS)
    )


def array_to_rows(values: np.ndarray) -> list[dict]:
    """The inverse of :func:`rows_to_array`: the same rows, integers as integers and None where a value was missing."""
    out = []
    for line in np.asarray(values, dtype=np.float64):
        out.append({c: None if np.isnan(v) else (int(v) if c in _INTEGER else float(v)) for c, v in zip(COLUMNS, line)})
    return out


class DescriptorDriftDetector(
    BackgroundRunsMixin, ReferencesMixin, Detector, ExposesGauges, KeepsWindows, BuildsReports, RunsInBackground, KeepsReferences
):
    """Threads and owners: ``score_batch`` (the batch path) owns the windows (``_ref``, ``_cur``,
    ``_since``) and changes them under ``_lock``; the readers of other threads (report, gauges,
    window_lengths) copy them under it. The window tests run on snapshots: a pinned reference is
    never changed again, and the current window is copied under the lock when a test is due. Who
    runs the tests owns the drift state ``_active`` (the batch path inline, the detector's thread
    in background mode; a reset or a restored reference clears it) and changes it and ``last`` under ``_lock``. Restored references and resets wait in
    ``_references`` until the next ``score_batch`` applies them; a reset bumps the key's epoch, and a run of
    an older epoch still going is discarded."""

    name = "descriptor_drift"

    def __init__(
        self,
        reference_size: int = 300,
        window_size: int = 300,
        test_every: int = 100,
        threshold: float = 0.001,
        reports_dir: str | None = None,
        pii: bool = True,
        background: bool = False,
    ):
        self.reference_size = reference_size
        self.window_size = window_size
        self.test_every = test_every
        self.threshold = threshold
        self.reports_dir = Path(reports_dir) if reports_dir else None
        self._pii = None
        if pii:
            from .pii import PIILeakDetector

            self._pii = PIILeakDetector(entities=["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "SECRET"])
        self._ref: dict[tuple[str, str], list[dict]] = {}
        self._pinned: set[tuple[str, str]] = set()
        self._cur: dict[tuple[str, str], deque] = {}
        self._since: dict[tuple[str, str], int] = {}
        self._active: set[tuple[str, str]] = set()
        self.last: dict[tuple[str, str], dict[str, dict]] = {}
        self._lock = threading.Lock()
        self._references = ReferenceKeeper(self.name)
        self._epoch: dict[tuple[str, str], int] = {}
        # background=True: the tests and reports run here, on a thread of the detector's own (started on first use).
        self._runner: CoalescingRunner[tuple[str, str], Finding] | None = CoalescingRunner(self.name) if background else None

    def warm_up(self) -> None:
        sentiment("warm")
        if self._pii is not None:
            self._pii.warm_up()
        _stattests()  # evidently's stat tests (the import is the slow part), ours registered before any thread runs one

    def describe_events(self, events: Sequence[EventLike]) -> list[dict]:
        pii = self._pii.find_many([e.response for e in events]) if self._pii is not None else [[] for _ in events]
        rows = []
        for e, entities in zip(events, pii):
            rows.append(
                {
                    "prompt_chars": len(e.prompt_text),
                    "response_chars": len(e.response),
                    "sentiment": sentiment(e.response[:2000]),
                    "pii_entities": len(entities),
                    "output_tokens": getattr(e, "output_tokens", None),
                    "latency_ms": getattr(e, "latency_ms", None),
                    "refusal": int(is_refusal(e.response)),
                    "_event": e,
                }
            )
        return rows

    def score_batch(self, events: Sequence[EventLike]) -> list[Finding]:
        self._apply_references()
        findings: list[Finding] = []
        for row in self.describe_events(events):
            e = row["_event"]
            key = (e.model, e.model_version)
            with self._lock:
                if key not in self._pinned:
                    ref = self._ref.setdefault(key, [])
                    ref.append({k: v for k, v in row.items() if k != "_event"})
                    if len(ref) >= self.reference_size:
                        self._pinned.add(key)  # from now on the reference is never changed: runs share it as is
                        self._references.pinned(key, SPACE, rows_to_array(ref))
                    continue
                cur = self._cur.setdefault(key, deque(maxlen=self.window_size))
                cur.append(row)
                self._since[key] = self._since.get(key, 0) + 1
                if len(cur) < self.window_size // 2 or self._since[key] < self.test_every:
                    continue
                self._since[key] = 0
                run = partial(self._test, key, self._ref[key], tuple(cur), self._epoch.get(key, 0))  # the snapshot: rows are never changed
            if self._runner is None:
                findings.extend(run())
            else:
                self._runner.submit(key, run)
        if self._runner is not None:
            findings.extend(self._runner.drain(0))
        return findings

    def _columns(self, key):
        """The reference and current windows of ``key`` now, as data frames."""
        with self._lock:
            ref_rows, rows = list(self._ref[key]), list(self._cur.get(key, ()))  # a restored reference, no traffic yet
        return rows_to_frame(ref_rows), rows_to_frame(rows)

    def _test(self, key: tuple[str, str], ref_rows: Sequence[dict], rows: Sequence[dict], epoch: int = 0) -> list[Finding]:
        """Test a snapshot of ``key``'s current window against its reference: its finding, if it starts a drift.
        A snapshot taken before a reset of ``key`` (an older ``epoch``) is discarded."""
        results = array_tests(rows_to_array(ref_rows), rows_to_array(rows), self.threshold)
        drifted = sorted(c for c, r in results.items() if r["drifted"])
        # The frames of the example and the report, only for a drift, and before any state changes: a failure here
        # leaves the episode as it was, and the next run tries again.
        ref, cur = (rows_to_frame(ref_rows), rows_to_frame(rows)) if drifted else (None, None)
        with self._lock:  # one block: a reset between the epoch check and the episode's state would be undone
            if self._epoch.get(key, 0) != epoch:
                return []
            self.last[key] = results
            if not drifted:
                self._active.discard(key)
                return []
            if key in self._active:
                return []
            self._active.add(key)
        model, version = key
        assert ref is not None and cur is not None  # drifted

        # The example: on the drifted column whose mean moved most (in the reference's standard deviations),
        # the current event furthest from the reference in the direction it moved. An extreme row on the
        # other side (a long answer while the answers got shorter) does not show what drifted.
        def moved(c: str) -> tuple[float, float, float]:
            mean, std = float(ref[c].mean()), float(ref[c].std() or 1.0)
            return (float(cur[c].mean()) - mean) / std, mean, std

        shifts = {c: moved(c) for c in drifted if c in NUMERIC or c in CATEGORICAL}
        col = max(shifts, key=lambda c: abs(shifts[c][0])) if shifts else drifted[0]
        shift, ref_mean, ref_std = shifts.get(col) or moved(col)
        sign = 1.0 if shift >= 0 else -1.0
        example = max(rows, key=lambda r: sign * ((r[col] or 0) - ref_mean) / ref_std)["_event"]
        fid = finding_id(self.name, "descriptor_drift", model, version, example.event_id)
        details = {"drifted": drifted, "tests": results, "threshold": self.threshold, "n_reference": len(ref), "n_current": len(cur)}
        if self.reports_dir is not None:
            try:
                path = self.reports_dir / f"descriptor-drift-{fid}.html"
                details["report"] = str(_write_report(ref, cur, path, self.threshold))  # of the window that drifted
            except Exception as exc:  # noqa: BLE001 - the finding matters more than its report
                log.warning("descriptor drift report failed: %s", type(exc).__name__)
        return [
            Finding(
                finding_id=fid,
                detector=self.name,
                kind="descriptor_drift",
                severity=Severity.MEDIUM,
                score=len(drifted) / max(1, len(results)),
                model=model,
                model_version=version,
                route=example.route,
                event_id=example.event_id,
                summary=f"Descriptors drifted from the reference window: {', '.join(drifted)}",
                details=details,
            )
        ]

    # -- references that survive a restart (KeepsReferences) -------------------------------------

    def _apply_references(self) -> None:
        """On the batch thread: resets first, then the restored references (see detectors/references.py for which
        wins); one that replaces a reference pinned here bumps the key's epoch."""
        forgotten, restored = self._references.take_changes()
        if not forgotten and not restored:
            return
        with self._lock:
            for key in forgotten:
                if len(key) != 2:
                    continue
                k2 = (key[0], key[1])
                for table in (self._ref, self._cur, self._since, self.last):
                    table.pop(k2, None)
                self._pinned.discard(k2)
                self._active.discard(k2)
                self._epoch[k2] = self._epoch.get(k2, 0) + 1
            for key, ref in restored.items():
                if len(key) != 2:
                    continue
                k2 = (key[0], key[1])
                if not self._references.should_adopt(k2, has_own=k2 in self._pinned):
                    continue  # it holds one (the worker reads back what it persisted, too)
                if ref.space != SPACE or ref.rows.ndim != 2 or ref.rows.shape[1] != len(COLUMNS) or len(ref.rows) < 2:
                    self._references.refused()
                    self._references.give_back(k2)  # its own pin, if this one withdrew it: handed over after all
                    continue
                if k2 in self._pinned:  # its own pin, not handed over yet: runs against it are stale now
                    self._epoch[k2] = self._epoch.get(k2, 0) + 1
                    self._active.discard(k2)
                    self.last.pop(k2, None)
                self._ref[k2] = array_to_rows(ref.rows)
                self._pinned.add(k2)
                self._references.adopt(k2, ref)

    def has_reference(self, model: str, version: str) -> bool:
        return (model, version) in self._pinned

    def report(self, key: tuple[str, str], path: Path) -> Path:
        """Evidently's HTML data drift report of the current window against the reference; LookupError when the
        version has no current window yet (a reference restored, no traffic since)."""
        ref, cur = self._columns(key)
        if cur.empty:
            raise LookupError("no current window for that model version yet")
        return _write_report(ref, cur, path, self.threshold)

    def gauges(self) -> list[Gauge]:
        with self._lock:
            last = list(self.last.items())
        out = []
        for (model, version), results in last:
            for col, r in results.items():
                out.append(Gauge("descriptor_drift_score", {"model": model, "model_version": version, "descriptor": col}, r["score"]))
        if self._runner is not None:
            failed = self._runner.failures()
            for model, version in sorted({k for k, _ in last} | set(failed)):
                labels = {"model": model, "model_version": version}
                out.append(Gauge("descriptor_drift_failed_runs", labels, float(failed.get((model, version), 0))))
        return out

    def window_bounds(self) -> dict[str, int]:
        return {"reference": self.reference_size, "current": self.window_size}

    def window_lengths(self) -> dict[tuple[str, ...], int]:
        with self._lock:
            return {
                **{("reference", *k): len(r) for k, r in self._ref.items()},
                **{("current", *k): len(c) for k, c in self._cur.items()},
            }


MIN_TEST_VALUES = 20  # values a side (missing ones not counted) for a column to be tested


def _testable(n_ref: int, n_cur: int, distinct: int) -> bool:
    """Whether a column is tested: :data:`MIN_TEST_VALUES` values on each side, and two distinct values between them
    (one constant value on both sides has nothing to test). One rule for :func:`array_tests` and :func:`column_tests`."""
    return n_ref >= MIN_TEST_VALUES and n_cur >= MIN_TEST_VALUES and distinct > 1


def rows_to_frame(rows: Sequence[dict]):
    """Descriptor rows (:meth:`DescriptorDriftDetector.describe_events`) as a data frame of COLUMNS, without the
    event each row keeps."""
    import pandas as pd

    return pd.DataFrame([{k: v for k, v in r.items() if k != "_event"} for r in rows], columns=[*NUMERIC, *CATEGORICAL])


def array_tests(ref: np.ndarray, cur: np.ndarray, threshold: float) -> dict[str, dict]:
    """Each descriptor column of ``cur`` (an array of COLUMNS, :func:`rows_to_array`) tested against ``ref``'s at
    ``threshold``, with the test :func:`stattest_for` picks and the same p-values (:func:`column_tests` through
    evidently's registry gives the same results; this is what the detector runs, without building data frames);
    missing values are not counted; a column with under 20 values on a side, or one constant value on both, is not
    tested."""
    results: dict[str, dict] = {}
    with _QUIET, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, col in enumerate(COLUMNS):
            r, c = ref[:, i], cur[:, i]
            r, c = r[~np.isnan(r)], c[~np.isnan(c)]
            values = len(np.union1d(r, c))
            if not _testable(len(r), len(c), values):
                continue
            name, p_value = (HOMOGENEITY, homogeneity_p(r, c)) if _homogeneous(col, values) else (KS, ks_p(r, c))
            results[col] = {"stattest": name, "score": p_value, "drifted": p_value < threshold}
    return results


def column_tests(ref, cur, threshold: float, choose=None) -> dict[str, dict]:
    """Each descriptor column of ``cur`` (a data frame of COLUMNS) tested against ``ref``'s at ``threshold``, with
    ``choose(column, reference, current)``'s test (:func:`stattest_for`, or another chooser to compare with:
    bench/bench_descriptor_drift.py), called through evidently's stat-test interface; a column with under 20
    values on a side, or one constant value on both, is not tested."""
    choose = choose or stattest_for
    results: dict[str, dict] = {}
    with _QUIET, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for col in COLUMNS:
            r, c = ref[col].dropna(), cur[col].dropna()
            if not _testable(len(r), len(c), len(set(r.unique()) | set(c.unique()))):
                continue
            kind = "cat" if col in CATEGORICAL else "num"
            test = choose(col, r, c)
            out = test(r, c, kind, threshold)
            results[col] = {"stattest": test.name, "score": float(out.drift_score), "drifted": bool(out.drifted)}
    return results


def homogeneity_p(reference: np.ndarray, current: np.ndarray) -> float:
    """Pearson's chi-square test of homogeneity of the two samples' counts (a 2 x k table of their values, no
    continuity correction; scipy's ``chi2_contingency`` gives the same p-value, which a test checks, at several times
    the cost): both samples are random, unlike evidently's ``chisquare``, which tests the current counts against the
    reference's as if those were the true frequencies. 1.0 when they hold one value between them. Both samples must
    hold values (:func:`array_tests` tests a column only with 20 a side)."""
    from scipy.special import chdtrc

    keys, index = np.unique(np.concatenate([reference, current]), return_inverse=True)
    if len(keys) < 2:
        return 1.0
    n = len(reference)
    table = np.stack([np.bincount(index[:n], minlength=len(keys)), np.bincount(index[n:], minlength=len(keys))]).astype(np.float64)
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    return float(chdtrc(len(keys) - 1, statistic))  # the chi-square survival function, (2 - 1) x (k - 1) degrees of freedom


def ks_p(reference: np.ndarray, current: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov test (scipy's ``ks_2samp``, as evidently's ``ks``), on arrays without missing
    values: called past the wrapper that handles missing values and broadcasting (its ``__wrapped__``; ``ks_2samp``
    itself where that is gone), which costs three times the test; a test checks the p-values are the same. Both
    samples must hold values."""
    from scipy.stats import ks_2samp

    return float(getattr(ks_2samp, "__wrapped__", ks_2samp)(reference, current)[1])


def _homogeneous(column: str, values: int) -> bool:
    """Whether a column holding ``values`` distinct values in the two windows together is tested for homogeneity
    (the categorical column, and numeric ones of few values: counts, templated answers' sentiment; for two values
    it is the Z test of two proportions: the same p-value), not with K-S."""
    return column in CATEGORICAL or values <= 5


def _homogeneity(reference: pd.Series, current: pd.Series, feature_type, threshold: float) -> tuple[float, bool]:
    """:func:`homogeneity_p` as an evidently stat test."""
    p_value = homogeneity_p(reference.dropna().to_numpy(), current.dropna().to_numpy())
    return p_value, p_value < threshold


def _ks(reference: pd.Series, current: pd.Series, feature_type, threshold: float) -> tuple[float, bool]:
    """:func:`ks_p` as an evidently stat test."""
    p_value = ks_p(reference.dropna().to_numpy(), current.dropna().to_numpy())
    return p_value, p_value < threshold


HOMOGENEITY = "streamwarden_chisquare_homogeneity"
KS = "streamwarden_ks"
_TESTS: dict[str, object] = {}
_TESTS_LOCK = threading.Lock()


def _stattests() -> dict[str, object]:
    """The detector's two tests, registered with evidently's stat-test registry for numeric and categorical columns
    alike (its report infers each column's type itself: a count of few values reads as categorical there, and its
    own ``ks`` and ``z`` each refuse one of the two types). Registered once per process, under a lock: evidently's
    ``register_stattest`` empties a test's implementations before it fills them, so a second registration racing a
    first use (the detector's thread and a report on demand) would make that use fail."""
    with _TESTS_LOCK:
        if not _TESTS:
            from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
            from evidently.legacy.core import ColumnType

            both = [ColumnType.Categorical, ColumnType.Numerical]
            for name, display, impl in (
                (HOMOGENEITY, "chi-square homogeneity p_value", _homogeneity),
                (KS, "K-S p_value (two-sample)", _ks),
            ):
                test = StatTest(name=name, display_name=display, allowed_feature_types=both)
                register_stattest(test, default_impl=impl)
                _TESTS[name] = test
        return _TESTS


def stattest_for(column: str, reference: pd.Series, current: pd.Series):
    """The two-sample test of one descriptor column (missing values are not counted), at any window size: K-S for a
    numeric column of more than five values, else the chi-square test of homogeneity (the categorical column, and
    numeric ones of few values: counts, templated answers' sentiment; for two values it is the Z test of two
    proportions: the same p-value)."""
    tests = _stattests()
    values = len(set(reference.dropna().unique()) | set(current.dropna().unique()))
    return tests[HOMOGENEITY] if _homogeneous(column, values) else tests[KS]


def _write_report(ref, cur, path: Path, threshold: float) -> Path:
    """Evidently's HTML data drift report of ``cur`` against ``ref``, written to ``path``: each column with the test
    and threshold the detector uses (evidently's defaults would not give the finding's verdicts)."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    path.parent.mkdir(parents=True, exist_ok=True)
    methods = {col: stattest_for(col, ref[col].dropna(), cur[col].dropna()) for col in COLUMNS}
    with _QUIET, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        preset = DataDriftPreset(per_column_method=methods, threshold=threshold)
        snapshot = Report([preset]).run(reference_data=ref, current_data=cur)
        snapshot.save_html(str(path))
    return path
