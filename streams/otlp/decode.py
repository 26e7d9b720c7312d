"""OTLP traces -> the inference events of their GenAI spans.

One ``ExportTraceServiceRequest`` (protobuf, or OTLP/JSON: lowerCamelCase names, hex ids)
holds spans of every kind; the GenAI inference spans among them (``gen_ai.operation.name``
``chat``, ``text_completion`` or ``generate_content``) become one
:class:`~streams.events.schema.InferenceEvent` each. Every span ends in one outcome:

``decoded``             an event
``skipped_no_content``  a GenAI inference span without prompt or response text: instrumentations
                        leave content out unless told to capture it
``skipped_not_genai``   any other span (HTTP, database, embeddings, tool calls, agents)
``rejected``            a GenAI span that does not make a valid event (no trace/span id, a text
                        over the event's limits, unparseable ``gen_ai.input.messages``...)

A payload that is not OTLP at all raises :class:`OTLPPayloadError` with a reason code. No
reason, error or log line quotes the payload: it is prompts and answers (the monitor is not
a PII store), so they name fields, indexes and ids only.

Where the text comes from, first found wins:

1. ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (and ``gen_ai.system_instructions``)
   as span attributes (current GenAI semantic conventions; JSON strings or structured values);
2. the same attributes on a ``gen_ai.client.inference.operation.details`` span event;
3. OpenLLMetry's indexed attributes ``gen_ai.prompt.N.role|content``, ``gen_ai.completion.N.*``;
4. OpenInference's ``llm.input_messages.N.message.role|content|contents.M.message_content.text``,
   ``llm.output_messages.N.message.*`` (and ``llm.prompts``, ``llm.choices.N.completion.text``);
5. span events of the older conventions: ``gen_ai.system|user|assistant|tool.message`` and
   ``gen_ai.choice``; ``gen_ai.content.prompt`` / ``gen_ai.content.completion``.

The event id is ``otel-<trace id>-<span id>``: a trace delivered twice gives the same ids, and
the worker's findings the same finding ids.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from pydantic import ValidationError

from streams.events.schema import MAX_SAMPLES, InferenceEvent

Encoding = Literal["otlp_proto", "otlp_json"]

DECODED = "decoded"
SKIPPED_NO_CONTENT = "skipped_no_content"
SKIPPED_NOT_GENAI = "skipped_not_genai"
REJECTED = "rejected"
OUTCOMES = (DECODED, SKIPPED_NO_CONTENT, SKIPPED_NOT_GENAI, REJECTED)

# Reason codes of a payload that is not OTLP (the dead-letter codes of the worker).
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
INVALID_OTLP = "invalid_otlp"

INFERENCE_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})
_OPENLLMETRY_REQUEST_TYPES = {"chat": "chat", "completion": "text_completion"}
_ROLES = {
    "system": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "developer": "developer",
    "model": "assistant",  # Gemini
    "ai": "assistant",
    "human": "user",
    "function": "tool",
    "ipython": "tool",
}
_MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
_MAX_ERRORS = 20


class OTLPPayloadError(ValueError):
    """The payload is not OTLP trace data; ``code`` is the dead-letter reason code, ``reason`` says why (never the content)."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class DecodeOptions:
    """Where an event's model_version and route come from: attribute names, the span's first, then its resource's."""

    model_version_attributes: tuple[str, ...] = ("service.version",)
    route_attributes: tuple[str, ...] = ("deployment.environment.name", "deployment.environment")

    @classmethod
    def from_settings(cls, settings: Any) -> DecodeOptions:
        return cls(tuple(settings.otlp_model_version_attributes), tuple(settings.otlp_route_attributes))


@dataclass(slots=True)
class SpanView:
    """One span, the same whichever encoding it came in: what the mapping reads."""

    trace_id: str  # lowercase hex, "" when missing or malformed
    span_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status_error: bool
    resource: Any  # a mapping's .get(): the resource's attributes
    raw: Any = None  # protobuf: (ResourceSpans, ScopeSpans, Span), for the receiver to forward the span as it came


@dataclass
class Decoded:
    """What one request gave: events, every span's outcome, why spans were rejected (ids and fields only)."""

    events: list[InferenceEvent] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    accepted: list[SpanView] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return self.outcomes[REJECTED]


# -- protobuf -------------------------------------------------------------------------------


