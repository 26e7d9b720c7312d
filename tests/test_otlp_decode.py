"""The OTLP trace decoder: each form of GenAI span the field emits, from real clients where one installs."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from opentelemetry.trace import Status, StatusCode

from streams.events.schema import MAX_TEXT_CHARS, ChatMessage
from streams.otlp.decode import DecodeOptions, OTLPDecoder, OTLPPayloadError, render_text, request_from_json, request_to_json
from streams.worker.pipeline import Pipeline, RawRecord

from .otel_clients import chat_spans, otlp_json, otlp_proto, sdk_spans

ANSWER = "Sure: write to dana.whitfield@example.org or call 415-555-0132."
MESSAGES = [{"role": "system", "content": "You are the support bot."}, {"role": "user", "content": "How do I reach Dana?"}]
PROMPT = [ChatMessage(role="system", content="You are the support bot."), ChatMessage(role="user", content="How do I reach Dana?")]


def _decode(spans, encoding="otlp_proto", **options):
    data = otlp_proto(spans) if encoding == "otlp_proto" else otlp_json(spans)
    return OTLPDecoder(encoding, DecodeOptions(**options) if options else None).decode(data)


def _one(decoded):
    assert decoded.outcomes["decoded"] == 1, (decoded.outcomes, decoded.errors)
    return decoded.events[0]


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_opentelemetry_openai_instrumentation_current_conventions(encoding):
    spans = chat_spans("openai_v2", ANSWER, MESSAGES)
    decoded = _decode(spans, encoding)
    event = _one(decoded)
    span = next(s for s in spans if s.attributes.get("gen_ai.operation.name") == "chat")
    ctx = span.get_span_context()
    assert event.event_id == f"otel-{ctx.trace_id:032x}-{ctx.span_id:016x}"
    assert (event.model, event.model_version, event.route, event.provider, event.operation) == (
        "support-large",
        "2026.11.1",
        "prod-eu",
        "openai",
        "chat",
    )
    assert event.prompt == PROMPT and event.response == ANSWER and event.finish_reason == "stop"
    assert event.latency_ms == pytest.approx((span.end_time - span.start_time) / 1e6)
    # The event keeps microseconds (the span has nanoseconds), and a 2026 epoch float resolves ~0.2 us.
    assert event.timestamp.timestamp() == pytest.approx(span.end_time / 1e9, abs=2e-6)
    assert event.metadata["otel.format"] == "semconv" and event.metadata["service.name"] == "support-bot"


def test_several_choices_become_the_samples_of_the_first():
    event = _one(_decode(chat_spans("openai_v2", ANSWER, MESSAGES, n=3)))
    assert event.response == ANSWER and event.samples == [ANSWER, ANSWER]


def test_a_redelivered_trace_gives_the_same_event_ids():
    data = otlp_proto(chat_spans("openai_v2", ANSWER, MESSAGES))
    first, again = OTLPDecoder().decode(data), OTLPDecoder().decode(data)
    assert [e.event_id for e in first.events] == [e.event_id for e in again.events]


def test_content_capture_off_is_skipped_no_content():
    decoded = _decode(chat_spans("openai_v2", ANSWER, MESSAGES, capture=False))
    assert decoded.outcomes == Counter({"skipped_no_content": 1}) and decoded.events == []


def test_openllmetry_instrumentation():
    event = _one(_decode(chat_spans("openllmetry", ANSWER, MESSAGES)))
    assert event.prompt == PROMPT and event.response == ANSWER and event.model == "support-large" and event.provider == "openai"


def test_openinference_instrumentation():
    event = _one(_decode(chat_spans("openinference", ANSWER, MESSAGES)))
    assert event.prompt == PROMPT and event.response == ANSWER and event.metadata["otel.format"] == "openinference"
    assert event.model == "support-large" and event.provider == "openai" and event.finish_reason == "stop"


def test_openllmetry_indexed_attributes_of_earlier_releases():
    """gen_ai.prompt.N.* / gen_ai.completion.N.*, llm.request.type, prompt/completion tokens (OpenLLMetry's semantic conventions page)."""
    attributes = {
        "llm.request.type": "chat",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.prompt.0.role": "system",
        "gen_ai.prompt.0.content": "You are the support bot.",
        "gen_ai.prompt.1.role": "user",
        "gen_ai.prompt.1.content": "How do I reach Dana?",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": ANSWER,
        "gen_ai.completion.0.finish_reason": "stop",
        "gen_ai.usage.prompt_tokens": 21,
        "gen_ai.usage.completion_tokens": 17,
        "llm.usage.total_tokens": 38,
    }
    event = _one(_decode(sdk_spans("openai.chat", attributes)))
    assert event.prompt == PROMPT and event.response == ANSWER and event.finish_reason == "stop"
    assert (event.model, event.provider, event.input_tokens, event.output_tokens) == ("gpt-4o", "openai", 21, 17)
    assert event.metadata["otel.format"] == "openllmetry" and event.metadata["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    # An embedding request is no inference to monitor.
    assert _decode(sdk_spans("openai.embeddings", {"llm.request.type": "embedding", "gen_ai.system": "openai"})).outcomes == Counter(
        {"skipped_not_genai": 1}
    )


def test_openinference_multipart_contents_and_text_completion_prompts():
    attributes = {
        "openinference.span.kind": "LLM",
        "llm.model_name": "claude-x",
        "llm.provider": "anthropic",
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.contents.0.message_content.type": "text",
        "llm.input_messages.0.message.contents.0.message_content.text": "How do I reach Dana?",
        "llm.input_messages.0.message.contents.1.message_content.type": "image",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": ANSWER,
        "llm.token_count.prompt": 9,
        "llm.token_count.completion": 12,
        "session.id": "conv-7",
    }
    event = _one(_decode(sdk_spans("Messages", attributes)))
    assert event.prompt == [ChatMessage(role="user", content="How do I reach Dana?")] and event.response == ANSWER
    assert (event.model, event.provider, event.input_tokens, event.output_tokens, event.conversation_id) == (
        "claude-x",
        "anthropic",
        9,
        12,
        "conv-7",
    )
    completion = {"openinference.span.kind": "LLM", "llm.model_name": "m", "llm.prompts": ["Say hi"], "llm.choices.0.completion.text": "hi"}
    event = _one(_decode(sdk_spans("Completion", completion)))
    assert (event.operation, event.prompt, event.response) == ("text_completion", [ChatMessage(role="user", content="Say hi")], "hi")
    assert _decode(sdk_spans("retrieve", {"openinference.span.kind": "RETRIEVER"})).outcomes == Counter({"skipped_not_genai": 1})


def test_operation_details_event_and_structured_messages():
    """The semconv's gen_ai.client.inference.operation.details event; messages as structured values (not JSON strings)."""
    details = {
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "How do I reach Dana?"}]}]),
        "gen_ai.output.messages": json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": ANSWER}], "finish_reason": "length"}]
        ),
        "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "You are the support bot."}]),
    }
    attributes = {"gen_ai.operation.name": "generate_content", "gen_ai.request.model": "gemini-x", "gen_ai.provider.name": "gcp.gemini"}
    event = _one(_decode(sdk_spans("generate_content gemini-x", attributes, [("gen_ai.client.inference.operation.details", details)])))
    assert event.operation == "generate_content" and event.prompt == PROMPT and event.response == ANSWER
    assert event.finish_reason == "length" and event.metadata["otel.format"] == "semconv_event"


