"""The OTLP/HTTP receiver in-process, without Kafka (a recording sink), fed by the SDK's real OTLP/HTTP exporter."""

from __future__ import annotations

import asyncio
import gzip
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from aiohttp import web
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SpanExportResult
from prometheus_client.parser import text_string_to_metric_families

from streams.local.broker import free_port
from streams.otlp.decode import OTLPDecoder
from streams.otlp.receiver import SERVER_OPTIONS, OTLPReceiver
from streams.settings import Settings

from .otel_clients import chat_spans, otlp_json, otlp_proto, sdk_spans

ANSWER = "Sure: write to dana.whitfield@example.org."
MESSAGES = [{"role": "user", "content": "How do I reach Dana?"}]


class RecordingSink:
    def __init__(self, fail: bool = False):
        self.records: list[tuple[bytes, bytes]] = []
        self.fail = fail

    def __call__(self, records):
        if self.fail:
            raise ConnectionError("broker down")
        self.records.extend(records)


@contextmanager
def receiving(sink: RecordingSink | None = None, **settings) -> Iterator[tuple[str, OTLPReceiver, RecordingSink]]:
    """A receiver on 127.0.0.1 in a thread of its own; yields its base URL."""
    sink = sink or RecordingSink()
    receiver = OTLPReceiver(Settings(**settings), sink=sink)
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(receiver.app(), handle_signals=False, **SERVER_OPTIONS)
    started = threading.Event()

    def serve():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield f"http://127.0.0.1:{port}", receiver, sink
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _counts(base: str, name: str) -> dict[str, float]:
    body = httpx.get(f"{base}/metrics").text
    return {s.labels["outcome"]: s.value for f in text_string_to_metric_families(body) if f.name == name for s in f.samples}


def test_the_sdk_exporter_delivers_genai_spans_in_protobuf_and_gzip():
    spans = chat_spans("openai_v2", ANSWER, MESSAGES) + sdk_spans("GET /health", {"http.request.method": "GET"})
    with receiving() as (base, _, sink):
        for compression in (Compression.NoCompression, Compression.Gzip):
            exporter = OTLPSpanExporter(endpoint=f"{base}/v1/traces", compression=compression, timeout=10)
            assert exporter.export(spans) == SpanExportResult.SUCCESS
            exporter.shutdown()
        assert _counts(base, "streamwarden_otlp_spans") == {
            "decoded": 2,
            "skipped_no_content": 0,
            "skipped_not_genai": 2,
            "rejected": 0,
        }
        assert _counts(base, "streamwarden_otlp_requests")["ok"] == 2
    # One record per trace (keyed by its id), holding only the GenAI span, which decodes as it came.
    assert len(sink.records) == 2 and sink.records[0] == sink.records[1]
    key, value = sink.records[0]
    events = OTLPDecoder().decode(value).events
    assert len(events) == 1 and events[0].response == ANSWER and events[0].event_id == f"otel-{key.decode()}-{events[0].event_id[-16:]}"


def test_json_requests_and_a_json_topic():
    spans = chat_spans("openai_v2", ANSWER, MESSAGES)
    with receiving(otlp_encoding="otlp_json") as (base, _, sink):
        r = httpx.post(f"{base}/v1/traces", content=otlp_json(spans), headers={"Content-Type": "application/json"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json") and r.json() == {}
    assert OTLPDecoder("otlp_json").decode(sink.records[0][1]).events[0].response == ANSWER


def test_partial_success_for_rejected_spans_and_a_warning_for_spans_without_content():
    good = chat_spans("openai_v2", ANSWER, MESSAGES)
    bad = sdk_spans("chat m", {"gen_ai.operation.name": "chat", "gen_ai.input.messages": "[oops"})
    silent = chat_spans("openai_v2", ANSWER, MESSAGES, capture=False)
    with receiving() as (base, _, sink):
        r = httpx.post(f"{base}/v1/traces", content=otlp_proto(good + bad), headers={"Content-Type": "application/x-protobuf"})
        assert r.status_code == 200
        reply = ExportTraceServiceResponse.FromString(r.content)
        assert reply.partial_success.rejected_spans == 1 and "gen_ai.input.messages: not JSON" in reply.partial_success.error_message
        assert len(sink.records) == 1  # the good span went on
        r = httpx.post(f"{base}/v1/traces", content=otlp_proto(silent), headers={"Content-Type": "application/x-protobuf"})
        reply = ExportTraceServiceResponse.FromString(r.content)
        assert r.status_code == 200 and reply.partial_success.rejected_spans == 0
        assert "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT" in reply.partial_success.error_message
        assert len(sink.records) == 1
        r = httpx.post(f"{base}/v1/traces", content=otlp_proto(sdk_spans("GET /", {})), headers={"Content-Type": "application/x-protobuf"})
        assert r.status_code == 200 and ExportTraceServiceResponse.FromString(r.content) == ExportTraceServiceResponse()
        assert _counts(base, "streamwarden_otlp_requests") == {"partial": 1, "ok": 2}


def test_bad_requests_get_their_status_and_nothing_is_forwarded():
    data = otlp_proto(chat_spans("openai_v2", ANSWER, MESSAGES))
    proto = {"Content-Type": "application/x-protobuf"}
    with receiving(otlp_receiver_max_bytes=4096) as (base, _, sink):
        post = lambda body, headers: httpx.post(f"{base}/v1/traces", content=body, headers=headers)  # noqa: E731
        truncated = post(data[: len(data) // 2], proto)
        assert truncated.status_code == 400 and b"does not parse" in truncated.content and b"dana" not in truncated.content
        assert post(data, {"Content-Type": "text/plain"}).status_code == 415
        assert post(data, {**proto, "Content-Encoding": "br"}).status_code == 415
        assert post(b"x" * 5000, proto).status_code == 413
        bomb = gzip.compress(b"\x00" * 100_000)  # small on the wire, over the limit once inflated
        assert len(bomb) < 4096 and post(bomb, {**proto, "Content-Encoding": "gzip"}).status_code == 413
        assert post(b"not gzip", {**proto, "Content-Encoding": "gzip"}).status_code == 400
        assert post(b'{"resourceSpans": 3}', {"Content-Type": "application/json"}).json()["code"] == 3
        assert post(b"{}", proto).status_code == 400
        assert httpx.get(f"{base}/v1/traces").status_code == 405
        assert _counts(base, "streamwarden_otlp_requests") == {"bad_request": 4, "unsupported": 2, "too_large": 2}
    assert sink.records == []


def test_bearer_token_and_an_unavailable_broker():
    data = otlp_proto(chat_spans("openai_v2", ANSWER, MESSAGES))
    with receiving(otlp_receiver_token="s3cret") as (base, _, sink):
        exporter = OTLPSpanExporter(endpoint=f"{base}/v1/traces", timeout=5)
        assert exporter.export(chat_spans("openai_v2", ANSWER, MESSAGES)) == SpanExportResult.FAILURE
        r = httpx.post(
            f"{base}/v1/traces", content=data, headers={"Content-Type": "application/x-protobuf", "Authorization": "Bearer nope"}
        )
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        ok = httpx.post(
            f"{base}/v1/traces", content=data, headers={"Content-Type": "application/x-protobuf", "Authorization": "Bearer s3cret"}
        )
        assert ok.status_code == 200 and len(sink.records) == 1
    with receiving(RecordingSink(fail=True)) as (base, _, _sink):
        r = httpx.post(f"{base}/v1/traces", content=data, headers={"Content-Type": "application/x-protobuf"})
        assert r.status_code == 503 and r.headers["Retry-After"] == "5"  # retryable: the exporter sends it again