def parse_proto(data: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        # The parser's message can quote bytes of the payload: say what it is not, not what it holds.
        raise OTLPPayloadError(INVALID_OTLP, "the record is not an OTLP ExportTraceServiceRequest (protobuf): it does not parse") from None
    return request


def _any_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "array_value":
        return [_any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in v.kvlist_value.values}
    return None  # bytes and empty values carry no text


def _attributes(kvs: Iterable[Any]) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in kvs}


class _LazyAttributes:
    """A resource's attributes, converted the first time a GenAI span asks (most spans never do)."""

    __slots__ = ("_kvs", "_dict")

    def __init__(self, kvs: Any):
        self._kvs = kvs
        self._dict: dict[str, Any] | None = None

    def get(self, key: str, default: Any = None) -> Any:
        if self._dict is None:
            self._dict = _attributes(self._kvs)
        return self._dict.get(key, default)


_GENAI_PREFIXES = ("gen_ai.", "llm.", "openinference.")


def _maybe_genai(span: Any) -> bool:
    """Cheap: whether a span has any attribute or event a GenAI span would have (the rest are not converted)."""
    return any(kv.key.startswith(_GENAI_PREFIXES) for kv in span.attributes) or any(e.name.startswith("gen_ai.") for e in span.events)


def spans_of_proto(request: ExportTraceServiceRequest) -> Iterator[SpanView]:
    for rs in request.resource_spans:
        resource = _LazyAttributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for span in ss.spans:
                genai = _maybe_genai(span)
                yield SpanView(
                    trace_id=span.trace_id.hex() if len(span.trace_id) == 16 else "",
                    span_id=span.span_id.hex() if len(span.span_id) == 8 else "",
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    attributes=_attributes(span.attributes) if genai else {},
                    events=[(e.name, _attributes(e.attributes)) for e in span.events] if genai else [],
                    status_error=span.status.code == Status.STATUS_CODE_ERROR,
                    resource=resource,
                    raw=(rs, ss, span),
                )


# -- OTLP/JSON ------------------------------------------------------------------------------


def _get(d: dict, camel: str, snake: str) -> Any:
    value = d.get(camel)
    return d.get(snake) if value is None else value


