"""What a detector can do besides scoring batches, as ``typing.Protocol`` contracts.

A detector class declares each capability by subclassing its protocol (so mypy checks the
signatures, and a declared method left unimplemented makes the class abstract); the worker asks
:func:`capabilities` or ``isinstance(detector, NeedsEmbeddings)`` instead of probing attributes.
Note that on Python 3.11 ``isinstance`` against a protocol with a property (NeedsEmbeddings,
PublishesSamples) evaluates that property; :func:`declared` and :func:`capabilities` read only
the class (and ``publishes_samples``).

Threads: ``score_batch`` runs on one thread at a time (the worker's detector thread). Every
method of these contracts may be called from another thread while it runs (a detector keeps
the state they read behind a lock and answers from a copy taken under it), but for two that
belong to one batch: ``texts_to_embed`` and ``unjudged``, which the pipeline calls on the
detector thread just before and just after ``score_batch`` of the same events (toxicity's
``texts_to_embed`` spends its ration: it is called once per batch). A detector that
:class:`RunsInBackground` also owns one thread of its own, which works on snapshots only.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from .base import EventLike, Finding
    from .embeddings import EmbeddingService


class Gauge(NamedTuple):
    """A current value the worker exports as the Prometheus gauge ``streamwarden_<name>``."""

    name: str
    labels: dict[str, str]  # low cardinality: model, model_version, field...
    value: float


@runtime_checkable
class NeedsEmbeddings(Protocol):
    """Encodes texts with the shared embedding service: the worker encodes every such detector's
    texts of a batch in one forward pass (``embeddings.batch(texts)``) before ``score_batch``."""

    @property
    @abc.abstractmethod
    def embeddings(self) -> EmbeddingService | None:
        """The service it encodes with; None when configured to encode nothing."""

    @abc.abstractmethod
    def texts_to_embed(self, events: Sequence[EventLike]) -> list[str]:
        """The texts ``score_batch(events)`` will encode, known before scoring. A detector may encode a
        few more that depend on its scores (toxicity: the prompts of the responses it flagged)."""


@runtime_checkable
class ExposesGauges(Protocol):
    """Current values for the metrics; safe to call while ``score_batch`` runs on another thread."""

    @abc.abstractmethod
    def gauges(self) -> list[Gauge]: ...


@runtime_checkable
class KeepsWindows(Protocol):
    """Keeps events across batches, per model version (sliding windows, references, memories)."""

    @abc.abstractmethod
    def window_bounds(self) -> Mapping[str, int]:
        """What it keeps: window name -> the most events one window of that name holds."""

    @abc.abstractmethod
    def window_lengths(self) -> dict[tuple[str, ...], int]:
        """Now: (window name, *key) -> events held (each within its bound)."""


@runtime_checkable
class PublishesSamples(Protocol):
    """Drift across workers: hands its interval samples to the worker to publish."""

    @property
    @abc.abstractmethod
    def publishes_samples(self) -> bool:
        """True when configured to publish (drift ``mode="publish"``); export_samples is then due every interval."""

    @abc.abstractmethod
    def export_samples(self) -> list[tuple[str, str, str, int, np.ndarray]]:
        """This interval's (model, version, field, count, sample) per key; starts a new interval."""


@runtime_checkable
class BuildsReports(Protocol):
    """Builds a report of a model version's current window against its reference, on demand."""

    @abc.abstractmethod
    def has_reference(self, model: str, version: str) -> bool: ...

    @abc.abstractmethod
    def report(self, key: tuple[str, str], path: Path) -> Path:
        """Writes the report of ``key`` = (model, version) to ``path``; returns it. LookupError when there is no current
        window to report on yet."""


@runtime_checkable
class RunsInBackground(Protocol):
    """Can run its slow part (window tests, reports) on a thread of its own, off the batch path.

    In that mode ``score_batch`` does the cheap part (describe the events, fill the windows), hands
    a snapshot of a window that is due to its thread, and returns the findings its thread completed
    since the last call: they reach the worker's normal output a batch later. Inline (its other
    mode), ``score_batch`` runs everything itself and these methods have nothing to do.
    """

    @abc.abstractmethod
    def drain(self, timeout: float | None = None) -> list[Finding]:
        """Waits up to ``timeout`` seconds (None: until done) for the runs queued or in progress, then
        returns the findings completed and not yet returned, each once; ``drain(0)`` never waits."""

    @abc.abstractmethod
    def close(self, timeout: float = 5.0) -> None:
        """Stops its thread: queued runs are dropped, the one in progress gets ``timeout`` seconds, its
        findings stay for :meth:`drain`. The thread is a daemon: it never holds the process."""

    @abc.abstractmethod
    def run_counts(self) -> dict[str, int]:
        """Its thread's runs so far: submitted, coalesced, ran, failed (they raised), dropped. The worker counts
        the failed ones as this detector's errors, as it does a batch the detector raised on."""