def test_older_span_events():
    """gen_ai.*.message and gen_ai.choice recorded as span events (semconv up to 1.36), and gen_ai.content.prompt/completion."""
    events = [
        ("gen_ai.system.message", {"content": "You are the support bot."}),
        ("gen_ai.user.message", {"gen_ai.event.content": json.dumps({"content": "How do I reach Dana?"})}),
        ("gen_ai.choice", {"index": 1, "message": json.dumps({"role": "assistant", "content": "second"})}),
        ("gen_ai.choice", {"index": 0, "finish_reason": "stop", "message": json.dumps({"role": "assistant", "content": ANSWER})}),
    ]
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o"}
    event = _one(_decode(sdk_spans("chat gpt-4o", attributes, events)))
    assert event.prompt == PROMPT and event.response == ANSWER and event.samples == ["second"] and event.finish_reason == "stop"
    content_events = [
        ("gen_ai.content.prompt", {"gen_ai.prompt": json.dumps(MESSAGES)}),
        ("gen_ai.content.completion", {"gen_ai.completion": json.dumps([{"role": "assistant", "content": ANSWER}])}),
    ]
    event = _one(_decode(sdk_spans("chat gpt-4o", attributes, content_events)))
    assert event.prompt == PROMPT and event.response == ANSWER


