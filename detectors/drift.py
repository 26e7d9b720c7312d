"""Drift: is the live window of prompts (or responses) drawn from the reference window's distribution?

:class:`EmbeddingDriftDetector` runs a kernel two-sample test on sentence embeddings: the
(biased) squared MMD with a Gaussian kernel whose bandwidth is the median pairwise distance,
and a permutation test for its p-value. The permutations are vectorised in torch: the
pooled kernel matrix K is computed once, each permutation is a row of +1/n, -1/m weights,
and all the statistics are ``sum((A @ K) * A, 1)`` in one matrix product; on CUDA when
present. No Python loop over permutations.

In the worker (``score_batch``), per model version and per field (prompt, response): the
first ``reference_size`` events pin the reference window (or it is loaded from a file of
texts, or rolled forward from the previous window with ``reference="previous"``), a sliding
window holds the last ``window_size`` events, and every ``test_every`` events the test runs.
With ``mode="publish"`` (several workers) the detector does not test: it keeps an interval
reservoir per model version and field, which the worker publishes to the drift topic, and a
:class:`DriftMerger` tests the merged window (see the README: "Drift across workers").

A drift episode raises one finding when p < alpha and closes when p >= alpha again. The
test runs many times a day, so alpha defaults to 0.001 with 1,000 permutations.
``embedding="static"`` takes the vectors from a static token table distilled from the default
model (``detectors/static_embeddings.py``, shipped in the package; its model card gives its
power and false alarms beside the default's) instead of the sentence-embedding model: a table
lookup rather than a forward pass, about 100 times faster on a CPU, with the same power and false
alarms on Brown (bench/bench_static.py). It is the default unless ``embedding_model`` (or a service
of vectors) is given; ``embedding="model"`` takes the sentence-embedding model. Workers publishing
to one merger should make the same choice: the merger never mixes vectors of two dimensions (it
tests the majority's and re-pins its reference when the dimension changes, as in a rolling change).

References survive a restart (:class:`~detectors.contracts.KeepsReferences`): with ``reference="pinned"``
each pinned reference (its vectors, never its texts) is handed to the worker, which keeps it on a compacted
topic and gives it back when it starts, so a restart during a drift does not re-pin the reference from the
drifted traffic. The :class:`DriftMerger` does the same with its merged references.

``sample_rate`` embeds a deterministic fraction of the events (by event_id) where embedding
them all would cost more than the test needs.

Where the tests run: inline (``background=False``, the default for a library user: ``score_batch``
returns every finding of its events) or on the detector's own thread (``background=True``, the
worker's default through its settings), as descriptor drift does: ``score_batch`` embeds the events
and fills the windows, hands a snapshot of each window that is due (the reference array and the
window's rows) to the thread, and returns the findings the thread completed since the last call
(:class:`~detectors.contracts.RunsInBackground`). The test's matrix products release the GIL, so on
a machine with a core to spare they run beside the batch's Python work instead of inside it. What
that mode trades: while tests fall behind, a window whose test still waits is replaced by the newer
one (a drift seen in that one window only is not tested), and a finding leaves with a later batch or
the worker's timer, after the offsets of the batch that completed its window may be committed (a
crash then loses it; the replay's windows, and so its findings, may differ).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path

import numpy as np

from .background import BackgroundRunsMixin, CoalescingRunner
from .base import Detector, EventLike, Finding, Severity, finding_id
from .contracts import (
    ExposesGauges,
    Gauge,
    KeepsReferences,
    KeepsWindows,
    NeedsEmbeddings,
    PublishesSamples,
    RunsInBackground,
)
from .embeddings import UsesEmbeddings, default_model_path
from .errors import ConfigurationError
from .references import ReferenceKeeper, ReferencesMixin

FIELDS = ("prompt", "response")
# "model": the sentence-embedding model every detector shares (embedding_model, all-MiniLM-L6-v2 by
# default); "static": the static token table distilled from it (detectors/static_embeddings.py), a
# lookup instead of a forward pass, in its own service (the batch's texts for drift are then not
# encoded by the model).
EMBEDDINGS = ("model", "static")


@dataclass(frozen=True)
class DriftResult:
    statistic: float  # squared MMD
    p_value: float
    drifted: bool
    n_reference: int = 0
    n_current: int = 0
    witness: tuple[float, ...] = ()  # per current row: how much more it looks like the current window than the reference

    def details(self, field: str, alpha: float, **extra: object) -> dict[str, object]:
        """A drift finding's details: the field, the test's figures, and ``extra``."""
        return {
            "field": field,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "alpha": alpha,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            **extra,
        }


def _device(device: str | None):
    import torch

    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def mmd_permutation_test(
    x, y, permutations: int = 500, alpha: float = 0.05, device: str | None = None, seed: int = 0, chunk: int = 128
) -> DriftResult:
    """Gaussian-kernel MMD^2 between samples x (n, d) and y (m, d), permutation p-value."""
    import torch

    dev = _device(device)
    dtype = torch.float32
    X = torch.as_tensor(np.asarray(x), dtype=dtype, device=dev)
    Y = torch.as_tensor(np.asarray(y), dtype=dtype, device=dev)
    n, m = X.shape[0], Y.shape[0]
    if n < 2 or m < 2:
        raise ValueError("each window needs at least two rows")
    Z = torch.cat([X, Y])
    sq = torch.cdist(Z, Z).pow(2)
    # Median heuristic on the pooled off-diagonal distances.
    iu = torch.triu_indices(n + m, n + m, offset=1, device=dev)
    median = sq[iu[0], iu[1]].median().clamp_min(1e-12)
    K = torch.exp(-sq / median)
    del sq
    g = torch.Generator(device=dev).manual_seed(seed)
    weights = torch.cat([torch.full((n,), 1.0 / n, device=dev), torch.full((m,), -1.0 / m, device=dev)]).to(dtype)
    observed = float(weights @ K @ weights)
    stats = []
    for start in range(0, permutations, chunk):  # chunks bound memory; each chunk is one matmul
        p = min(chunk, permutations - start)
        order = torch.argsort(torch.rand(p, n + m, generator=g, device=dev), dim=1)
        A = weights[order]
        stats.append(((A @ K) * A).sum(dim=1))
    perm = torch.cat(stats)
    p_value = float((1 + (perm >= observed).sum().item()) / (1 + permutations))
    # The MMD witness function on the current rows: mean kernel to the current window minus
    # mean kernel to the reference. Its largest values are the most "drifted" examples.
    witness = (K[n:, n:].mean(dim=1) - K[n:, :n].mean(dim=1)).tolist()
    return DriftResult(observed, p_value, p_value < alpha, n, m, tuple(witness))


class EmbeddingDriftDetector(
    UsesEmbeddings,
    BackgroundRunsMixin,
    ReferencesMixin,
    Detector,
    NeedsEmbeddings,
    ExposesGauges,
    KeepsWindows,
    PublishesSamples,
    RunsInBackground,
    KeepsReferences,
):
    """Threads: ``score_batch`` owns the windows, reservoirs and pending references; it changes them
    under ``_lock``, and the readers of other threads (gauges, export_samples, window_lengths) copy
    them under it (with ``reference="previous"`` it also rolls a key's reference forward there, when
    it takes a window's snapshot: arrays are replaced, never changed in place). The tests (inline, or
    on the runner's thread in background mode, one at a time) own ``_active`` and change it and ``last``
    under ``_lock`` (a reset or a restored reference clears them). Restored references and resets wait in
    ``_references`` until the next ``score_batch`` applies them; a reset, or a restored reference that replaces
    one pinned here, bumps the key's epoch, and a test of an older epoch still running is discarded."""

    name = "drift"

    def __init__(
        self,
        reference_size: int = 200,
        window_size: int = 200,
        test_every: int = 50,
        permutations: int = 1000,
        alpha: float = 0.001,
        sample_rate: float = 0.25,
        fields: Sequence[str] = FIELDS,
        reference: str = "pinned",
        reference_file: str | None = None,
        embedding_model: str | None = None,
        device: str | None = None,
        embeddings=None,
        mode: str = "local",
        embedding: str | None = None,
        reservoir_size: int = 200,
        background: bool = False,
    ):
        if embedding is None:  # the static table, unless a model or a service of vectors was asked for
            embedding = "model" if embedding_model is not None or embeddings is not None else "static"
        if mode not in ("local", "publish"):
            raise ConfigurationError("mode must be 'local' (test in this worker) or 'publish' (reservoirs for a DriftMerger)")
        self.mode = mode
        if embedding not in EMBEDDINGS:
            raise ConfigurationError(f"embedding {embedding!r}: one of {', '.join(EMBEDDINGS)}")
        if embedding == "static" and embedding_model is not None:
            raise ConfigurationError("embedding='static' uses the shipped static table: leave embedding_model unset")
        self.embedding = embedding
        self.reservoir_size = reservoir_size
        self._reservoirs: dict[tuple[str, str, str], IntervalReservoir] = {}
        self._lock = threading.Lock()
        if reference not in ("pinned", "previous", "file"):
            raise ConfigurationError("reference must be 'pinned', 'previous' or 'file'")
        if reference == "file" and not reference_file:
            raise ConfigurationError("reference='file' needs reference_file: a text file, one text per line")
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise ConfigurationError(f"unknown fields {sorted(unknown)}; use {FIELDS}")
        if not 0 < sample_rate <= 1:
            raise ConfigurationError("sample_rate must be in (0, 1]")
        self.sample_rate = sample_rate
        self.reference_size = reference_size
        self.window_size = window_size
        self.test_every = test_every
        self.permutations = permutations
        self.alpha = alpha
        self.fields = tuple(fields)
        self.reference_mode = reference
        self.reference_file = reference_file
        self._embedding_model = embedding_model
        self._embeddings = embeddings
        self.device = device
        self._ref: dict[tuple[str, str, str], np.ndarray] = {}
        self._pending_ref: dict[tuple[str, str, str], list] = {}
        self._cur: dict[tuple[str, str, str], deque] = {}
        self._since: dict[tuple[str, str, str], int] = {}
        self._active: set[tuple[str, str, str]] = set()
        self.last: dict[tuple[str, str, str], DriftResult] = {}
        self._references = ReferenceKeeper(self.name)
        self._epoch: dict[tuple[str, str, str], int] = {}  # bumped by a reset: a test of an older epoch is stale
        self._space: str | None = None
        # background=True: the tests run here, on a thread of the detector's own (started on first use).
        self._runner: CoalescingRunner[tuple[str, str, str], Finding] | None = CoalescingRunner(self.name) if background else None

    @property
    def embeddings(self):
        if self._embeddings is None and self.embedding == "static":
            from .static_embeddings import StaticEmbeddingService

            self._embeddings = StaticEmbeddingService.shared()
        return super().embeddings

    @cached_property
    def _file_reference(self) -> np.ndarray:
        assert self.reference_file is not None  # reference='file' requires it
        texts = [t for t in Path(self.reference_file).read_text(encoding="utf-8").splitlines() if t.strip()]
        return self.embeddings.encode(texts)

    def warm_up(self) -> None:
        self.embeddings.warm_up()
        if self.reference_mode == "file":
            _ = self._file_reference  # read and encode the reference file now

    def test(self, reference, current) -> DriftResult:
        """Texts or embedding arrays; reference vs current."""
        ref = self.embeddings.encode(list(reference)) if _are_texts(reference) else np.asarray(reference)
        cur = self.embeddings.encode(list(current)) if _are_texts(current) else np.asarray(current)
        return mmd_permutation_test(ref, cur, self.permutations, self.alpha, self.device)

    def sampled(self, events: Sequence[EventLike]) -> list[EventLike]:
        """The events this detector looks at: all, or a deterministic fraction by event_id
        (the same events on every worker and after a replay)."""
        if self.sample_rate >= 1:
            return list(events)
        cut = int(self.sample_rate * 2**32)
        return [e for e in events if int(finding_id("sample", e.event_id)[:8], 16) < cut]

    @property
    def publishes_samples(self) -> bool:
        return self.mode == "publish"

    def texts_to_embed(self, events: Sequence[EventLike]) -> list[str]:
        events = self.sampled(events)
        out: list[str] = []
        for f in self.fields:
            out.extend(e.prompt_text if f == "prompt" else e.response for e in events)
        return out

    def score_batch(self, events: Sequence[EventLike]) -> list[Finding]:
        self._apply_references()
        events = self.sampled(events)
        if not events:
            return []
        vectors = self.embeddings.encode(self.texts_to_embed(events))
        findings = []
        for fi, fname in enumerate(self.fields):
            block = vectors[fi * len(events) : (fi + 1) * len(events)]
            for e, v in zip(events, block):
                key = (e.model, e.model_version, fname)
                if self.mode == "publish":
                    with self._lock:
                        r = self._reservoirs.get(key)
                        if r is None:
                            r = self._reservoirs[key] = IntervalReservoir(self.reservoir_size, seed=len(self._reservoirs))
                        r.add(v)
                    continue
                if key not in self._ref:
                    if self.reference_mode == "file":
                        self._ref[key] = self._file_reference
                    else:
                        with self._lock:
                            pending = self._pending_ref.setdefault(key, [])
                            pending.append(v)
                            if len(pending) >= self.reference_size:
                                self._ref[key] = np.stack(pending)
                                del self._pending_ref[key]
                                if self.reference_mode == "pinned":
                                    self._references.pinned(key, self.reference_space(), self._ref[key])
                        continue
                with self._lock:
                    cur = self._cur.setdefault(key, deque(maxlen=self.window_size))
                    cur.append((v, e))
                    self._since[key] = self._since.get(key, 0) + 1
                    if len(cur) < min(self.window_size, self.reference_size) // 2 or self._since[key] < self.test_every:
                        continue
                    self._since[key] = 0
                    ref, rows, epoch = (
                        self._ref[key],
                        tuple(cur),
                        self._epoch.get(key, 0),
                    )  # the snapshot: the array is replaced, never changed
                    if self.reference_mode == "previous" and len(cur) >= self.window_size:
                        # Roll forward now, not when the test ends: the next window is compared with this one
                        # even while this one's test still waits or runs on the detector's thread.
                        self._ref[key] = np.stack([v for v, _ in rows])
                if self._runner is None:
                    findings.extend(self._run_test(key, ref, rows, epoch))
                else:
                    self._runner.submit(key, partial(self._run_test, key, ref, rows, epoch))
        if self._runner is not None:
            findings.extend(self._runner.drain(0))
        return findings

    def _run_test(self, key, ref: np.ndarray, cur: Sequence[tuple[np.ndarray, EventLike]], epoch: int = 0) -> list[Finding]:
        """Test a snapshot of ``key``'s window (its rows, with the reference of the moment): its finding, if
        it starts a drift episode. A snapshot taken before a reset of ``key`` (an older ``epoch``) is discarded."""
        model, version, fname = key
        result = mmd_permutation_test(ref, np.stack([v for v, _ in cur]), self.permutations, self.alpha, self.device)
        with self._lock:  # one block: a reset between the epoch check and the episode's state would be undone
            if self._epoch.get(key, 0) != epoch:
                return []
            self.last[key] = result
            if not result.drifted:
                self._active.discard(key)
                return []
            if key in self._active:
                return []
            self._active.add(key)
        # Point at the example that most characterises the drifted window (witness maximum).
        last_event = cur[int(np.argmax(result.witness))][1] if result.witness else cur[-1][1]
        return [
            Finding(
                finding_id=finding_id(self.name, "drift", model, version, fname, last_event.event_id),
                detector=self.name,
                kind=f"{fname}_drift",
                severity=Severity.MEDIUM,
                score=result.statistic,
                model=model,
                model_version=version,
                route=last_event.route,
                event_id=last_event.event_id,
                summary=(
                    f"The {fname}s of the last {result.n_current} events differ from the reference window "
                    f"({result.n_reference} events): MMD^2 {result.statistic:.4f}, p {result.p_value:.4f} < {self.alpha}"
                ),
                details=result.details(fname, self.alpha, reference=self.reference_mode, example_event_id=last_event.event_id),
            )
        ]

    # -- references that survive a restart (KeepsReferences) -------------------------------------

    def reference_space(self) -> str:
        """What the vectors are: ``embedding:model:dimension`` (a reference of another space is never restored)."""
        if self._space is None:
            self._space = embedding_space(self.embedding, self.embeddings)
        return self._space

    def _apply_references(self) -> None:
        """On the batch thread: resets first, then the restored references (see detectors/references.py for which
        wins); one that replaces a reference pinned here bumps the key's epoch."""
        forgotten, restored = self._references.take_changes()
        if not forgotten and not restored:
            return
        space = self.reference_space() if restored else ""
        with self._lock:
            for key in forgotten:
                if len(key) != 3:
                    continue
                k3 = (key[0], key[1], key[2])
                for table in (self._ref, self._pending_ref, self._cur, self._since, self.last):
                    table.pop(k3, None)
                self._active.discard(k3)
                self._epoch[k3] = self._epoch.get(k3, 0) + 1
            for key, ref in restored.items():
                if len(key) != 3 or self.mode != "local" or self.reference_mode == "file":
                    continue
                k3 = (key[0], key[1], key[2])
                if not self._references.should_adopt(k3, has_own=k3 in self._ref):
                    continue  # it holds one (the worker reads back what it persisted, too)
                if ref.space != space or ref.rows.ndim != 2 or len(ref.rows) < 2 or not _width_fits(space, ref.rows):
                    self._references.refused()
                    self._references.give_back(k3)  # its own pin, if this one withdrew it: handed over after all
                    continue
                if k3 in self._ref:  # its own pin, not handed over yet: tests of windows against it are stale now
                    self._epoch[k3] = self._epoch.get(k3, 0) + 1
                    self._active.discard(k3)
                    self.last.pop(k3, None)
                self._ref[k3] = np.ascontiguousarray(ref.rows, dtype=np.float32)
                self._pending_ref.pop(k3, None)
                self._references.adopt(k3, ref)

    def export_samples(self) -> list[tuple[str, str, str, int, np.ndarray]]:
        """Publish mode: each key's (model, version, field, count, sample) of this interval; resets."""
        out = []
        with self._lock:
            for (model, version, fname), r in self._reservoirs.items():
                count, vectors = r.take()
                if count:
                    out.append((model, version, fname, count, vectors))
        return out

    def gauges(self) -> list[Gauge]:
        with self._lock:
            last = list(self.last.items())
        out = []
        for (model, version, fname), r in last:
            labels = {"model": model, "model_version": version, "field": fname}
            out.append(Gauge("drift_mmd_statistic", labels, r.statistic))
            out.append(Gauge("drift_p_value", labels, r.p_value))
        return out

    def window_bounds(self) -> dict[str, int]:
        return {"reference": self.reference_size, "current": self.window_size, "reservoir": self.reservoir_size}

    def window_lengths(self) -> dict[tuple[str, ...], int]:
        with self._lock:
            return {
                **{("reference", *k): len(p) for k, p in self._pending_ref.items()},
                **{("current", *k): len(c) for k, c in self._cur.items()},
                **{("reservoir", *k): len(r) for k, r in self._reservoirs.items()},
            }


def embedding_space(embedding: str, service) -> str:
    """``embedding:model:dimension`` for references: the default model by name, another by its folder's last
    two path parts (the same on every machine that installs it the same way); a service of vectors without a
    model name (a library user's) by its class."""
    name = getattr(service, "model_name", None)
    if name is None:
        label = type(service).__name__
    else:
        try:
            default = str(name) == default_model_path()
        except RuntimeError:  # the default model's package is not installed: it is not the default then
            default = False
        label = "all-MiniLM-L6-v2" if default else "/".join(Path(str(name)).parts[-2:])
    dimension = getattr(service, "dimension", None)
    return f"{embedding}:{label}:{dimension if dimension is not None else '?'}"


def _width_fits(space: str, rows: np.ndarray) -> bool:
    """The rows are as wide as the space says (``...:384``); a space of unknown width (``...:?``) takes any."""
    width = space.rsplit(":", 1)[-1]
    return not width.isdigit() or rows.shape[1] == int(width)


def _are_texts(values) -> bool:
    return isinstance(values, (list, tuple)) and (len(values) == 0 or isinstance(values[0], str))


# -- many workers: interval reservoirs, merged per model version ---------------------------------


class IntervalReservoir:
    """A uniform sample (Algorithm R) of at most ``size`` vectors of one interval, and its count."""

    def __init__(self, size: int, seed: int = 0):
        self.size = size
        self._rng = np.random.default_rng(seed)
        self.count = 0
        self._rows: list[np.ndarray] = []

    def add(self, vector: np.ndarray) -> None:
        self.count += 1
        if len(self._rows) < self.size:
            self._rows.append(vector)
        else:
            j = int(self._rng.integers(0, self.count))
            if j < self.size:
                self._rows[j] = vector

    def __len__(self) -> int:
        return len(self._rows)

    def take(self) -> tuple[int, np.ndarray]:
        """The interval's (count, sample); the reservoir starts a new interval."""
        out = (self.count, np.stack(self._rows) if self._rows else np.zeros((0, 0), dtype=np.float32))
        self.count, self._rows = 0, []
        return out


def weighted_merge(parts: Sequence[tuple[int, np.ndarray]], size: int, rng: np.random.Generator) -> np.ndarray:
    """A sample of the union of several uniform samples, each standing for ``count`` events.

    Rows are allotted to each part in proportion to its count (multinomial), then drawn
    without replacement from its sample, so the result is a uniform sample of the union.
    """
    parts = [(c, v) for c, v in parts if c > 0 and len(v)]
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    counts = np.array([c for c, _ in parts], dtype=float)
    want = min(size, sum(len(v) for _, v in parts))
    alloc = rng.multinomial(want, counts / counts.sum())
    rows = []
    for (_, v), k in zip(parts, alloc):
        k = min(int(k), len(v))
        if k:
            rows.append(v[rng.choice(len(v), size=k, replace=False)])
    return np.concatenate(rows) if rows else np.zeros((0, parts[0][1].shape[1]), dtype=np.float32)


class DriftMerger(ReferencesMixin):
    """Merges interval samples from many workers per (model, version, field) and tests them.

    Feed it what workers publish (:meth:`add`); :meth:`evaluate` builds each key's current
    window from the last ``window_intervals`` intervals of every producer (weighted by their
    counts), pins the first full window as the reference, and runs the MMD test. A producer
    that stops publishing (crashed, or its partitions moved) ages out with its intervals.

    Threads: :meth:`add` runs on the event loop while :meth:`evaluate` runs on a background
    thread; the samples and results are changed under ``_lock`` and read from copies
    (:meth:`last_results` for the results). Its references survive a restart or a move of the drift
    topic's partition as a detector's do (the same four methods as
    :class:`~detectors.contracts.KeepsReferences`, as detector ``drift.merged``, applied at the next
    :meth:`evaluate`); their space is ``merged:DIMENSION``, since the samples carry no embedding name.
    """

    name = "drift.merged"

    def __init__(
        self,
        window_size: int = 500,
        window_intervals: int = 4,
        permutations: int = 1000,
        alpha: float = 0.001,
        device: str | None = None,
        seed: int = 0,
        interval_s: float | None = None,
    ):
        self.window_size = window_size
        self.interval_s = interval_s  # the length of the workers' intervals (interval = unix time // interval_s), if known
        self.window_intervals = window_intervals
        self.permutations = permutations
        self.alpha = alpha
        self.device = device
        self._rng = np.random.default_rng(seed)
        self._samples: dict[tuple[str, str, str], dict[tuple[str, int], tuple[int, np.ndarray]]] = {}
        self._ref: dict[tuple[str, str, str], np.ndarray] = {}
        self._active: set[tuple[str, str, str]] = set()
        self.last: dict[tuple[str, str, str], DriftResult] = {}
        self._lock = threading.Lock()
        self.mixed_dimensions = 0  # evaluations that left out samples of another embedding's dimension
        self._references = ReferenceKeeper(self.name)
        self._reset_from: dict[tuple[str, str, str], int] = {}  # after a reset: the first interval of the new window

    def _apply_references(self, current_interval: int) -> None:
        forgotten, restored = self._references.take_changes()
        for key in forgotten:
            if len(key) == 3:  # the reference and the window go: the next intervals' samples pin a new one
                k3 = (key[0], key[1], key[2])
                self._ref.pop(k3, None)
                self._active.discard(k3)
                # The samples of the intervals the reset's time falls in or before go with it (an old reset read again
                # at a start drops nothing of the traffic since); without the intervals' length, all of them.
                at = self._references.reset_at(k3)
                first = current_interval + 1 if at is None or not self.interval_s else int(at // self.interval_s) + 1
                with self._lock:
                    self.last.pop(k3, None)
                    per = self._samples.get(k3, {})
                    for k in [k for k in per if k[1] < first]:
                        del per[k]
                    self._reset_from[k3] = max(self._reset_from.get(k3, first), first)
        for key, ref in restored.items():
            if len(key) != 3:
                continue
            k3 = (key[0], key[1], key[2])
            if not self._references.should_adopt(k3, has_own=k3 in self._ref):
                continue
            own = self._ref.get(k3)
            if (
                ref.rows.ndim != 2
                or ref.space != f"merged:{ref.rows.shape[1]}"
                or len(ref.rows) < 2
                or (
                    own is not None and own.shape[1] != ref.rows.shape[1]  # keep its pin of the current dimension
                )
            ):
                self._references.refused()
                self._references.give_back(k3)  # its own pin, if this one withdrew it: handed over after all
                continue
            if k3 in self._ref:
                self._active.discard(k3)
            self._ref[k3] = np.ascontiguousarray(ref.rows, dtype=np.float32)
            self._references.adopt(k3, ref)

    def add(self, model: str, version: str, field: str, producer: str, interval: int, count: int, vectors: np.ndarray) -> None:
        with self._lock:
            if interval < self._reset_from.get((model, version, field), interval):
                return  # a sample of the traffic before a reset, arriving late
            per = self._samples.setdefault((model, version, field), {})
            per[(producer, interval)] = (count, vectors)

    def last_results(self) -> dict[tuple[str, str, str], DriftResult]:
        """The latest test result per (model, version, field): a copy, safe to read while evaluate runs."""
        with self._lock:
            return dict(self.last)

    def _windows(self, oldest: int) -> list[tuple[tuple[str, str, str], dict[tuple[str, int], tuple[int, np.ndarray]]]]:
        """Each key's intervals from ``oldest`` on (older ones age out), copied."""
        with self._lock:
            out = []
            for key, per in self._samples.items():
                for k in [k for k in per if k[1] < oldest]:
                    del per[k]  # aged out: the window is the last window_intervals intervals
                out.append((key, dict(per)))
            return out

    def evaluate(self, current_interval: int) -> list[Finding]:
        self._apply_references(current_interval)
        findings = []
        for key, per in self._windows(current_interval - self.window_intervals + 1):
            # Workers that embed differently (a rolling change of drift's `embedding`: 384-d model vectors,
            # 256-d static ones) cannot be mixed: the window takes the dimension most of its events have,
            # and a change of dimension re-pins the reference.
            dims: dict[int, int] = {}
            for count, vectors in per.values():
                dims[vectors.shape[1]] = dims.get(vectors.shape[1], 0) + count
            if not dims:
                continue
            dim = max(dims, key=lambda d: dims[d])
            if len(dims) > 1:
                self.mixed_dimensions += 1
                per = {k: v for k, v in per.items() if v[1].shape[1] == dim}
            if key in self._ref and self._ref[key].shape[1] != dim:
                del self._ref[key]
                self._active.discard(key)
                self._references.withdraw(key)  # a retry must not write the reference of the old dimension back
            window = weighted_merge(list(per.values()), self.window_size, self._rng)
            if len(window) < max(10, self.window_size // 4):
                continue
            if key not in self._ref:
                if len(window) >= self.window_size // 2:
                    self._ref[key] = window
                    self._references.pinned(key, f"merged:{window.shape[1]}", window)
                    with self._lock:  # the next windows are new traffic, not the reference again
                        for k in per:
                            self._samples[key].pop(k, None)
                continue
            result = mmd_permutation_test(self._ref[key], window, self.permutations, self.alpha, self.device)
            with self._lock:
                self.last[key] = result
            if not result.drifted:
                self._active.discard(key)
                continue
            if key in self._active:
                continue
            self._active.add(key)
            model, version, fname = key
            producers = sorted({p for p, _ in per})
            findings.append(
                Finding(
                    finding_id=finding_id("drift", "merged", model, version, fname, str(current_interval)),
                    detector="drift",
                    kind=f"{fname}_drift",
                    severity=Severity.MEDIUM,
                    score=result.statistic,
                    model=model,
                    model_version=version,
                    summary=(
                        f"The {fname}s of the last {self.window_intervals} intervals across {len(producers)} workers differ "
                        f"from the reference: MMD^2 {result.statistic:.4f}, p {result.p_value:.4f} < {self.alpha}"
                    ),
                    details=result.details(fname, self.alpha, producers=len(producers), merged=True),
                )
            )
        return findings
