"""The records that cross Kafka: the inference event producers send, and what the worker emits.

Field names follow the OpenTelemetry GenAI semantic conventions where one exists; each
such field names its attribute under ``x-otel`` in the exported JSON Schema
(``streams/events/jsonschema/``), e.g. ``model`` is ``gen_ai.request.model`` and
``input_tokens`` is ``gen_ai.usage.input_tokens``. Fields without an OTel attribute
(``model_version``, ``route``, ``samples``, ``context``) are streamwarden's own.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

SCHEMA_VERSION = 1
JSONSCHEMA_DIR = Path(__file__).with_name("jsonschema")
JSONSCHEMA_FILE = JSONSCHEMA_DIR / f"inference_event.v{SCHEMA_VERSION}.json"

# Bounds that keep one event from exhausting a worker; the byte limit of a whole record
# is a setting (``max_event_bytes``), checked before parsing.
MAX_TEXT_CHARS = 200_000
MAX_SAMPLES = 64
MAX_CONTEXT_DOCS = 64
MAX_MESSAGES = 256
MAX_METADATA_KEYS = 64

Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]
# The characters ``strip_whitespace`` strips: Unicode White_Space, as Rust's ``str::trim`` in
# pydantic-core. Spelled as ``\u`` escapes, which ECMA-262, Python's ``re`` and Rust's regex read
# alike; ``\s`` would not do: Python's also matches U+001C-U+001F, ECMA-262's also U+FEFF.
WHITESPACE = r"\u0009-\u000d\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# A name is not blank: in the JSON Schema, the pattern says what stripping and min_length enforce.
NOT_BLANK = f"[^{WHITESPACE}]"
Name = Annotated[str, StringConstraints(min_length=1, max_length=256, strip_whitespace=True, pattern=NOT_BLANK)]
MetadataValue = str | int | float | bool | None


def _otel(attribute: str) -> dict[str, Any]:
    return {"x-otel": attribute}


class ChatMessage(BaseModel):
    """One message of a chat prompt (``gen_ai.input.messages``: role and text content)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Text


