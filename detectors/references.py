"""The bookkeeping behind :class:`~detectors.contracts.KeepsReferences`, shared by the detectors that pin references.

A restored reference and a person's reset arrive on another thread (the worker's reader of the references
topic); they wait here, under a lock, until the detector's next batch applies them, so that the windows keep
one owner. A reference the detector pins waits here for the worker to persist it.

Which reference a key keeps: the topic's order decides. A key that holds a reference keeps it, but for one
it pinned itself and has not handed over yet: a worker that started consuming before it could read the topic
(the broker was slow) pins from live traffic, and the worker persists nothing until its first reading of the
topic is done; a reference read back for such a key replaces the local pin, which is then never handed over.
A reset (:meth:`ReferenceKeeper.forget`) withdraws at once whatever of that key waits to be handed over, and
:meth:`ReferenceKeeper.is_current` tells the worker whether a reference it holds for a retry still stands.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np

from .contracts import PinnedReference

Key = tuple[str, ...]


class ReferencesMixin:
    """The four methods of :class:`~detectors.contracts.KeepsReferences`, answered by ``self._references``."""

    _references: ReferenceKeeper

    def pinned_references(self) -> list[PinnedReference]:
        return self._references.take_pinned()

    def restore_references(self, references: Sequence[PinnedReference]) -> None:
        self._references.offer(references)

    def forget_reference(self, key: tuple[str, ...]) -> None:
        self._references.forget(key)

    def reference_counts(self) -> dict[str, int]:
        return self._references.counts()

    def reference_is_current(self, reference: PinnedReference) -> bool:
        return self._references.is_current(reference)


class ReferenceKeeper:
    def __init__(self, detector: str):
        self.detector = detector
        self._lock = threading.Lock()
        self._restored: dict[Key, PinnedReference] = {}
        self._forgotten: list[Key] = []
        self._pinned: list[PinnedReference] = []
        self._held: dict[Key, float] = {}  # when the reference each key holds was pinned (own or restored): its identity
        self._counts = {"pinned": 0, "restored": 0, "refused": 0, "forgotten": 0}

    # -- any thread ------------------------------------------------------------------------------

    def offer(self, references: Sequence[PinnedReference]) -> None:
        """Restored references in the topic's order, applied at the detector's next batch (the last per key wins)."""
        with self._lock:
            for ref in references:
                if ref.detector == self.detector:
                    self._restored[tuple(ref.key)] = ref

    def forget(self, key: Key) -> None:
        """A reset: the key's reference goes at the next batch; what of it waits to be handed over goes now."""
        key = tuple(key)
        with self._lock:
            self._restored.pop(key, None)
            self._forgotten.append(key)
        self.withdraw(key)

    def withdraw(self, key: Key) -> None:
        """The key's reference no longer stands (a reset, or the detector dropped it): nothing of it is handed over."""
        key = tuple(key)
        with self._lock:
            self._held.pop(key, None)
            self._pinned = [p for p in self._pinned if p.key != key]

    def is_current(self, ref: PinnedReference) -> bool:
        """Whether ``ref`` is still the reference its key holds (no reset, no restored reference replaced it)."""
        with self._lock:
            return self._held.get(tuple(ref.key)) == ref.pinned_at

    def take_pinned(self) -> list[PinnedReference]:
        with self._lock:
            out, self._pinned = self._pinned, []
            return out

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    # -- the detector's batch thread ------------------------------------------------------------

    def pinned(self, key: Key, space: str, rows: np.ndarray) -> None:
        """The detector pinned ``rows`` as ``key``'s reference: hand it to the worker."""
        ref = PinnedReference(self.detector, tuple(key), space, np.asarray(rows), time.time())
        with self._lock:
            self._pinned.append(ref)
            self._held[ref.key] = ref.pinned_at
            self._counts["pinned"] += 1

    def should_adopt(self, key: Key, has_own: bool) -> bool:
        """Whether a restored reference should become ``key``'s: the key holds none, or only one it pinned here and
        has not handed over yet."""
        key = tuple(key)
        with self._lock:
            return not has_own or any(p.key == key for p in self._pinned)

    def adopt(self, key: Key, ref: PinnedReference) -> None:
        """The detector took ``ref`` as ``key``'s reference: a local pin of the key waiting to be handed over is withdrawn."""
        key = tuple(key)
        with self._lock:
            self._pinned = [p for p in self._pinned if p.key != key]
            self._held[key] = ref.pinned_at
            self._counts["restored"] += 1

    def take_changes(self) -> tuple[list[Key], dict[Key, PinnedReference]]:
        """(keys to forget, references to adopt) since the last call: forgetting comes first."""
        with self._lock:
            if not self._restored and not self._forgotten:
                return [], {}
            forgotten, restored = self._forgotten, self._restored
            self._forgotten, self._restored = [], {}
            self._counts["forgotten"] += len(forgotten)
            for key in forgotten:
                self._held.pop(key, None)
            return forgotten, restored

    def refused(self, n: int = 1) -> None:
        with self._lock:
            self._counts["refused"] += n
