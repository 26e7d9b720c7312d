"""Reading back what the monitor wrote (findings, dead letters, metrics, actions).

Used by the demo's live view, the CLI and the tests. It reads with *assigned* partitions
from the beginning, not with a consumer group: it is an observer, it commits nothing, and
it works on the embedded broker (whose group consumers get nothing from kafka-python).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from streams import kafka_clients
from streams.settings import Settings
from streams.worker.pipeline import HEADER_PREFIX

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputRecord:
    role: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]
    partition: int
    offset: int

    def json(self) -> Any:
        return json.loads(self.value) if self.value else None


@dataclass
class OutputTally:
    """Running counts of the outputs, deduplicated by id where the output has one."""

    finding_ids: set[str] = field(default_factory=set)
    findings_duplicated: int = 0
    findings_by_detector: Counter = field(default_factory=Counter)
    findings_by_kind: Counter = field(default_factory=Counter)
    findings_by_phase: Counter = field(default_factory=Counter)
    finding_event_ids: Counter = field(default_factory=Counter)
    dead_letters: int = 0
    dead_letter_reasons: Counter = field(default_factory=Counter)
    events_processed: int = 0
    metrics_records: int = 0
    unjudged: Counter = field(default_factory=Counter)  # events a detector left unjudged (its ration under load), by detector
    actions: int = 0
    action_log: list = field(default_factory=list)
    outcomes: dict = field(default_factory=dict)
    killswitch: dict = field(default_factory=dict)
    recent: deque = field(default_factory=lambda: deque(maxlen=8))

    def add(self, rec: OutputRecord, phase_of: Callable[[str], str | None] | None = None) -> None:
        if rec.role == "findings":
            f = rec.json()
            if f["finding_id"] in self.finding_ids:
                self.findings_duplicated += 1
                return
            self.finding_ids.add(f["finding_id"])
            self.findings_by_detector[f["detector"]] += 1
            self.findings_by_kind[f"{f['detector']}.{f['kind']}"] += 1
            if f.get("event_id"):
                self.finding_event_ids[f["event_id"]] += 1
                if phase_of is not None:
                    self.findings_by_phase[(phase_of(f["event_id"]) or "unknown", f"{f['detector']}.{f['kind']}")] += 1
            self.recent.append(f)
        elif rec.role == "deadletter":
            self.dead_letters += 1
            self.dead_letter_reasons[rec.headers.get(HEADER_PREFIX + "reason_code", "?")] += 1
        elif rec.role == "metrics":
            m = rec.json()
            self.metrics_records += 1
            if m["scope"] == "model":
                self.events_processed += m["events"]
                self.unjudged.update(m.get("unjudged") or {})
        elif rec.role == "actions":
            a = rec.json()
            if not a or a.get("action") == "agent_start":
                return
            if a["action"] == "outcome":
                self.outcomes[a["action_id"]] = a.get("results", {})
                return
            self.actions += 1
            self.action_log.append(a)
        elif rec.role == "control" and rec.key and not rec.key.startswith(b"__streamwarden_marker__"):
            self.killswitch[rec.key.decode("utf-8", "replace")] = rec.json()


class OutputReader:
    """Polls the output topics in a background thread and hands each record to ``on_record``."""

    def __init__(self, settings: Settings, roles: Iterable[str], on_record: Callable[[OutputRecord], None]):
        from streams.events.topics import topic_specs

        specs = topic_specs(settings)
        self.settings = settings
        self._by_topic = {specs[r].name: r for r in roles}
        self._partitions = {specs[r].name: specs[r].partitions for r in roles}
        self._on_record = on_record
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamwarden-output-reader", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> OutputReader:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        from kafka import TopicPartition

        try:
            consumer = kafka_clients.consumer(self.settings, "streamwarden-output-reader")
            tps = [TopicPartition(t, p) for t, n in self._partitions.items() for p in range(n)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            while not self._stop.is_set():
                batches = consumer.poll(timeout_ms=200)
                for tp, messages in batches.items():
                    role = self._by_topic[tp.topic]
                    for m in messages:
                        headers = {k: v.decode("utf-8", "replace") for k, v in (m.headers or [])}
                        self._on_record(OutputRecord(role, m.key, m.value, headers, m.partition, m.offset))
            consumer.close()
        except BaseException as exc:
            self.error = exc
            log.exception("output reader stopped")
