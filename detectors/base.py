"""The contract every detector keeps: a batch of events in, a list of findings out.

This package is a pure library. It never imports Kafka, faust or anything of
``streams``: the worker adapts Kafka records to :class:`EventLike` objects and
publishes the findings, so every detector can be used (and tested) on plain
Python objects.
"""

from __future__ import annotations

import abc
import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from .contracts import Gauge

FINDING_SCHEMA_VERSION = 1


class Severity(str, Enum):
    """How urgent a finding is; ordered from least to most severe."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {s: i for i, s in enumerate(Severity)}


@runtime_checkable
class EventLike(Protocol):
    """What a detector may read of an event (``streams.events.schema.InferenceEvent`` has it all)."""

    # Read-only: events are frozen (``InferenceEvent`` is a frozen pydantic model).
    @property
    def event_id(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def model_version(self) -> str: ...

    @property
    def route(self) -> str | None: ...

    @property
    def prompt_text(self) -> str: ...

    @property
    def response(self) -> str: ...

    @property
    def samples(self) -> Sequence[str]: ...

    @property
    def context(self) -> Sequence[str]: ...


def finding_id(detector: str, kind: str, *parts: str) -> str:
    """A deterministic id, so a re-processed event yields the same finding id (idempotent outputs)."""
    h = hashlib.blake2b(digest_size=16)
    for part in (detector, kind, *parts):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.hexdigest()


class Finding(BaseModel):
    """One thing a detector found: about one event, or about a window of events.

    Findings are published to Kafka and shown to people: they must never carry a raw
    personal value, only types, spans, masked forms or keyed hashes (see ``details``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = FINDING_SCHEMA_VERSION
    finding_id: str
    detector: str
    kind: str = Field(description="What was found, e.g. 'refusal', 'pii_leak', 'drift'.")
    severity: Severity
    score: float = Field(description="Detector-specific strength, higher = worse.")
    model: str
    model_version: str
    route: str | None = None
    event_id: str | None = Field(default=None, description="The event this is about; None for window-level findings.")
    summary: str
    details: Mapping[str, Any] = Field(default_factory=dict)
    detected_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))

    @classmethod
    def for_event(
        cls,
        event: EventLike,
        *,
        detector: str,
        kind: str,
        severity: Severity,
        score: float,
        summary: str,
        details: Mapping[str, Any] | None = None,
    ) -> Finding:
        return cls(
            finding_id=finding_id(detector, kind, event.event_id),
            detector=detector,
            kind=kind,
            severity=severity,
            score=float(score),
            model=event.model,
            model_version=event.model_version,
            route=event.route,
            event_id=event.event_id,
            summary=summary,
            details=dict(details or {}),
        )


class Detector(abc.ABC):
    """Base class of every detector.

    Subclasses implement :meth:`score_batch` and may set ``name`` (the detector of their
    findings, their metrics' label); without one, it is the class name in snake_case
    (``MyToxicityDetector`` -> ``my_toxicity_detector``). A detector sees a whole micro-batch
    at once so that model-backed detectors can run one forward pass per batch. It may raise:
    the worker isolates a failing detector from the others and from the stream. What else it
    can do, it declares by subclassing the protocols of :mod:`detectors.contracts`.
    """

    name: str = "detector"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = snake_case(cls.__name__)

    @abc.abstractmethod
    def score_batch(self, events: Sequence[EventLike]) -> list[Finding]:
        """Look at a batch of events and return what was found (possibly nothing)."""

    def warm_up(self) -> None:
        """Load models and build what the first batch would otherwise pay for (default: nothing)."""

    def gauges(self) -> list[Gauge]:
        """Current values the worker exports as Prometheus gauges ``streamwarden_<name>``
        (see :class:`~detectors.contracts.ExposesGauges`). Default: none."""
        return []

    def describe(self) -> Mapping[str, Any]:
        """A short, JSON-able description for logs and the CLI."""
        return {"name": self.name, "class": type(self).__qualname__}


def snake_case(name: str) -> str:
    """``PIILeakDetector`` -> ``pii_leak_detector``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()
