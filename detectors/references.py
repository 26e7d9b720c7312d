"""The bookkeeping behind :class:`~detectors.contracts.KeepsReferences`, shared by the detectors that pin references.

A restored reference and a person's reset arrive on another thread (the worker's reader of the references
topic). The keeper decides at once, under its lock, what they mean for the references waiting to be handed
over; the detector's state (its windows) changes at its next batch, when it applies them, so that the windows
keep one owner.

Which reference a key keeps:

* **The topic's order.** A key that holds a reference keeps it, but for a pin the detector made itself and has
  not handed over yet: the worker hands nothing over before its first reading of the topic is done, so a worker
  that started consuming before it could read the topic (the broker was slow) and pinned from live traffic
  takes the reference read back instead, and its pin is withdrawn the moment that reference arrives (it is
  never written over the one on the topic).
* **A reset at time T** (a tombstone, written at T) removes the references pinned before T: the one the key
  holds, one waiting to be handed over or retried, one read back and not applied yet, and any read back later
  (a write that was in flight when the reset came). A reference pinned after T stands, and a pin of its own
  that a removed reference had withdrawn comes back. The times are the pinning worker's and the tombstone
  writer's clocks: they are assumed to agree to within seconds (NTP). Left open: a write in flight when the
  reset came lands after the tombstone on the topic; the running workers refuse it, and the next pin of the
  version supersedes it, but a worker that starts before that pin is written restores it.

:meth:`ReferenceKeeper.is_current` tells the worker whether a reference it holds for a write still stands.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np

from .contracts import PinnedReference

Key = tuple[str, ...]


class ReferencesMixin:
    """The methods of :class:`~detectors.contracts.KeepsReferences`, answered by ``self._references``."""

    _references: ReferenceKeeper

    def pinned_references(self) -> list[PinnedReference]:
        return self._references.take_pinned()

    def restore_references(self, references: Sequence[PinnedReference]) -> None:
        self._references.offer(references)

    def forget_reference(self, key: tuple[str, ...], at: float | None = None) -> None:
        self._references.forget(key, at)

    def reference_counts(self) -> dict[str, int]:
        return self._references.counts()

    def reference_is_current(self, reference: PinnedReference) -> bool:
        return self._references.is_current(reference)


class ReferenceKeeper:
    def __init__(self, detector: str):
        self.detector = detector
        self._lock = threading.Lock()
        self._restored: dict[Key, PinnedReference] = {}  # read back, waiting for the next batch
        self._replace: set[Key] = set()  # keys whose own pin a reference read back replaces at the next batch
        self._forgotten: list[tuple[Key, float]] = []  # resets (key, time), waiting for the next batch
        self._floor: dict[Key, float] = {}  # the latest reset of each key: references pinned before it are gone
        self._pinned: list[PinnedReference] = []  # pinned here, waiting to be handed over
        self._held: dict[Key, float] = {}  # when the reference each key holds was pinned (own or restored): its identity
        self._withdrawn: dict[Key, PinnedReference] = {}  # own pins a reference read back withdrew, until it is applied
        self._counts = {"pinned": 0, "restored": 0, "refused": 0, "forgotten": 0}

    # -- any thread ------------------------------------------------------------------------------

    def offer(self, references: Sequence[PinnedReference]) -> None:
        """References read back, in the topic's order (the last of a key wins). One pinned before the key's last
        reset is refused; one for a key whose own pin waits to be handed over withdraws that pin now."""
        with self._lock:
            for ref in references:
                if ref.detector != self.detector:
                    continue
                key = tuple(ref.key)
                if ref.pinned_at < self._floor.get(key, float("-inf")):
                    self._counts["refused"] += 1  # a write that was in flight when the reset came
                    continue
                self._restored[key] = ref
                own = next((p for p in self._pinned if p.key == key), None)
                if own is not None:
                    self._pinned = [p for p in self._pinned if p.key != key]
                    self._withdrawn[key] = own
                    self._held[key] = ref.pinned_at
                    self._replace.add(key)

    def forget(self, key: Key, at: float | None = None) -> None:
        """A reset at ``at`` (default: now): every reference of ``key`` pinned before it goes (see the module)."""
        key, at = tuple(key), time.time() if at is None else at
        with self._lock:
            if at <= self._floor.get(key, float("-inf")):
                return  # this reset, or a later one, is applied already (a tombstone written again, or read again)
            self._floor[key] = at
            self._pinned = [p for p in self._pinned if p.key != key or p.pinned_at >= at]
            held = self._held.get(key)
            if held is not None and held < at:
                del self._held[key]
            waiting = self._restored.get(key)
            if waiting is not None and waiting.pinned_at < at:
                del self._restored[key]
                self._replace.discard(key)
                own = self._withdrawn.pop(key, None)
                if own is not None and own.pinned_at >= at:  # the pin it withdrew came after the reset: it stands
                    self._pinned.append(own)
                    self._held[key] = own.pinned_at
            self._forgotten.append((key, at))

    def reset_at(self, key: Key) -> float | None:
        """The time of the key's latest reset, if any."""
        with self._lock:
            return self._floor.get(tuple(key))

    def give_back(self, key: Key) -> None:
        """The detector refused the reference that withdrew its own pin: the pin is handed over after all, as pinned
        (unless a reset since removed it)."""
        key = tuple(key)
        with self._lock:
            own = self._withdrawn.pop(key, None)
            if own is not None and own.pinned_at >= self._floor.get(key, float("-inf")):
                self._pinned.append(own)
                self._held[key] = own.pinned_at

    def withdraw(self, key: Key) -> None:
        """The detector dropped the key's reference (its embedding's dimension changed): nothing of it is handed over."""
        key = tuple(key)
        with self._lock:
            self._held.pop(key, None)
            self._withdrawn.pop(key, None)
            self._pinned = [p for p in self._pinned if p.key != key]

    def is_current(self, ref: PinnedReference) -> bool:
        """Whether ``ref`` is still the reference its key holds (no reset, no reference read back replaced it)."""
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
        """The detector pinned ``rows`` as ``key``'s reference: hand it to the worker, unless a reference read back
        for the key waits to be applied (it replaces this pin at the next batch)."""
        ref = PinnedReference(self.detector, tuple(key), space, np.asarray(rows), time.time())
        with self._lock:
            self._counts["pinned"] += 1
            waiting = self._restored.get(ref.key)
            if waiting is not None:
                self._withdrawn[ref.key] = ref
                self._held[ref.key] = waiting.pinned_at
                self._replace.add(ref.key)
                return
            self._pinned.append(ref)
            self._held[ref.key] = ref.pinned_at

    def take_changes(self) -> tuple[list[Key], dict[Key, PinnedReference]]:
        """(keys to reset, references read back) since the last call: resetting comes first. A reset is left out for a
        key that has pinned a reference since (after the reset's time: it stands)."""
        with self._lock:
            if not self._restored and not self._forgotten:
                return [], {}
            forgotten: list[Key] = []
            for key, at in self._forgotten:
                held = self._held.get(key)
                if (held is None or held < at) and key not in forgotten:
                    forgotten.append(key)
            restored = self._restored
            self._forgotten, self._restored = [], {}
            self._counts["forgotten"] += len(forgotten)
            return forgotten, restored

    def should_adopt(self, key: Key, has_own: bool) -> bool:
        """Whether a reference read back becomes ``key``'s: the key holds none, or only a pin of its own that the
        reference withdrew (see :meth:`offer`)."""
        key = tuple(key)
        with self._lock:
            if key in self._replace:
                self._replace.discard(key)
                return True
            return not has_own

    def adopt(self, key: Key, ref: PinnedReference) -> None:
        """The detector took ``ref`` as ``key``'s reference."""
        with self._lock:
            self._withdrawn.pop(tuple(key), None)
            self._held[tuple(key)] = ref.pinned_at
            self._counts["restored"] += 1

    def refused(self, n: int = 1) -> None:
        with self._lock:
            self._counts["refused"] += n
