"""The bookkeeping behind :class:`~detectors.contracts.KeepsReferences`, shared by the detectors that pin references.

A restored reference and a person's reset arrive on another thread (the worker's reader of the references
topic); they wait here, under a lock, until the detector's next batch applies them, so that the windows keep
one owner. A reference the detector pins waits here for the worker to persist it.

Which reference a key keeps: **the oldest pinned** (its own or a restored one), until a reset. A worker that
started before it could read the topic (the broker was slow) pins from live traffic; when the reference
pinned before its restart arrives, that older one replaces its own and is handed over again, so that the
topic, where the latest record of a key is the one kept, holds the older one once more.
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


class ReferenceKeeper:
    def __init__(self, detector: str):
        self.detector = detector
        self._lock = threading.Lock()
        self._restored: dict[Key, PinnedReference] = {}
        self._forgotten: list[Key] = []
        self._pinned: list[PinnedReference] = []
        self._held: dict[Key, float] = {}  # when the reference each key holds was pinned (own or restored)
        self._counts = {"pinned": 0, "restored": 0, "refused": 0, "forgotten": 0}

    # -- any thread ------------------------------------------------------------------------------

    def offer(self, references: Sequence[PinnedReference]) -> None:
        """Restored references, applied at the detector's next batch (the latest per key wins)."""
        with self._lock:
            for ref in references:
                if ref.detector == self.detector:
                    key = tuple(ref.key)
                    waiting = self._restored.get(key)
                    if waiting is None or ref.pinned_at < waiting.pinned_at:  # the oldest wins
                        self._restored[key] = ref

    def forget(self, key: Key) -> None:
        with self._lock:
            self._restored.pop(tuple(key), None)
            self._forgotten.append(tuple(key))

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

    def should_adopt(self, key: Key, ref: PinnedReference, has_own: bool) -> bool:
        """Whether ``ref`` should become ``key``'s reference: the key holds none, or a younger one pinned here
        (a reference this keeper did not see, a file's or a rolling one, is never replaced)."""
        with self._lock:
            held = self._held.get(tuple(key))
        if held is None:
            return not has_own
        return ref.pinned_at < held

    def adopt(self, key: Key, ref: PinnedReference, replacing: bool) -> None:
        """The detector took ``ref`` as ``key``'s reference; one that replaced its own goes to the worker again."""
        with self._lock:
            self._held[tuple(key)] = ref.pinned_at
            self._counts["restored"] += 1
            if replacing:
                self._pinned.append(ref)

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
