"""Real OpenTelemetry clients for the OTLP tests: the official ``openai`` client instrumented by
OpenTelemetry's own instrumentation (opentelemetry-instrumentation-openai-v2), by OpenLLMetry's
(opentelemetry-instrumentation-openai) or by OpenInference's, asking tests/model_standin.py; and
spans built with the SDK where an older convention has no installable instrumentation any more.
Encoded with the SDK's own OTLP encoders (protobuf, and OTLP/JSON)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import openai
from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans as encode_json_spans
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from .model_standin import ModelStandIn

# OpenTelemetry's instrumentation (2.4b0) puts content on the span only with the latest GenAI
# conventions and SPAN_ONLY (or SPAN_AND_EVENT); the legacy "true" sends it as log events.
CAPTURE_ON = {
    "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "span_only",
}
CAPTURE_OFF = {
    "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "no_content",
}
RESOURCE = {"service.name": "support-bot", "service.version": "2026.11.1", "deployment.environment.name": "prod-eu"}


@contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def provider(resource: dict[str, Any] | None = None, processor: Any = None) -> tuple[TracerProvider, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create(resource if resource is not None else RESOURCE))
    tp.add_span_processor(SimpleSpanProcessor(memory))
    if processor is not None:
        tp.add_span_processor(processor)
    return tp, memory


def _instrumentor(kind: str) -> Any:
    if kind == "openai_v2":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        return OpenAIInstrumentor()
    if kind == "openllmetry":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor as OpenLLMetryInstrumentor

        return OpenLLMetryInstrumentor()
    if kind == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor as OpenInferenceInstrumentor

        return OpenInferenceInstrumentor()
    raise ValueError(kind)


@contextmanager
def instrumented(kind: str, tp: TracerProvider, capture: bool = True) -> Iterator[None]:
    """The openai client instrumented by ``kind`` (one at a time), with content capture on or off."""
    with environ(CAPTURE_ON if capture else CAPTURE_OFF):
        instrumentor = _instrumentor(kind)
        instrumentor.instrument(tracer_provider=tp)
        try:
            yield
        finally:
            instrumentor.uninstrument()


def ask(
    base_url: str,
    messages: Sequence[dict[str, str]],
    model: str = "support-large",
    n: int = 1,
) -> str:
    client = openai.OpenAI(base_url=base_url, api_key="test-key", max_retries=0)
    reply = client.chat.completions.create(model=model, messages=list(messages), n=n)
    return reply.choices[0].message.content or ""


def chat_spans(
    kind: str,
    answer: str,
    messages: Sequence[dict[str, str]],
    *,
    capture: bool = True,
    n: int = 1,
    resource: dict[str, Any] | None = None,
) -> list[ReadableSpan]:
    """The finished spans of one chat completion by the instrumented client (the same call's spans are made once a session)."""
    key = (kind, answer, tuple(tuple(sorted(m.items())) for m in messages), capture, n, tuple(sorted((resource or {}).items())))
    if key not in _CHAT_SPANS:
        _CHAT_SPANS[key] = _chat_spans(kind, answer, messages, capture=capture, n=n, resource=resource)
    return list(_CHAT_SPANS[key])


_CHAT_SPANS: dict[tuple, list[ReadableSpan]] = {}


def _chat_spans(
    kind: str, answer: str, messages: Sequence[dict[str, str]], *, capture: bool, n: int, resource: dict[str, Any] | None
) -> list[ReadableSpan]:
    tp, memory = provider(resource)
    with ModelStandIn(lambda prompt: answer) as model, instrumented(kind, tp, capture):
        ask(model.base_url, messages, n=n)
    tp.shutdown()
    return list(memory.get_finished_spans())


def sdk_spans(
    name: str, attributes: dict[str, Any], events: Sequence[tuple[str, dict[str, Any]]] = (), **kwargs: Any
) -> list[ReadableSpan]:
    """One span built with the SDK (for attribute forms no installable instrumentation emits any more)."""
    tp, memory = provider(kwargs.pop("resource", None))
    tracer = tp.get_tracer(kwargs.pop("scope", "test.instrumentation"))
    status = kwargs.pop("status", None)
    with tracer.start_as_current_span(name, attributes=attributes, **kwargs) as span:
        for event_name, event_attributes in events:
            span.add_event(event_name, event_attributes)
        if status is not None:
            span.set_status(status)
    return list(memory.get_finished_spans())


def otlp_proto(spans: Sequence[ReadableSpan]) -> bytes:
    """What the SDK's OTLP exporters (and a Collector's kafka exporter, otlp_proto) send: ExportTraceServiceRequest bytes."""
    return encode_spans(spans).SerializeToString()


def otlp_json(spans: Sequence[ReadableSpan]) -> bytes:
    """The same as OTLP/JSON, by the SDK's JSON encoder."""
    return encode_json_spans(spans).to_json().encode("utf-8")
