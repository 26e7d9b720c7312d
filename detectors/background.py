"""One background thread that runs a detector's slow jobs off the batch path, coalescing them per key.

:class:`CoalescingRunner` is owned by one detector. The batch path hands it jobs with
:meth:`~CoalescingRunner.submit` (a job is a closure over a snapshot the batch path took, so
the runner's thread never reads the detector's live windows) and collects what the jobs
returned with :meth:`~CoalescingRunner.drain`. Bounds: one job runs at a time, and at most one
waits per key; a job submitted while its key already waits replaces the waiting one (the
newer snapshot wins, the older is never run), so the queue never holds more than one job per
key. A job that raises is logged (its type and frames, never its message: it may quote event
text) and counted, and the thread goes on with the next. The thread is a daemon, started on
the first submit; :meth:`~CoalescingRunner.close` stops it.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


class CoalescingRunner(Generic[K, R]):
    """Runs ``job() -> list[R]`` on one daemon thread, one at a time, at most one waiting per key.

    Thread-safe: every method may be called from any thread but the runner's own.
    ``counts`` (read it with :meth:`counts`): submitted, coalesced, ran, failed, dropped.
    """

    def __init__(self, name: str):
        self.name = name
        self._cv = threading.Condition()
        self._waiting: dict[K, Callable[[], list[R]]] = {}  # key -> its newest job; first submitted runs first
        self._busy = False
        self._results: list[R] = []
        self._counts: Counter[str] = Counter()
        self._failed: Counter[K] = Counter()
        self._closed = False
        self._thread: threading.Thread | None = None

    def submit(self, key: K, job: Callable[[], list[R]]) -> bool:
        """Queue ``job`` for ``key`` (replacing the job of ``key`` still waiting, if any); False once closed."""
        with self._cv:
            if self._closed:
                self._counts["dropped"] += 1
                return False
            self._counts["submitted"] += 1
            if key in self._waiting:
                self._counts["coalesced"] += 1
            self._waiting[key] = job
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=f"{self.name}-background", daemon=True)
                self._thread.start()
            self._cv.notify_all()
            return True

    def drain(self, timeout: float | None = None) -> list[R]:
        """Wait up to ``timeout`` seconds (None: as long as it takes) until no job waits or runs,
        then return what the jobs completed so far returned, each result once. ``drain(0)`` never waits."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while (self._waiting or self._busy) and self._thread is not None and self._thread.is_alive():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cv.wait(0.1 if left is None else min(left, 0.1))  # in slices: a thread that died notifies no one
            out, self._results = self._results, []
        return out

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread: jobs still waiting are dropped, the one running gets ``timeout`` seconds to
        finish (its results stay for :meth:`drain`); past that it is left to finish alone (a daemon, it
        never holds the process). Later submits are dropped. Calling it again does no harm."""
        with self._cv:
            self._closed = True
            self._counts["dropped"] += len(self._waiting)
            self._waiting.clear()
            self._cv.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s: a background run is still going %.1fs after close; not waiting for it", self.name, timeout)

    def counts(self) -> dict[str, int]:
        """submitted, coalesced (replaced while waiting), ran (failed included), failed, dropped (by close)."""
        with self._cv:
            return {k: self._counts[k] for k in ("submitted", "coalesced", "ran", "failed", "dropped")}

    def failures(self) -> dict[K, int]:
        """Failed runs per key."""
        with self._cv:
            return dict(self._failed)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._waiting and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                key = next(iter(self._waiting))
                job = self._waiting.pop(key)
                self._busy = True
            out: list[R] = []
            try:
                out = job()
            except Exception as exc:  # noqa: BLE001 - a failed run must not stop the thread or the next runs
                with self._cv:
                    self._counts["failed"] += 1
                    self._failed[key] += 1
                log.error(
                    "%s: a background run for %s failed: %s\n%s",
                    self.name,
                    key,
                    type(exc).__name__,
                    "".join(traceback.format_tb(exc.__traceback__)),
                )
            finally:
                with self._cv:
                    self._busy = False
                    self._counts["ran"] += 1
                    self._results.extend(out)
                    self._cv.notify_all()


class BackgroundRunsMixin:
    """The :class:`~detectors.contracts.RunsInBackground` methods of a detector whose slow jobs go to the
    :class:`CoalescingRunner` in ``_runner`` (None: the detector runs them inline, and these have nothing to do)."""

    _runner: CoalescingRunner | None = None

    @property
    def background(self) -> bool:
        return self._runner is not None

    def drain(self, timeout: float | None = None) -> list:
        return self._runner.drain(timeout) if self._runner is not None else []

    def close(self, timeout: float = 5.0) -> None:
        if self._runner is not None:
            self._runner.close(timeout)

    def run_counts(self) -> dict[str, int]:
        """The background runs so far: submitted, coalesced, ran, failed, dropped (all 0 inline)."""
        if self._runner is None:
            return dict.fromkeys(("submitted", "coalesced", "ran", "failed", "dropped"), 0)
        return self._runner.counts()