def _list(value: Any, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise OTLPPayloadError(INVALID_OTLP, f"the record is not OTLP/JSON trace data: {where} is not a list")
    return value


def _dict(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise OTLPPayloadError(INVALID_OTLP, f"the record is not OTLP/JSON trace data: {where} is not an object")
    return value


def _json_any(v: Any) -> Any:
    if not isinstance(v, dict):
        return None
    if "stringValue" in v or "string_value" in v:
        s = _get(v, "stringValue", "string_value")
        return s if isinstance(s, str) else None
    if "intValue" in v or "int_value" in v:
        return int(_get(v, "intValue", "int_value"))  # a decimal string or a number
    if "doubleValue" in v or "double_value" in v:
        return float(_get(v, "doubleValue", "double_value"))
    if "boolValue" in v or "bool_value" in v:
        return bool(_get(v, "boolValue", "bool_value"))
    if "arrayValue" in v or "array_value" in v:
        return [_json_any(x) for x in _list(_dict(_get(v, "arrayValue", "array_value"), "arrayValue").get("values"), "arrayValue.values")]
    if "kvlistValue" in v or "kvlist_value" in v:
        return _json_attributes(_dict(_get(v, "kvlistValue", "kvlist_value"), "kvlistValue").get("values"), "kvlistValue.values")
    return None


def _json_attributes(kvs: Any, where: str) -> dict[str, Any]:
    out = {}
    for i, kv in enumerate(_list(kvs, where)):
        kv = _dict(kv, f"{where}[{i}]")
        key = kv.get("key")
        if not isinstance(key, str):
            raise OTLPPayloadError(INVALID_OTLP, f"the record is not OTLP/JSON trace data: {where}[{i}].key is not a string")
        try:
            out[key] = _json_any(kv.get("value"))
        except (TypeError, ValueError):
            raise OTLPPayloadError(INVALID_OTLP, f"the record is not OTLP/JSON trace data: {where}[{i}].value is malformed") from None
    return out


def _hex_id(value: Any, size: int) -> str:
    if not isinstance(value, str) or len(value) != 2 * size:
        return ""
    try:
        bytes.fromhex(value)
    except ValueError:
        return ""
    return value.lower()


def _nanos(value: Any, where: str) -> int:
    if value is None:
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        raise OTLPPayloadError(INVALID_OTLP, f"the record is not OTLP/JSON trace data: {where} is not an integer") from None


def parse_json(data: bytes) -> dict:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OTLPPayloadError(INVALID_UTF8, f"the record is not valid UTF-8 (byte {exc.start})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OTLPPayloadError(INVALID_JSON, f"the record is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (RecursionError, ValueError):
        raise OTLPPayloadError(INVALID_JSON, "the record is not JSON: nested too deeply or a number out of range") from None
    if not isinstance(obj, dict):
        raise OTLPPayloadError(NOT_AN_OBJECT, f"the record is a JSON {type(obj).__name__}, not an object")
    return obj


def spans_of_json(obj: dict) -> Iterator[SpanView]:
    for r, rs in enumerate(_list(_get(obj, "resourceSpans", "resource_spans"), "resourceSpans")):
        rs = _dict(rs, f"resourceSpans[{r}]")
        resource = _json_attributes(_dict(rs.get("resource"), f"resourceSpans[{r}].resource").get("attributes"), "resource.attributes")
        for s, ss in enumerate(_list(_get(rs, "scopeSpans", "scope_spans"), f"resourceSpans[{r}].scopeSpans")):
            ss = _dict(ss, f"resourceSpans[{r}].scopeSpans[{s}]")
            for i, span in enumerate(_list(ss.get("spans"), f"resourceSpans[{r}].scopeSpans[{s}].spans")):
                where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{i}]"
                span = _dict(span, where)
                events = []
                for j, e in enumerate(_list(span.get("events"), f"{where}.events")):
                    e = _dict(e, f"{where}.events[{j}]")
                    name = e.get("name")
                    events.append(
                        (name if isinstance(name, str) else "", _json_attributes(e.get("attributes"), f"{where}.events[{j}].attributes"))
                    )
                status = _dict(span.get("status"), f"{where}.status")
                yield SpanView(
                    trace_id=_hex_id(_get(span, "traceId", "trace_id"), 16),
                    span_id=_hex_id(_get(span, "spanId", "span_id"), 8),
                    start_ns=_nanos(_get(span, "startTimeUnixNano", "start_time_unix_nano"), f"{where}.startTimeUnixNano"),
                    end_ns=_nanos(_get(span, "endTimeUnixNano", "end_time_unix_nano"), f"{where}.endTimeUnixNano"),
                    attributes=_json_attributes(span.get("attributes"), f"{where}.attributes"),
                    events=events,
                    status_error=status.get("code") in (2, "STATUS_CODE_ERROR"),
                    resource=resource,
                )


# OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping reads and writes bytes as base64.
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


def _convert_ids(node: Any, convert) -> Any:
    if isinstance(node, dict):
        return {k: (convert(v) if k in _ID_KEYS and isinstance(v, str) else _convert_ids(v, convert)) for k, v in node.items()}
    if isinstance(node, list):
        return [_convert_ids(v, convert) for v in node]
    return node


def _hex_to_b64(value: str) -> str:
    return base64.b64encode(bytes.fromhex(value)).decode("ascii")


def _b64_to_hex(value: str) -> str:
    return base64.b64decode(value).hex()


def request_from_json(data: bytes) -> ExportTraceServiceRequest:
    """An OTLP/JSON body as the protobuf message (the receiver forwards what it checked in one form)."""
    obj = parse_json(data)
    try:
        return json_format.ParseDict(_convert_ids(obj, _hex_to_b64), ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, binascii.Error):
        raise OTLPPayloadError(INVALID_OTLP, "the body is not an OTLP/JSON ExportTraceServiceRequest") from None


def request_to_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON of ``request``: lowerCamelCase names, hex ids, enums as integers."""
    obj = json_format.MessageToDict(request, use_integers_for_enums=True)
    return json.dumps(_convert_ids(obj, _b64_to_hex), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def render_text(data: bytes, encoding: Encoding) -> str:
    """A record as text for a redacted dead letter: OTLP/JSON when a protobuf record parses, else its bytes as UTF-8."""
    if encoding == "otlp_proto":
        try:
            return request_to_json(parse_proto(data)).decode("utf-8")
        except (OTLPPayloadError, ValueError):
            pass
    return data.decode("utf-8", "replace")


# -- the mapping ------------------------------------------------------------------------------


def _first(attrs: dict[str, Any], *names: str) -> Any:
    for name in names:
        value = attrs.get(name)
        if value is not None and value != "":
            return value
    return None


def _name(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()[:256]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None


def operation_of(attrs: dict[str, Any]) -> str | None:
    """The inference operation of a span, or None when it is not a GenAI inference span."""
    op = attrs.get("gen_ai.operation.name")
    if isinstance(op, str):
        return op if op in INFERENCE_OPERATIONS else None
    request_type = attrs.get("llm.request.type")  # OpenLLMetry before gen_ai.operation.name
    if isinstance(request_type, str):
        return _OPENLLMETRY_REQUEST_TYPES.get(request_type)
    kind = attrs.get("openinference.span.kind")
    if isinstance(kind, str):
        if kind.upper() != "LLM":
            return None
        return "text_completion" if "llm.prompts" in attrs or "llm.prompts.0.prompt.text" in attrs else "chat"
    if any(name in attrs for name in ("gen_ai.request.model", "gen_ai.system", "gen_ai.provider.name")):
        return "chat"
    return None


def _maybe_json(value: Any, what: str) -> Any:
    """A structured attribute: its value, or a JSON string of it. Raises ValueError naming ``what``."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            raise ValueError(f"{what}: not JSON") from None
    return value


def _content_text(content: Any) -> str:
    """A message's content: a string, or a list of parts (OpenAI's {type: text, text}, or the semconv's {type: text, content})."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text":
                text = part.get("content", part.get("text"))
                if isinstance(text, str):
                    texts.append(text)
        return "\n".join(texts)
    return ""


def _parts_text(message: dict) -> str:
    """The text of a semconv message: its text parts (and string tool results); ``content`` in older shapes."""
    parts = message.get("parts")
    if not isinstance(parts, list):
        return _content_text(message.get("content"))
    texts = []
    for part in parts:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text" or (kind is None and isinstance(part.get("content"), str)):
            if isinstance(part.get("content"), str):
                texts.append(part["content"])
        elif kind == "tool_call_response" and isinstance(part.get("response"), str):
            texts.append(part["response"])
    return "\n".join(texts)


def _role(value: Any, default: str) -> str:
    return _ROLES.get(value.lower(), "user") if isinstance(value, str) else default


@dataclass
class _Content:
    prompt: list[dict[str, str]] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    source: str = ""

    def __bool__(self) -> bool:
        return bool(self.prompt) or any(self.responses)


def _semconv(attrs: dict[str, Any], source: str) -> _Content | None:
    inp, out = attrs.get("gen_ai.input.messages"), attrs.get("gen_ai.output.messages")
    system = attrs.get("gen_ai.system_instructions")
    if inp is None and out is None and system is None:
        return None
    content = _Content(source=source)
    if system is not None:
        parts = _maybe_json(system, "gen_ai.system_instructions")
        text = _parts_text({"parts": parts}) if isinstance(parts, list) else _content_text(parts)
        if text:
            content.prompt.append({"role": "system", "content": text})
    messages = _maybe_json(inp, "gen_ai.input.messages") if inp is not None else []
    if not isinstance(messages, list):
        raise ValueError("gen_ai.input.messages: not a list of messages")
    for m in messages:
        if isinstance(m, dict) and (text := _parts_text(m)):
            content.prompt.append({"role": _role(m.get("role"), "user"), "content": text})
    outputs = _maybe_json(out, "gen_ai.output.messages") if out is not None else []
    if not isinstance(outputs, list):
        raise ValueError("gen_ai.output.messages: not a list of messages")
    for m in outputs:
        if isinstance(m, dict):
            content.responses.append(_parts_text(m))
            if content.finish_reason is None and isinstance(m.get("finish_reason"), str):
                content.finish_reason = m["finish_reason"]
    return content


def _indexed(attrs: dict[str, Any], prefix: str) -> dict[int, dict[str, Any]]:
    """``prefix.N.rest`` attributes grouped by N: {N: {rest: value}}."""
    out: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        if not key.startswith(prefix):
            continue
        index, _, rest = key[len(prefix) :].partition(".")
        if index.isdigit() and rest:
            out.setdefault(int(index), {})[rest] = value
    return out


def _openllmetry_text(value: Any) -> str:
    # Content is text, or (multimodal) a JSON list of OpenAI content parts.
    if isinstance(value, str) and value.startswith("[{"):
        try:
            parts = json.loads(value)
        except ValueError:
            return value
        if isinstance(parts, list) and all(isinstance(p, dict) and "type" in p for p in parts):
            return _content_text(parts)
    return value if isinstance(value, str) else ""


def _openllmetry(attrs: dict[str, Any]) -> _Content | None:
    prompts, completions = _indexed(attrs, "gen_ai.prompt."), _indexed(attrs, "gen_ai.completion.")
    if not prompts and not completions:
        return None
    content = _Content(source="openllmetry")
    for _, m in sorted(prompts.items()):
        if text := _openllmetry_text(m.get("content")):
            content.prompt.append({"role": _role(m.get("role"), "user"), "content": text})
    for _, m in sorted(completions.items()):
        content.responses.append(_openllmetry_text(m.get("content")))
        if content.finish_reason is None and isinstance(m.get("finish_reason"), str):
            content.finish_reason = m["finish_reason"]
    return content


def _openinference_message(m: dict[str, Any]) -> str:
    text = m.get("message.content")
    if isinstance(text, str) and text:
        return text
    parts = _indexed(m, "message.contents.")
    return "\n".join(
        p["message_content.text"]
        for _, p in sorted(parts.items())
        if isinstance(p.get("message_content.text"), str) and p.get("message_content.type", "text") == "text"
    )


def _openinference(attrs: dict[str, Any]) -> _Content | None:
    inputs, outputs = _indexed(attrs, "llm.input_messages."), _indexed(attrs, "llm.output_messages.")
    prompts = attrs.get("llm.prompts")
    indexed_prompts, choices = _indexed(attrs, "llm.prompts."), _indexed(attrs, "llm.choices.")
    if not (inputs or outputs or prompts or indexed_prompts or choices):
        return None
    content = _Content(source="openinference")
    for _, m in sorted(inputs.items()):
        if text := _openinference_message(m):
            content.prompt.append({"role": _role(m.get("message.role"), "user"), "content": text})
    if isinstance(prompts, list):
        content.prompt.extend({"role": "user", "content": p} for p in prompts if isinstance(p, str) and p)
    for _, p in sorted(indexed_prompts.items()):
        if isinstance(p.get("prompt.text"), str) and p["prompt.text"]:
            content.prompt.append({"role": "user", "content": p["prompt.text"]})
    for _, m in sorted(outputs.items()):
        content.responses.append(_openinference_message(m))
    for _, c in sorted(choices.items()):
        if isinstance(c.get("completion.text"), str):
            content.responses.append(c["completion.text"])
    finish = attrs.get("llm.finish_reason")
    content.finish_reason = finish if isinstance(finish, str) else None
    return content


def _event_content(attrs: dict[str, Any]) -> Any:
    """The body of an older-convention event recorded on a span: ``content``, or ``gen_ai.event.content`` (JSON)."""
    if "content" in attrs:
        return attrs["content"]
    body = attrs.get("gen_ai.event.content")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return body
    return body.get("content") if isinstance(body, dict) else None


def _choice(attrs: dict[str, Any]) -> tuple[int, str, str | None]:
    message: Any = attrs.get("message")
    finish = attrs.get("finish_reason")
    index = attrs.get("index", 0)
    if message is None and isinstance(attrs.get("gen_ai.event.content"), str):
        try:
            body = json.loads(attrs["gen_ai.event.content"])
        except ValueError:
            body = {}
        if isinstance(body, dict):
            message, finish, index = body.get("message"), body.get("finish_reason", finish), body.get("index", index)
    if isinstance(message, str):
        try:
            message = json.loads(message)
        except ValueError:
            pass
    text = _content_text(message.get("content")) if isinstance(message, dict) else ""
    if not text and isinstance(attrs.get("message.content"), str):
        text = attrs["message.content"]
    return (index if isinstance(index, int) else 0), text, (finish if isinstance(finish, str) else None)


def _legacy_events(events: list[tuple[str, dict[str, Any]]]) -> _Content | None:
    content = _Content(source="span_events")
    choices: list[tuple[int, str, str | None]] = []
    seen = False
    for name, attrs in events:
        if name in _MESSAGE_EVENTS:
            seen = True
            text = _content_text(_event_content(attrs))
            if text:
                content.prompt.append({"role": _role(attrs.get("role"), _MESSAGE_EVENTS[name]), "content": text})
        elif name == "gen_ai.choice":
            seen = True
            choices.append(_choice(attrs))
        elif name == "gen_ai.content.prompt":
            seen = True
            value = attrs.get("gen_ai.prompt")
            parsed = _maybe_json(value, "gen_ai.prompt") if isinstance(value, str) and value[:1] in "[{" else value
            if isinstance(parsed, list):
                for m in parsed:
                    if isinstance(m, dict) and (text := _content_text(m.get("content"))):
                        content.prompt.append({"role": _role(m.get("role"), "user"), "content": text})
            elif isinstance(parsed, str) and parsed:
                content.prompt.append({"role": "user", "content": parsed})
        elif name == "gen_ai.content.completion":
            seen = True
            value = attrs.get("gen_ai.completion")
            parsed = _maybe_json(value, "gen_ai.completion") if isinstance(value, str) and value[:1] in "[{" else value
            if isinstance(parsed, list):
                content.responses.extend(_content_text(m.get("content")) for m in parsed if isinstance(m, dict))
            elif isinstance(parsed, str):
                content.responses.append(parsed)
    for _, text, finish in sorted(choices, key=lambda c: c[0]):
        content.responses.append(text)
        content.finish_reason = content.finish_reason or finish
    return content if seen else None


def _content(view: SpanView) -> _Content:
    attrs = view.attributes
    found = _semconv(attrs, "semconv")
    if not found:
        for name, event_attrs in view.events:
            if name == "gen_ai.client.inference.operation.details":
                found = _semconv(event_attrs, "semconv_event")
                if found:
                    break
    for extract in (_openllmetry, _openinference):
        if not found:
            found = extract(attrs)
    if not found:
        found = _legacy_events(view.events)
    return found or _Content()


def _lookup(names: tuple[str, ...], view: SpanView) -> str | None:
    for name in names:
        for attrs in (view.attributes, view.resource):
            if (value := _name(attrs.get(name))) is not None:
                return value
    return None


def _timestamp(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1_000_000_000, tz=timezone.utc).replace(microsecond=(ns // 1000) % 1_000_000)


def _metadata(view: SpanView, source: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"otel.trace_id": view.trace_id, "otel.span_id": view.span_id, "otel.format": source}
    for key, attrs in (
        ("service.name", view.resource),
        ("gen_ai.response.model", view.attributes),
        ("gen_ai.response.id", view.attributes),
    ):
        value = attrs.get(key)
        if isinstance(value, str) and value:
            meta[key] = value[:4096]
    return meta


def _describe(exc: ValidationError, span: str) -> str:
    err = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "<root>"
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"span {span}: {loc}: {err['msg']}{more}"


def map_span(view: SpanView, options: DecodeOptions) -> tuple[str, InferenceEvent | None, str | None]:
    """One span's outcome, its event when decoded, and why when rejected."""
    attrs = view.attributes
    operation = operation_of(attrs)
    if operation is None:
        return SKIPPED_NOT_GENAI, None, None
    span = view.span_id or "?"
    if not view.trace_id or not view.span_id or view.trace_id == "0" * 32 or view.span_id == "0" * 16:
        return REJECTED, None, f"span {span}: no valid trace id and span id (the event id is made of them)"
    try:
        content = _content(view)
    except ValueError as exc:  # our own messages: they name the attribute, never its value
        return REJECTED, None, f"span {span}: {exc}"
    if not content:
        return SKIPPED_NO_CONTENT, None, None
    end_ns = view.end_ns or view.start_ns
    if end_ns <= 0:
        return REJECTED, None, f"span {span}: no start or end time"
    latency = (view.end_ns - view.start_ns) / 1e6 if view.start_ns and view.end_ns >= view.start_ns else None
    responses = content.responses or [""]
    finish = content.finish_reason
    if finish is None:
        reasons = attrs.get("gen_ai.response.finish_reasons")
        finish = reasons[0] if isinstance(reasons, list) and reasons and isinstance(reasons[0], str) else None
    error = _name(attrs.get("error.type")) or ("_OTHER" if view.status_error else None)
    data = {
        "event_id": f"otel-{view.trace_id}-{view.span_id}",
        "timestamp": _timestamp(end_ns),
        "model": _name(_first(attrs, "gen_ai.request.model", "llm.request.model_name", "llm.model_name", "gen_ai.response.model"))
        or "unknown",
        "model_version": _lookup(options.model_version_attributes, view) or "unknown",
        "route": _lookup(options.route_attributes, view) or "default",
        "provider": _name(_first(attrs, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")),
        "operation": operation,
        "prompt": content.prompt or "",
        "response": responses[0],
        "samples": [r for r in responses[1:] if r][:MAX_SAMPLES],
        "latency_ms": latency if latency is not None and latency <= 86_400_000 else None,
        "input_tokens": _count(_first(attrs, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")),
        "output_tokens": _count(
            _first(attrs, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion")
        ),
        "finish_reason": _name(finish),
        "conversation_id": _name(_first(attrs, "gen_ai.conversation.id", "session.id")),
        "error_type": error,
        "metadata": _metadata(view, content.source),
    }
    try:
        return DECODED, InferenceEvent.model_validate(data), None
    except ValidationError as exc:
        return REJECTED, None, _describe(exc, span)


def decode_spans(views: Iterable[SpanView], options: DecodeOptions) -> Decoded:
    out = Decoded()
    for view in views:
        outcome, event, error = map_span(view, options)
        out.outcomes[outcome] += 1
        if event is not None:
            out.events.append(event)
            out.accepted.append(view)
        elif error is not None and len(out.errors) < _MAX_ERRORS:
            out.errors.append(error)
    return out


class OTLPDecoder:
    """Decodes one record (one ``ExportTraceServiceRequest``) of the configured encoding."""

    def __init__(self, encoding: Encoding = "otlp_proto", options: DecodeOptions | None = None):
        self.encoding = encoding
        self.options = options or DecodeOptions()

    def decode(self, data: bytes) -> Decoded:
        """The events of the GenAI spans in ``data``; raises :class:`OTLPPayloadError` when it is not OTLP traces."""
        if self.encoding == "otlp_json":
            return decode_spans(spans_of_json(parse_json(data)), self.options)
        if data[:1] == b"{":
            raise OTLPPayloadError(
                INVALID_OTLP, "the record looks like OTLP/JSON but otlp_encoding is otlp_proto (the exporter's encoding must match it)"
            )
        return decode_spans(spans_of_proto(parse_proto(data)), self.options)

    def decode_request(self, request: ExportTraceServiceRequest) -> Decoded:
        return decode_spans(spans_of_proto(request), self.options)


def grouped_by_trace(views: Iterable[SpanView]) -> dict[str, ExportTraceServiceRequest]:
    """The spans (from protobuf) as one request per trace, each span under its own resource and scope."""
    out: dict[str, ExportTraceServiceRequest] = {}
    parents: dict[tuple[str, int], Any] = {}
    for view in views:
        rs, ss, span = view.raw
        request = out.setdefault(view.trace_id, ExportTraceServiceRequest())
        rs_key, ss_key = (view.trace_id, id(rs)), (view.trace_id, id(ss))
        if rs_key not in parents:
            new_rs = request.resource_spans.add()
            new_rs.resource.CopyFrom(rs.resource)
            new_rs.schema_url = rs.schema_url
            parents[rs_key] = new_rs
        if ss_key not in parents:
            new_ss = parents[rs_key].scope_spans.add()
            new_ss.scope.CopyFrom(ss.scope)
            new_ss.schema_url = ss.schema_url
            parents[ss_key] = new_ss
        parents[ss_key].spans.add().CopyFrom(span)
    return out


__all__ = [
    "DECODED",
    "OUTCOMES",
    "REJECTED",
    "SKIPPED_NOT_GENAI",
    "SKIPPED_NO_CONTENT",
    "DecodeOptions",
    "Decoded",
    "OTLPDecoder",
    "OTLPPayloadError",
    "SpanView",
    "decode_spans",
    "grouped_by_trace",
    "map_span",
    "parse_json",
    "parse_proto",
    "render_text",
    "request_from_json",
    "request_to_json",
]