def test_errors_model_version_and_route_from_configured_attributes_and_non_genai_spans():
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "hello"}]}]),
        "error.type": "timeout",
        "tenant.route": "checkout",
    }
    spans = sdk_spans("chat gpt-4o", attributes)
    event = _one(_decode(spans, model_version_attributes=("gen_ai.response.model",), route_attributes=("tenant.route",)))
    assert (event.model_version, event.route, event.error_type, event.response) == ("gpt-4o-2024-08-06", "checkout", "timeout", "")
    # No error.type, but the span's status is ERROR: the semconv's fallback value.
    attributes.pop("error.type")
    failed = sdk_spans("chat gpt-4o", attributes, status=Status(StatusCode.ERROR))
    assert _one(_decode(failed)).error_type == "_OTHER"
    # No resource attributes: the defaults.
    bare = _one(_decode(sdk_spans("chat gpt-4o", attributes, resource={})))
    assert (bare.model_version, bare.route) == ("unknown", "default")
    # Spans of every other kind are counted and skipped; so are GenAI operations that are no inference.
    others = sdk_spans("GET /orders", {"http.request.method": "GET"}) + sdk_spans(
        "embeddings m", {"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "m"}
    )
    assert _decode(others).outcomes == Counter({"skipped_not_genai": 2})


def test_rejected_spans_say_which_field_never_the_value():
    secret = "AKIAIOSFODNN7EXAMPLE"
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "m",
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": secret + "x" * MAX_TEXT_CHARS}]}]),
    }
    decoded = _decode(sdk_spans("chat m", attributes))
    assert decoded.outcomes == Counter({"rejected": 1}) and "prompt" in decoded.errors[0] and secret not in decoded.errors[0]
    attributes["gen_ai.input.messages"] = "{not json " + secret
    decoded = _decode(sdk_spans("chat m", attributes))
    assert decoded.outcomes == Counter({"rejected": 1}) and "gen_ai.input.messages: not JSON" in decoded.errors[0]
    assert secret not in decoded.errors[0]


def test_malformed_payloads_raise_with_a_reason_that_quotes_nothing():
    secret = "dana.whitfield@example.org"
    data = otlp_proto(chat_spans("openai_v2", ANSWER, MESSAGES))
    with pytest.raises(OTLPPayloadError) as truncated:
        OTLPDecoder().decode(data[: len(data) // 2])
    assert truncated.value.code == "invalid_otlp" and secret not in truncated.value.reason
    with pytest.raises(OTLPPayloadError) as wrong:
        OTLPDecoder().decode(b'{"resourceSpans": []}')
    assert wrong.value.code == "invalid_otlp" and "otlp_encoding" in wrong.value.reason
    cases = {
        b"\xff\xfe": "invalid_utf8",
        b'{"resourceSpans": [' + secret.encode(): "invalid_json",
        b"[1]": "not_an_object",
        b'{"resourceSpans": {"a": 1}}': "invalid_otlp",
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [{"key": 1}]}]}]}]}': "invalid_otlp",
    }
    for payload, code in cases.items():
        with pytest.raises(OTLPPayloadError) as exc:
            OTLPDecoder("otlp_json").decode(payload)
        assert exc.value.code == code and secret not in exc.value.reason, payload


def test_otlp_json_round_trips_through_protobuf():
    spans = chat_spans("openai_v2", ANSWER, MESSAGES)
    request = request_from_json(otlp_json(spans))
    assert request.SerializeToString() == otlp_proto(spans)
    assert OTLPDecoder("otlp_json").decode(request_to_json(request)).events == OTLPDecoder().decode(otlp_proto(spans)).events
    assert "dana.whitfield" in render_text(otlp_proto(spans), "otlp_proto")  # a redacted dead letter is masked from this text


def test_the_pipeline_dead_letters_rejected_spans_and_keeps_the_good_ones():
    good = chat_spans("openai_v2", ANSWER, MESSAGES)
    bad = sdk_spans("chat m", {"gen_ai.operation.name": "chat", "gen_ai.input.messages": "[oops"})
    pipeline = Pipeline([], 1_000_000, "t.otlp", OTLPDecoder())
    records = [
        RawRecord(otlp_proto(good + bad), topic="t.otlp", partition=0, offset=0),
        RawRecord(otlp_proto(good), topic="t.otlp", partition=0, offset=1),  # the same trace again
        RawRecord(b"\x0a\xff\xff", topic="t.otlp", partition=0, offset=2),
        RawRecord(b"", topic="t.otlp", partition=0, offset=3),
        RawRecord(b"\x0a" * 1_000_001, topic="t.otlp", partition=0, offset=4),
    ]
    result = pipeline.process(records)
    assert len(result.events) == 1 and result.duplicates == 1
    assert [d.reason_code for d in result.dead_letters] == ["schema_violation", "invalid_otlp", "empty", "oversized"]
    assert result.dead_letters[0].errors and result.dead_letters[0].record.offset == 0
    assert result.otlp_spans == Counter({"decoded": 2, "rejected": 1})
