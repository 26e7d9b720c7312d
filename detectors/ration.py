"""A ration for a costly model stage: which events it judges when it cannot judge them all.

A share of the events (chosen by a hash of the event id, so every worker and every replay picks the
same ones), a budget of units per second (NLI pairs, texts), and a share of the worker's time (seconds of
the model per second of wall clock, from what the calls measured or an estimate the caller keeps up to
date). Each budget is a token bucket holding ``burst_s`` seconds' worth (one by default). What it refuses goes to the
detector's cheap method, or is left unjudged and counted as such (``unjudged`` in the metrics: a rate
over that detector's findings divides by the events it judged). Used by the NLI stages of grounding and
consistency (:class:`detectors.nli.NLIRation`) and by toxicity's embedding head.
"""

from __future__ import annotations

import hashlib
import threading
import time

from .contracts import Gauge
from .errors import ConfigurationError


class Ration:
    """Which events get a costly stage (see the module). ``prefix`` names the settings in errors (``nli`` for
    ``nli_share``...) and ``gauge`` the gauge of its counts. A unit is what the stage costs per call: an NLI
    pair, a text to encode. Thread-safe."""

    PRIOR_SECONDS_PER_PAIR = 0.01  # seconds per unit until the first call is measured

    def __init__(
        self,
        share: float = 1.0,
        pairs_per_second: float | None = None,
        time_share: float | None = None,
        clock=time.monotonic,
        prefix: str = "nli",
        gauge: str = "nli_stage_events",
        units_per_second: str = "pairs_per_second",
        burst_s: float = 1.0,
        outcomes: tuple[str, ...] = ("admitted", "skipped_share", "skipped_budget"),
    ):
        if not 0.0 <= share <= 1.0:
            raise ConfigurationError(f"{prefix}_share must be within 0..1, got {share}")
        if pairs_per_second is not None and pairs_per_second <= 0:
            raise ConfigurationError(f"{prefix}_{units_per_second} must be positive or None, got {pairs_per_second}")
        if time_share is not None and not 0.0 < time_share <= 1.0:
            raise ConfigurationError(f"{prefix}_time_share must be within (0, 1] or None, got {time_share}")
        if burst_s < 1.0:
            raise ConfigurationError(f"{prefix}_burst_s must be at least 1 (one second's worth), got {burst_s}")
        self.gauge = gauge
        self.outcomes = outcomes  # the gauge's series
        self.burst_s = burst_s  # each bucket holds this many seconds' worth: a burst (a batch) above the rate still runs
        self.share = share
        self.rate = pairs_per_second
        self.time_share = time_share
        self._clock = clock
        self._tokens = float(pairs_per_second or 0.0) * burst_s
        self._seconds = float(time_share or 0.0) * burst_s
        self.seconds_per_pair = self.PRIOR_SECONDS_PER_PAIR
        self._last = clock()
        self._lock = threading.Lock()
        self.admitted = 0
        self.skipped_share = 0
        self.skipped_budget = 0
        self.free = 0  # judged at no model cost, where the caller counts them (toxicity: cached, already paid or empty)

    @property
    def limited(self) -> bool:
        """Whether it can refuse anything (a share below 1 or a budget)."""
        return self.share < 1.0 or self.rate is not None or self.time_share is not None

    @staticmethod
    def uniform(event_id: str, salt: bytes = b"") -> float:
        """A number in [0, 1) drawn from the event id (the same on every worker and replay); ``salt`` makes an
        independent draw."""
        return int.from_bytes(hashlib.blake2b(event_id.encode("utf-8"), digest_size=8, key=salt).digest(), "big") / 2**64

    def chosen(self, event_id: str) -> bool:
        """Is this event in the configured share?"""
        return self.share >= 1.0 or self.uniform(event_id) < self.share

    def count(self, outcome: str, n: int = 1) -> None:
        """Count a decision the caller made itself (one of ``outcomes``)."""
        with self._lock:
            setattr(self, outcome, getattr(self, outcome) + n)

    def _refill(self) -> None:
        """Fill the buckets for the time since the last call, up to ``burst_s`` seconds' worth (under the lock)."""
        now = self._clock()
        elapsed, self._last = now - self._last, now
        if self.rate is not None:
            self._tokens = min(self.rate * self.burst_s, self._tokens + elapsed * self.rate)
        if self.time_share is not None:
            self._seconds = min(self.time_share * self.burst_s, self._seconds + elapsed * self.time_share)

    def has_room(self) -> bool:
        """Whether the budgets could take one more unit now (spends nothing)."""
        if self.rate is None and self.time_share is None:
            return True
        with self._lock:
            self._refill()
            return (self.rate is None or self._tokens >= 1) and (self.time_share is None or self._seconds >= self.seconds_per_pair)

    def take(self, pairs: int) -> bool:
        """Spend ``pairs`` of the budgets if they have them (an unlimited budget always has). When a
        bucket is full, one request larger than it may run, and leaves it in debt. A bucket holds ``burst_s``
        seconds' worth."""
        if self.rate is None and self.time_share is None:
            return True
        with self._lock:
            self._refill()
            cost = pairs * self.seconds_per_pair
            ok = True
            if self.rate is not None:
                full = self.rate * self.burst_s
                ok = pairs <= self._tokens or (pairs > full and self._tokens >= full)
            if self.time_share is not None:
                full = self.time_share * self.burst_s
                ok = ok and (cost <= self._seconds or (cost > full and self._seconds >= full))
            if ok:
                self._tokens -= pairs
                self._seconds -= cost
            return ok

    def spent(self, seconds: float, pairs: int) -> None:
        """What an NLI call over ``pairs`` admitted pairs took: the time budget is charged the
        difference from its estimate, and the estimate follows (a moving average)."""
        if pairs <= 0:
            return
        with self._lock:
            if self.time_share is not None:
                self._seconds -= seconds - pairs * self.seconds_per_pair
            self.seconds_per_pair = 0.7 * self.seconds_per_pair + 0.3 * (seconds / pairs)

    def admit(self, event_id: str, pairs: int) -> bool:
        """Is this event in the share, and do the budgets take its ``pairs``? The decision is counted."""
        if not self.chosen(event_id):
            self.count("skipped_share")
            return False
        if not self.take(pairs):
            self.count("skipped_budget")
            return False
        self.count("admitted")
        return True

    def gauges(self, detector: str) -> list[Gauge]:
        """Events so far, by what the ration decided: ``streamwarden_<gauge>{detector, outcome}``."""
        with self._lock:
            counts = {k: getattr(self, k) for k in self.outcomes}
        return [Gauge(self.gauge, {"detector": detector, "outcome": k}, float(v)) for k, v in counts.items()]
