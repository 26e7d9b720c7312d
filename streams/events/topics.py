"""The topics streamwarden reads and writes, named with a configurable prefix.

=============  ===========================================================  ============
role           what flows                                                   key
=============  ===========================================================  ============
inference      InferenceEvent JSON from the tap / gateway / replay          event_id
deadletter     a rejected record (redacted or exact), reason in headers     original key
findings       Finding JSON, one per thing a detector found                 event_id
metrics        windowed MetricsRecord JSON per (model, model_version)       model|version
actions        decisions of the policy (the durable audit log)              action_id
control        kill-switch state per model (compacted)                      model
drift          interval samples of embeddings from every worker             model|ver|field
references     the reference windows drift detectors pinned (compacted)     [detector, model, ver(, field)]
otlp           OTLP ExportTraceServiceRequests (GenAI spans), from a        trace id
               Collector's kafka exporter or ``streamwarden otlp receive``
=============  ===========================================================  ============

The OTLP topic is named by ``otlp_topic`` (default ``<prefix>otlp``) and exists while
``otlp_enabled`` is on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from streams import kafka_clients
from streams.settings import Settings

log = logging.getLogger(__name__)

ROLES = ("inference", "deadletter", "findings", "metrics", "actions", "control", "drift", "references", "otlp")


@dataclass(frozen=True)
class TopicSpec:
    role: str
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings) -> dict[str, TopicSpec]:
    p = settings.topic_prefix
    out = settings.output_partitions
    specs = {
        "inference": TopicSpec("inference", f"{p}inference", settings.input_partitions),
        "deadletter": TopicSpec("deadletter", f"{p}deadletter", out, {"retention.ms": str(30 * 24 * 3600 * 1000)}),
        "findings": TopicSpec("findings", f"{p}findings", out),
        "metrics": TopicSpec("metrics", f"{p}metrics", out),
        "actions": TopicSpec("actions", f"{p}actions", 1, {"retention.ms": "-1"}),
        "control": TopicSpec("control", f"{p}control", 1, {"cleanup.policy": "compact"}),
        "drift": TopicSpec("drift", f"{p}drift", out, {"retention.ms": str(6 * 3600 * 1000)}),
        "references": TopicSpec("references", f"{p}references", 1, {"cleanup.policy": "compact"}),
    }
    if settings.otlp_enabled:
        specs["otlp"] = TopicSpec("otlp", settings.otlp_topic_name, settings.input_partitions)
    return specs


def topic_name(settings: Settings, role: str) -> str:
    return topic_specs(settings)[role].name


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; returns the names it created.

    Existing topics are left as they are (their partition count is the operator's).
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = kafka_clients.admin(settings, timeout_s)
    try:
        existing = set(admin.list_topics())
        replication = settings.effective_replication_factor or -1
        wanted = [
            NewTopic(
                spec.name,
                spec.partitions,
                replication,
                topic_configs={} if settings.embedded else spec.config,
            )
            for spec in topic_specs(settings).values()
            if spec.name not in existing
        ]
        created = []
        for topic in wanted:
            try:
                admin.create_topics([topic], timeout_ms=int(timeout_s * 1000))
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("created topics: %s", ", ".join(created))
        return created
    finally:
        admin.close()


def produce(settings: Settings, role: str, items, timeout_s: float = 30.0) -> int:
    """Send (key, value[, headers]) items to the topic of ``role`` and wait for them; returns how many."""
    producer = kafka_clients.producer(settings, f"streamwarden-{role}")
    try:
        futures = [
            producer.send(topic_name(settings, role), key=item[0], value=item[1], headers=list(item[2]) if len(item) > 2 else None)
            for item in items
        ]
        producer.flush(timeout=timeout_s)
        for f in futures:
            f.get(timeout=timeout_s)
        return len(futures)
    finally:
        producer.close(timeout=5)


# -- reading a one-partition topic back to its end, on any Kafka-protocol broker ----------------
#
# End offsets cannot be trusted on the embedded broker, so "the end" is found by writing a marker first
# and reading until it comes back: on a one-partition topic everything written before the marker has
# then been read. On a compacted topic (control, references) the marker is a tombstone with a marker
# key, which compaction removes.

MARKER_KEY_PREFIX = b"__streamwarden_marker__:"


def read_until_marker(
    settings: Settings,
    role: str,
    marker_key: bytes,
    marker_value: bytes | None,
    on_record: Callable,
    timeout_s: float = 30.0,
    prod=None,
    with_offsets: bool = False,
):
    """Write a marker to the one-partition topic of ``role``, then hand every record before it
    to ``on_record(key, value)`` (``on_record(key, value, offset, timestamp_ms)`` with ``with_offsets``). Returns the
    consumer, positioned just after the marker; closes it if reading fails."""
    from kafka import TopicPartition

    topic = topic_name(settings, role)
    own = prod is None
    prod = prod or kafka_clients.producer(settings, f"streamwarden-{role}-marker", linger_ms=0)
    try:
        prod.send(topic, key=marker_key, value=marker_value, partition=0).get(timeout=timeout_s)
    finally:
        if own:
            prod.close(timeout=5)
    cons = kafka_clients.consumer(settings, f"streamwarden-{role}-reader")
    try:
        tp = TopicPartition(topic, 0)
        cons.assign([tp])
        cons.seek_to_beginning(tp)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for messages in cons.poll(timeout_ms=200).values():
                for m in messages:
                    if m.key == marker_key:
                        cons.seek(tp, m.offset + 1)
                        return cons
                    if with_offsets:
                        on_record(m.key, m.value, m.offset, m.timestamp)
                    else:
                        on_record(m.key, m.value)
    except BaseException:
        cons.close()
        raise
    cons.close()
    raise TimeoutError(f"did not read back the marker on {topic} within {timeout_s:.0f}s")


class TopicWatcher:
    """A background thread that reads one compacted topic to its end (:func:`read_until_marker`), then keeps
    following it: the thread's life (``start``, ``stop``), ``ready`` (set once the first read reached the end) and
    ``error`` (what stopped it, or what it is retrying), shared by the kill-switch and reference watchers. A
    subclass writes ``_run``, and calls :meth:`_follow` to poll a consumer until stopped."""

    thread_name = "streamwarden-topic-watcher"

    def __init__(self, settings: Settings, poll_ms: int):
        self.settings = settings
        self._poll_ms = poll_ms
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)

    def start(self) -> Self:
        """Start reading (once; later calls do nothing)."""
        if self._thread.ident is None:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # never started: nothing to wait for
            self._thread.join(5)

    def _follow(self, consumer: Any, on_message: Callable[[Any], None]) -> None:  # a kafka-python consumer and its records
        """Hand every new message of ``consumer`` to ``on_message`` until :meth:`stop`."""
        while not self._stop.is_set():
            for messages in consumer.poll(timeout_ms=self._poll_ms).values():
                for message in messages:
                    on_message(message)

    def _run(self) -> None:
        raise NotImplementedError
