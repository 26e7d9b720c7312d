"""Reading a topic back to its end, on any Kafka-protocol broker.

End offsets cannot be trusted on the embedded broker, so "the end" is found by writing a
marker first and reading until it comes back: on a one-partition topic everything written
before the marker has then been read. On the actions topic the marker is an
``agent_start`` record (an audit entry in its own right); on the compacted control topic
it is a tombstone with a marker key, which compaction removes.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from streams import kafka_clients
from streams.events.schema import ActionRecord
from streams.events.topics import topic_name
from streams.settings import Settings

log = logging.getLogger(__name__)

MARKER_KEY_PREFIX = b"__streamwarden_marker__:"


def producer(settings: Settings, client_id: str):
    return kafka_clients.producer(settings, client_id, linger_ms=0)


def consumer(settings: Settings, client_id: str):
    return kafka_clients.consumer(settings, client_id)


def read_until_marker(
    settings: Settings, role: str, marker_key: bytes, marker_value: bytes | None, on_record: Callable, timeout_s: float = 30.0, prod=None
):
    """Write a marker to the one-partition topic of ``role``, then hand every record before it
    to ``on_record(key, value)``. Returns the consumer, positioned just after the marker."""
    from kafka import TopicPartition

    topic = topic_name(settings, role)
    own = prod is None
    prod = prod or producer(settings, f"streamwarden-{role}-marker")
    try:
        prod.send(topic, key=marker_key, value=marker_value, partition=0).get(timeout=timeout_s)
    finally:
        if own:
            prod.close(timeout=5)
    cons = consumer(settings, f"streamwarden-{role}-reader")
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
                on_record(m.key, m.value)
    cons.close()
    raise TimeoutError(f"did not read back the marker on {topic} within {timeout_s:.0f}s")


def parse_action(value: bytes | None) -> ActionRecord | None:
    if not value:
        return None
    try:
        return ActionRecord.model_validate_json(value)
    except ValueError:
        log.warning("actions topic: a record that is not an ActionRecord was skipped")
        return None


def read_actions(settings: Settings, agent_id: str | None = None, timeout_s: float = 30.0, prod=None) -> tuple[list[ActionRecord], Any]:
    """Every action record so far (oldest first, earlier ``agent_start`` markers included), after writing one."""
    start = ActionRecord(action="agent_start", action_id=f"agent-start-{uuid.uuid4().hex}", by=agent_id or "reader")
    out: list[ActionRecord] = []

    def keep(key, value):
        rec = parse_action(value)
        if rec is not None:
            out.append(rec)

    cons = read_until_marker(settings, "actions", start.action_id.encode(), start.model_dump_json().encode(), keep, timeout_s, prod)
    return out, cons


def action_json(rec: ActionRecord) -> bytes:
    return json.dumps(rec.model_dump(mode="json"), sort_keys=True).encode()
