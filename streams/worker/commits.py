"""Counting a batch once its offsets are committed: the worker's hook into faust's commits.

faust's consumer tells the app's :class:`faust.Monitor` about each offset commit
(``Monitor.on_tp_commit``; other sensors never hear of it). :class:`CommitMonitor` is the
worker's monitor, given to ``faust.App(monitor=...)``: it keeps everything faust's monitor
records and hands the committed offsets to a :class:`CommitGate`, which releases the
batches they cover, once each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from faust.sensors import Monitor

from streams.worker.pipeline import BatchResult, RawRecord


class CommitGate:
    """Holds each processed batch until Kafka has its offsets committed, then releases it once.

    Counting at commit time is what keeps metrics from counting an event twice after a crash:
    a worker that dies before committing never counted its uncommitted batches, and the worker
    that takes the partition over processes and counts them once. (The price: a crash in the
    milliseconds between a commit and the metrics send loses that commit interval's counts from
    the metrics topic; findings are never lost.)
    """

    def __init__(self, release: Callable[[BatchResult], None]):
        self._release = release
        self._pending: list[tuple[dict[tuple[str, int], int], BatchResult]] = []
        self.committed: dict[tuple[str, int], int] = {}

    def add(self, records: Iterable[RawRecord], result: BatchResult) -> None:
        high: dict[tuple[str, int], int] = {}
        for r in records:
            key = (r.topic, r.partition)
            high[key] = max(r.offset, high.get(key, -1))
        if not high or any(p < 0 for _, p in high) or any(o < 0 for o in high.values()):
            self._release(result)  # not from Kafka (direct calls): nothing to wait for
            return
        self._pending.append((high, result))

    def _done(self, high: dict[tuple[str, int], int]) -> bool:
        return all(self.committed.get(k, -1) > o for k, o in high.items())

    def on_commit(self, offsets: Mapping[Any, int | None]) -> int:
        """``offsets``: {(topic, partition) or TP: next offset to read}; returns the batches released."""
        for tp, offset in offsets.items():
            key = (tp[0], tp[1])
            if offset is not None and offset > self.committed.get(key, -1):
                self.committed[key] = offset
        ready: list[tuple[dict[tuple[str, int], int], BatchResult]] = []
        waiting: list[tuple[dict[tuple[str, int], int], BatchResult]] = []
        for item in self._pending:
            (ready if self._done(item[0]) else waiting).append(item)
        self._pending = waiting
        for _, result in ready:
            self._release(result)
        return len(ready)

    def forget(self, partitions: Iterable[Any]) -> int:
        """Partitions revoked from this worker: their uncommitted batches are the next owner's to count."""
        keys = {(tp[0], tp[1]) for tp in partitions}
        kept = [(h, r) for h, r in self._pending if not (set(h) & keys)]
        dropped = len(self._pending) - len(kept)
        self._pending = kept
        for key in keys:
            self.committed.pop(key, None)
        return dropped

    @property
    def pending(self) -> int:
        return len(self._pending)

    def pending_offsets(self) -> dict[tuple[str, int], int]:
        """The highest offset held back per (topic, partition)."""
        out: dict[tuple[str, int], int] = {}
        for high, _ in self._pending:
            for k, o in high.items():
                out[k] = max(o, out.get(k, -1))
        return out


class CommitMonitor(Monitor):
    """faust's monitor, which also feeds committed offsets to a :class:`CommitGate`.

    ``on_released`` runs on the event loop after a commit released at least one batch
    (the worker publishes their counts right away: the less time between a commit and the
    metrics, the less a crash loses).
    """

    def __init__(self, gate: CommitGate, on_released: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = gate
        self.on_released = on_released

    def on_tp_commit(self, tp_offsets: Any) -> None:
        super().on_tp_commit(tp_offsets)
        if self.gate.on_commit(tp_offsets):
            self.on_released()
