"""The tap: what a production service adds to send every prompt/response to Kafka.

    from streams.tap import Tap
    tap = Tap("kafka:9092")                      # once, at start-up
    tap.capture(model="chat-large", model_version="2024-06-01",
                prompt=prompt, response=answer, latency_ms=elapsed_ms)
    tap.close()                                   # at shutdown: flushes

It never blocks and never raises into the caller's request path: events go into a
bounded in-memory buffer and a background thread hands them to a kafka-python
producer. When the buffer is full (the broker is down or slow), new events are dropped
and counted (``tap.stats.dropped``); a broker that is down at start-up is retried with
backoff in the background. Validation happens in the worker, so a malformed event still
reaches Kafka and lands in the dead-letter topic with its reason instead of vanishing.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from streams.events.schema import InferenceEvent, utcnow
from streams.events.topics import topic_name
from streams.kafka_clients import producer_config
from streams.settings import Settings, load_settings

log = logging.getLogger(__name__)

_STOP = object()
_PRODUCER_DRAIN_S = 30.0  # at close, what the producer holds gets this long to be delivered or fail


@dataclass(frozen=True)
class TapStats:
    accepted: int  # taken into the buffer
    sent: int  # acknowledged by the broker
    dropped: int  # refused because the buffer was full, or left in it at close()
    failed: int  # the broker or producer reported an error
    queued: int  # still in the buffer


class Tap:
    """A non-blocking, bounded, background-flushing producer of :class:`InferenceEvent`."""

    def __init__(
        self,
        bootstrap: str | None = None,
        *,
        settings: Settings | None = None,
        topic: str | None = None,
        buffer: int | None = None,
        producer_overrides: Mapping[str, Any] | None = None,
    ):
        self.settings = settings or load_settings(bootstrap=bootstrap)
        if bootstrap is not None and settings is not None:
            self.settings = self.settings.model_copy(update={"bootstrap": bootstrap})
        self.topic = topic or topic_name(self.settings, "inference")
        self._config = {**producer_config(self.settings), **(producer_overrides or {})}
        self._queue: queue.Queue = queue.Queue(maxsize=buffer or self.settings.tap_buffer)
        self._lock = threading.Lock()
        self._accepted = self._sent = self._dropped = self._failed = 0
        self._dropped_after_accept = 0  # accepted, then dropped (left in the buffer at close)
        self._closed = False
        self._abandon = False
        self._producer = None
        self._thread = threading.Thread(target=self._run, name="streamwarden-tap", daemon=True)
        self._thread.start()

    # -- the caller's side: cheap, never raises ------------------------------------------

    def record(self, event: InferenceEvent | Mapping[str, Any] | bytes, *, wait_s: float = 0.0) -> bool:
        """Queue one event; returns False when it was dropped. Never raises.

        It never blocks unless ``wait_s`` > 0 asks it to wait that long for room in the
        buffer (for batch loaders such as ``tap replay``, never for a request path).
        """
        try:
            if self._closed:
                self._count(dropped=1)
                return False
            if isinstance(event, InferenceEvent):
                key, value = event.event_id, event.model_dump_json().encode()
            elif isinstance(event, bytes):
                key, value = None, event
            else:
                key = str(event.get("event_id")) if event.get("event_id") is not None else None
                value = json.dumps(event, default=str, ensure_ascii=False).encode("utf-8", "surrogatepass")
            item = (key.encode() if key else None, value)
            if wait_s > 0:
                self._queue.put(item, timeout=wait_s)
            else:
                self._queue.put_nowait(item)
            self._count(accepted=1)
            return True
        except queue.Full:
            self._count(dropped=1)
            return False
        except Exception:  # noqa: BLE001 - the request path must never see our errors
            log.warning("tap: could not serialise an event; dropped", exc_info=False)
            self._count(dropped=1)
            return False

    def capture(self, **fields: Any) -> str:
        """Build an event from keyword fields (``event_id`` and ``timestamp`` filled in) and queue it.

        Returns the event id. Fields that fail validation are still sent, as given, so that
        the worker dead-letters them with the reason.
        """
        fields.setdefault("event_id", uuid.uuid4().hex)
        fields.setdefault("timestamp", utcnow())
        try:
            self.record(InferenceEvent(**fields))
        except ValidationError:
            self.record(fields)
        except Exception:  # noqa: BLE001
            self._count(dropped=1)
        return str(fields["event_id"])

    @property
    def stats(self) -> TapStats:
        with self._lock:
            return TapStats(self._accepted, self._sent, self._dropped, self._failed, self._queue.qsize())

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything accepted so far was sent or failed; False on time-out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            s = self.stats
            if s.sent + s.failed + self._dropped_after_accept >= s.accepted:
                return True
            time.sleep(0.01)
        return False

    def close(self, timeout_s: float = 10.0) -> TapStats:
        """Flush what can be flushed within ``timeout_s``, stop, and return the final counts.

        Past ``timeout_s``, events still in the tap's buffer are dropped (counted); events the
        producer already holds are delivered or fail within its own timeouts (30 s at most), so
        the counts are final: every event is sent, failed or dropped, once.
        """
        if not self._closed:
            self._closed = True  # refuse new events; keep delivering the buffered ones
            self.flush(timeout_s)
            self._abandon = True  # past the deadline: stop waiting for a broker that is not there
            self._queue_stop()
            # The thread now drops what is left in the buffer and waits for what the producer holds.
            # (When no producer could be made, the broker is unreachable: nothing to wait for.)
            self._thread.join(max(0.1, timeout_s) + (_PRODUCER_DRAIN_S + 5 if self._producer is not None else 0))
            while True:  # empty the buffer so nothing is sent after close() returned
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            with self._lock:
                # Still buffered, or held by a thread still waiting for the broker: never delivered.
                undelivered = self._accepted - self._sent - self._failed - self._dropped_after_accept
            if undelivered > 0:
                log.warning("tap: %d events were not delivered by close() and are dropped", undelivered)
                self._count(dropped=undelivered, dropped_after_accept=undelivered)
        return self.stats

    def __enter__(self) -> Tap:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the background side -------------------------------------------------------------

    def _count(self, accepted=0, sent=0, dropped=0, failed=0, dropped_after_accept=0) -> None:
        with self._lock:
            self._accepted += accepted
            self._sent += sent
            self._dropped += dropped
            self._failed += failed
            self._dropped_after_accept += dropped_after_accept

    def _queue_stop(self) -> None:
        try:
            self._queue.put_nowait(_STOP)
        except queue.Full:
            pass  # the thread sees _closed and stops on its own

    def _connect(self):
        from kafka import KafkaProducer

        backoff = 0.2
        while not self._abandon:
            try:
                return KafkaProducer(**self._config)
            except Exception as exc:  # noqa: BLE001 - NoBrokersAvailable and friends
                log.warning("tap: broker not reachable (%s); retrying in %.1fs", type(exc).__name__, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        return None

    def _on_sent(self, _metadata) -> None:
        self._count(sent=1)

    def _on_error(self, exc) -> None:
        log.warning("tap: send failed: %s", type(exc).__name__)
        self._count(failed=1)

    def _drain_producer(self, producer) -> None:
        """Give what the producer holds time to be delivered or fail: as long as it makes progress
        (a slow broker), at most _PRODUCER_DRAIN_S; a broker that is down gets one second, not more."""
        deadline = time.monotonic() + _PRODUCER_DRAIN_S
        while True:
            before = self.stats
            try:
                producer.flush(timeout=1.0)
                return
            except Exception:  # noqa: BLE001 - KafkaTimeoutError: not all delivered yet
                now = self.stats
                if time.monotonic() > deadline or (now.sent, now.failed) == (before.sent, before.failed):
                    log.warning("tap: the producer still holds undelivered events at close")
                    return

    def _run(self) -> None:
        producer = None
        try:
            while True:
                try:
                    item = self._queue.get(timeout=0.1)
                except queue.Empty:
                    if self._abandon:
                        break
                    continue
                if item is _STOP:
                    break
                if self._abandon:  # close() ran out of time: what is still buffered is dropped
                    self._count(dropped=1, dropped_after_accept=1)
                    continue
                if producer is None:
                    producer = self._producer = self._connect()
                    if producer is None:  # abandoned by close() while the broker was down
                        break
                key, value = item
                try:
                    future = producer.send(self.topic, key=key, value=value)
                    future.add_callback(self._on_sent)
                    future.add_errback(self._on_error)
                except Exception as exc:  # noqa: BLE001
                    self._on_error(exc)
        finally:
            if producer is not None:
                # What the producer already holds is delivered or fails within its own request timeouts:
                # wait for that (bounded), so every event is counted once, sent or failed, before close()
                # returns. Only what was still in the tap's buffer at the deadline is dropped.
                self._drain_producer(producer)
                try:
                    producer.close(timeout=0)
                except Exception:  # noqa: BLE001
                    log.warning("tap: producer did not close cleanly", exc_info=False)
