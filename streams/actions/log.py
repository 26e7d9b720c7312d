"""The actions topic, read back to its end (``streams.events.topics.read_until_marker``): on it the
marker is an ``agent_start`` record, an audit entry in its own right."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from streams import kafka_clients
from streams.events.schema import ActionRecord
from streams.events.topics import read_until_marker
from streams.settings import Settings

log = logging.getLogger(__name__)


def producer(settings: Settings, client_id: str):
    return kafka_clients.producer(settings, client_id, linger_ms=0)


def consumer(settings: Settings, client_id: str):
    return kafka_clients.consumer(settings, client_id)


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
