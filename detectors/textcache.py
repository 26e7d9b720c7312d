"""A bounded cache of what a detector computed from a text, kept by a keyed hash of the text, never the text.

The monitor keeps no prompt or response longer than its batch, yet some pure-Python steps are asked about the
same text again: a canned answer repeats, and two detectors (or one detector twice a batch) ask about the same
response or prompt. :class:`HashedTextCache` answers those from the last ``size`` texts, the least recently used
dropped first. Its keys are BLAKE2b digests keyed with a secret of this process, so a short value (a number, a
name) cannot be confirmed from a memory dump by hashing guesses. Thread-safe: the detectors' threads share it.
Used by VADER's sentiment (detectors.descriptors) and bias's group mentions (detectors.bias).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

V = TypeVar("V")


class HashedTextCache(Generic[V]):
    """``get(text, compute)``: ``compute()``'s value for ``text``, computed once while ``text`` is among the last
    ``size`` texts asked about (see the module)."""

    def __init__(self, size: int):
        self.size = size
        self._values: OrderedDict[bytes, V] = OrderedDict()
        self._lock = threading.Lock()
        self._secret = os.urandom(16)

    def key(self, text: str) -> bytes:
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16, key=self._secret).digest()

    def get(self, text: str, compute: Callable[[], V]) -> V:
        key = self.key(text)
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = compute()  # outside the lock: another thread may compute the same text meanwhile (same value)
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.size:
                self._values.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[bytes]:
        """The keys held (digests; a copy, safe while other threads add)."""
        with self._lock:
            return iter(list(self._values))