class InferenceEvent(BaseModel):
    """One prompt/response of a deployed model, as tapped into Kafka."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="InferenceEvent",
        json_schema_extra={"$id": f"https://streamwarden.dev/schemas/inference_event.v{SCHEMA_VERSION}.json"},
    )

    schema_version: Literal[1] = Field(default=1, description="Version of this schema.")
    event_id: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")] = Field(
        description="Client-generated unique id (e.g. a UUID); the key of idempotency downstream."
    )
    timestamp: AwareDatetime = Field(description="When the response completed, with a time zone (ISO 8601).")
    model: Name = Field(description="The model that was asked.", json_schema_extra=_otel("gen_ai.request.model"))
    model_version: Name = Field(description="The deployed version of that model (release, checkpoint, rollout).")
    route: Name = Field(default="default", description="The deployment/route/endpoint that served the request.")
    provider: Name | None = Field(default=None, json_schema_extra=_otel("gen_ai.provider.name"))
    operation: Literal["chat", "text_completion", "generate_content"] = Field(
        default="chat", json_schema_extra=_otel("gen_ai.operation.name")
    )
    prompt: Text | Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)] = Field(
        description="The prompt: plain text, or the chat messages.", json_schema_extra=_otel("gen_ai.input.messages")
    )
    response: Text = Field(description="The response text.", json_schema_extra=_otel("gen_ai.output.messages"))
    samples: Annotated[list[Text], Field(max_length=MAX_SAMPLES)] = Field(
        default_factory=list, description="Extra sampled responses to the same prompt (for self-consistency)."
    )
    context: Annotated[list[Text], Field(max_length=MAX_CONTEXT_DOCS)] = Field(
        default_factory=list, description="Documents given to the model (retrieval context)."
    )
    latency_ms: float | None = Field(default=None, ge=0, le=86_400_000, description="End-to-end latency.")
    input_tokens: int | None = Field(default=None, ge=0, json_schema_extra=_otel("gen_ai.usage.input_tokens"))
    output_tokens: int | None = Field(default=None, ge=0, json_schema_extra=_otel("gen_ai.usage.output_tokens"))
    finish_reason: Name | None = Field(default=None, json_schema_extra=_otel("gen_ai.response.finish_reasons"))
    conversation_id: Name | None = Field(default=None, json_schema_extra=_otel("gen_ai.conversation.id"))
    error_type: Name | None = Field(
        default=None,
        description="Set when the request failed (e.g. 'timeout', '500'); the response is then what the user got, if anything.",
        json_schema_extra=_otel("error.type"),
    )
    feedback: Literal["positive", "negative", "complaint"] | None = Field(
        default=None, description="The user's verdict on the response, when the application collects one."
    )
    metadata: dict[Annotated[str, StringConstraints(max_length=128)], MetadataValue] = Field(
        default_factory=dict, description="Free key/value pairs (flat, scalar values)."
    )

    @field_validator("metadata")
    @classmethod
    def _bounded_metadata(cls, value: dict[str, MetadataValue]) -> dict[str, MetadataValue]:
        if len(value) > MAX_METADATA_KEYS:
            raise ValueError(f"at most {MAX_METADATA_KEYS} metadata keys")
        for v in value.values():
            if isinstance(v, str) and len(v) > 4096:
                raise ValueError("metadata string values are limited to 4096 characters")
        return value

    @property
    def prompt_text(self) -> str:
        """The prompt as one text (chat messages joined, one per line)."""
        if isinstance(self.prompt, str):
            return self.prompt
        return "\n".join(m.content for m in self.prompt)

    @property
    def user_text(self) -> str:
        """What the user typed: the user messages of a chat, or the whole text prompt."""
        if isinstance(self.prompt, str):
            return self.prompt
        return "\n".join(m.content for m in self.prompt if m.role == "user")


def json_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`InferenceEvent` that non-Python producers validate against."""
    schema = InferenceEvent.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def render_json_schema() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def write_json_schema(path: Path = JSONSCHEMA_FILE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_json_schema(), encoding="utf-8")
    return path


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class LatencySummary(BaseModel):
    """Latency of one window as a fixed-bucket histogram, so partial windows of many workers add up."""

    model_config = ConfigDict(extra="forbid")

    BOUNDS_MS: ClassVar[tuple[float, ...]] = (50, 100, 250, 500, 1000, 2000, 5000, 10000, 30000, float("inf"))

    count: int = 0
    sum_ms: float = 0.0
    buckets: list[int] = Field(default_factory=lambda: [0] * len(LatencySummary.BOUNDS_MS))

    def observe(self, value_ms: float) -> None:
        self.count += 1
        self.sum_ms += value_ms
        for i, bound in enumerate(self.BOUNDS_MS):
            if value_ms <= bound:
                self.buckets[i] += 1
                break

    def merge(self, other: LatencySummary) -> None:
        self.count += other.count
        self.sum_ms += other.sum_ms
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets)]

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding quantile ``q`` (None when empty)."""
        if self.count == 0:
            return None
        rank = q * self.count
        seen = 0
        for bound, n in zip(self.BOUNDS_MS, self.buckets):
            seen += n
            if seen >= rank:
                return bound
        return self.BOUNDS_MS[-1]


class MetricsRecord(BaseModel):
    """One worker's counts for one window, per (model, model_version) or for the pipeline.

    Counts are additive: several workers publish partial windows of the same time span,
    and a reader sums them by (scope, model, model_version, window_start).
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    scope: Literal["model", "pipeline"]
    model: str = ""
    model_version: str = ""
    route: str = ""
    worker_id: str
    window_start: datetime
    window_end: datetime
    events: int = 0
    findings: dict[str, int] = Field(default_factory=dict, description="Counts keyed 'detector.kind'.")
    findings_by_severity: dict[str, int] = Field(default_factory=dict)
    finding_severities: dict[str, dict[str, int]] = Field(default_factory=dict, description="Counts keyed 'detector.kind', then severity.")
    errors: int = Field(default=0, description="Events with an error_type.")
    complaints: int = Field(default=0, description="Events with feedback 'complaint'.")
    unjudged: dict[str, int] = Field(
        default_factory=dict,
        description="Events a detector left unjudged (its ration under load refused them, it had nothing to judge them on "
        "(grounding: no context documents), or it failed on their batch), "
        "by detector: a finding_rate over one detector's findings divides by the events it judged.",
    )
    gauges: dict[str, float] = Field(
        default_factory=dict, description="Detector gauges of this model version at the window's end, keyed 'name{label=value,...}'."
    )
    latency: LatencySummary = Field(default_factory=LatencySummary)
    response_chars: int = 0
    output_tokens: int = 0
    # Pipeline scope only.
    batches: int = 0
    dead_letters: dict[str, int] = Field(default_factory=dict, description="Counts keyed by reason code.")
    detector_errors: dict[str, int] = Field(default_factory=dict)
    duplicates: int = 0

    @classmethod
    def from_wire(cls, value: bytes) -> tuple[MetricsRecord, list[str]]:
        """A record read from the metrics topic, and the fields it carried that this release does not know.

        Added fields (top-level or in ``latency``) keep ``schema_version`` 1 and are left out here, so a policy agent
        reads a newer worker's records as its own release's (an ``unjudged`` unknown to it means dividing by every
        event, as before it existed). A change that readers must not ignore (a new meaning, a new ``scope``) bumps
        ``schema_version``, which is refused. Records are still built strictly: a writer's typo fails. Every
        refusal is a ValueError.
        """
        try:
            data = json.loads(value)
        except RecursionError as exc:  # nested beyond the parser's depth: not a metrics record
            raise ValueError("a metrics record nested too deep") from exc
        if not isinstance(data, dict):
            raise ValueError("a metrics record is a JSON object")
        unknown = _drop_unknown(cls, data, "")
        return cls.model_validate(data), unknown

    @property
    def key(self) -> str:
        return f"{self.model}|{self.model_version}" if self.scope == "model" else "_pipeline"

    @property
    def route_key(self) -> tuple[str, str, str]:
        return (self.model, self.model_version, self.route)