@runtime_checkable
class LeavesUnjudged(Protocol):
    """Judges some events of a batch and not others: a ration of a costly stage under load (toxicity's head), or
    events it has nothing to judge on (grounding: no context documents). After
    ``score_batch(events)`` the worker asks which it left unjudged and counts them per model version
    (``unjudged`` in the metrics), so that a rate over this detector's findings divides by the events it
    judged, not by every event. (A detector that raises on a batch leaves all of its events unjudged.)"""

    @abc.abstractmethod
    def unjudged(self, events: Sequence[EventLike]) -> set[str]:
        """The ids of the events of ``events``, the batch ``score_batch`` has just scored, that it left unjudged."""


class PinnedReference(NamedTuple):
    """A reference window a detector pinned from live traffic, in a form that travels: ``rows`` is a
    2-d float array (embedding vectors; descriptor rows as their columns, NaN for a missing value),
    never text. ``space`` says what the rows are (the embedding and its dimension, or the descriptor
    columns): a reference is restored only into the same space."""

    detector: str
    key: tuple[str, ...]  # (model, version) or (model, version, field)
    space: str
    rows: np.ndarray
    pinned_at: float  # unix seconds


@runtime_checkable
class KeepsReferences(Protocol):
    """Pins a reference window from the first events of a model version, then tests later windows against it.

    Kept only in memory, a reference would be re-learnt from live traffic after every restart or partition
    move: from traffic that may already have drifted, so the alarm would go silent. The worker persists what
    :meth:`pinned_references` hands over (a compacted topic) and gives the references back with
    :meth:`restore_references` when it starts; :meth:`forget_reference` is a person's reset (the next
    events pin a new one). Both may be called from any thread: the detector applies them at its next batch.
    A restored reference replaces only a reference the detector pinned itself and has not handed over yet
    (the worker hands over nothing before its first reading of the topic is done)."""

    @abc.abstractmethod
    def pinned_references(self) -> list[PinnedReference]:
        """The references pinned since the last call, each handed over once."""

    @abc.abstractmethod
    def restore_references(self, references: Sequence[PinnedReference]) -> None:
        """Adopt these for keys that have not pinned a reference of their own yet (a reference of another
        space or detector is ignored)."""

    @abc.abstractmethod
    def forget_reference(self, key: tuple[str, ...], at: float | None = None) -> None:
        """A reset at ``at`` (unix seconds, default now; the tombstone's time): drop ``key``'s reference and its window,
        and every reference of it pinned before ``at`` (waiting, restored, or read back later); the next events pin
        a new one."""

    @abc.abstractmethod
    def reference_counts(self) -> dict[str, int]:
        """References so far: pinned (from traffic), restored (adopted), refused (another space), forgotten."""

    @abc.abstractmethod
    def reference_is_current(self, reference: PinnedReference) -> bool:
        """Whether ``reference``, handed over by :meth:`pinned_references`, still stands (no reset, no restored
        reference replaced it): the worker persists it only then, so a retry never writes back a withdrawn one."""


@runtime_checkable
class TextGenerator(Protocol):
    """What probes ask: one answer of the model under test to a prompt (``bias.counterfactual_gap``)."""

    def __call__(self, prompt: str) -> str: ...


CONTRACTS: tuple[type, ...] = (
    NeedsEmbeddings,
    ExposesGauges,
    KeepsWindows,
    PublishesSamples,
    BuildsReports,
    RunsInBackground,
    LeavesUnjudged,
    KeepsReferences,
)


def declared(detector: object) -> tuple[type, ...]:
    """The contracts a detector (or detector class) declares by subclassing them."""
    cls = detector if isinstance(detector, type) else type(detector)
    return tuple(p for p in CONTRACTS if p in cls.__mro__)


def capabilities(detector: object) -> frozenset[str]:
    """Names of the contracts ``detector`` declares and uses as configured (PublishesSamples
    only in publish mode). Reads no other attribute: loads nothing."""
    names = {p.__name__ for p in declared(detector)}
    if "PublishesSamples" in names and not detector.publishes_samples:  # type: ignore[attr-defined]
        names.discard("PublishesSamples")
    return frozenset(names)
