"""How the worker stops: cleanly on SIGTERM or SIGINT (faust's stop: its last commit, its metrics), and within
``shutdown_timeout_s`` of the signal whatever happens. Without its broker faust's clean stop can wait forever (a
worker orphaned that way ran on for half an hour); past the timeout the process exits with status 75, and what it
had not committed is processed again by the partitions' next owner (at least once; finding ids are deterministic).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

log = logging.getLogger(__name__)

# The worker's exit status when it did not stop within shutdown_timeout_s of a signal (EX_TEMPFAIL).
EXIT_STOP_TIMED_OUT = 75
_stop_deadline: threading.Timer | None = None
_stopped_cleanly = threading.Event()  # faust's stop is done: its last commit made, the event loop closed


def exit_unless_stopped(timeout_s: float) -> None:
    """Exit the process ``timeout_s`` from now unless it has ended by then (the first call arms it; later ones do
    nothing). Nothing is lost: offsets not committed are processed again by the partitions' next owner."""
    global _stop_deadline
    if _stop_deadline is not None:
        return

    def fire() -> None:
        # Logging takes its handlers' locks, which a stuck thread may hold: exit in 2 s whatever happens here.
        backstop = threading.Timer(2.0, os._exit, (EXIT_STOP_TIMED_OUT,))
        backstop.daemon = True
        backstop.start()
        if _stopped_cleanly.is_set():  # the clean stop was made; what is left (a busy thread's join at exit) is not
            log.warning("the worker stopped cleanly, but its process had not ended %.0f s after the signal: exiting", timeout_s)
            os._exit(0)
        log.critical(
            "the worker did not stop within %.0f s of the signal (is the broker reachable?): exiting without a clean "
            "stop; the partitions' next owner processes its uncommitted batches again",
            timeout_s,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_STOP_TIMED_OUT)

    _stop_deadline = threading.Timer(timeout_s, fire)
    _stop_deadline.daemon = True
    _stop_deadline.start()


def stopped_cleanly() -> None:
    """faust's stop is done: a process that lingers after this (a busy thread's join at exit) exits 0 at the deadline."""
    _stopped_cleanly.set()


def bounded_stop(faust_worker: type, timeout_s: float) -> Any:
    """A subclass of faust's worker class whose first SIGTERM or SIGINT also arms :func:`exit_unless_stopped`."""

    class BoundedStopWorker(faust_worker):
        def _on_sigterm(self) -> None:
            exit_unless_stopped(timeout_s)
            super()._on_sigterm()

        def _on_sigint(self) -> None:
            exit_unless_stopped(timeout_s)
            super()._on_sigint()

    return BoundedStopWorker