ActionKind = Literal["alert", "rollback", "kill", "release", "resolve", "should_advance", "should_rollback", "agent_start", "outcome"]


class ActionRecord(BaseModel):
    """One entry of the actions topic, the durable audit log of what the policy decided and did.

    A decision is written before anything is called; the ``outcome`` record with the same
    ``action_id`` says what calling the targets gave. A decision without an outcome (the
    agent died between the two) is dispatched again on restart: every target is
    idempotent by ``action_id``. Evidence holds metric values only, never event content.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    action: ActionKind
    action_id: str
    episode_id: str | None = Field(
        default=None, description="The firing episode this action belongs to (shared by its alert, rollback, kill)."
    )
    rule: str | None = None
    model: str = ""
    model_version: str = ""
    route: str = "*"
    severity: str = "warning"
    reason: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict)
    fallback: str | None = None
    to_version: str | None = Field(default=None, description="rollback: the version to return to; should_advance: the next stage.")
    stage: str | None = None
    link: str | None = None
    by: str = "policy"
    decided_at: datetime = Field(default_factory=utcnow)
    # outcome records
    results: dict[str, str] = Field(default_factory=dict, description="outcome: target -> 'ok', 'skipped: ...' or 'failed: ...'.")


class KillSwitchState(BaseModel):
    """The value of the compacted control topic, keyed by model."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    model: Name
    engaged: bool
    reason: Annotated[str, StringConstraints(max_length=2000)] = ""
    fallback: str | None = Field(default=None, description="'model:NAME' to serve another model; None or 'none': a 503.")
    by: str = "policy"
    action_id: str | None = None
    model_version: str | None = None
    at: datetime = Field(default_factory=utcnow)


def _drop_unknown(model: type[BaseModel], data: dict[str, Any], prefix: str) -> list[str]:
    """Remove the keys of ``data`` that ``model`` has no field for, in it and in its nested models; their names."""
    unknown = []
    for key in list(data):
        field = model.model_fields.get(key)
        if field is None:
            unknown.append(prefix + key)
            del data[key]
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) and isinstance(data[key], dict):
            unknown += _drop_unknown(field.annotation, data[key], f"{prefix}{key}.")
    return unknown
