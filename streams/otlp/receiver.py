"""``streamwarden otlp receive``: an OTLP/HTTP traces endpoint for services that run no Collector.

Point an OpenTelemetry SDK at it with ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://HOST:4318/v1/traces``
(or ``OTEL_EXPORTER_OTLP_ENDPOINT=http://HOST:4318``). ``POST /v1/traces`` takes an
``ExportTraceServiceRequest`` as ``application/x-protobuf`` or ``application/json`` (OTLP/JSON),
plain or ``Content-Encoding: gzip`` (or ``deflate``), and answers as OTLP/HTTP says:

- **200** with an ``ExportTraceServiceResponse`` (in the request's encoding) once the GenAI spans
  are acknowledged by Kafka; ``partial_success`` counts the spans it rejected (a GenAI span that
  makes no valid event) and says why, or warns when GenAI spans carried no message content;
- **400** a body that is not OTLP traces (a ``google.rpc.Status`` says why, never quoting it);
- **401** a missing or wrong bearer token, when ``otlp_receiver_token`` is set;
- **413** a body over ``otlp_receiver_max_bytes``, compressed or after gzip;
- **415** another content type or content encoding;
- **503** (``Retry-After``) Kafka did not take the spans: the exporter retries, nothing is lost.

Only the GenAI inference spans go on, to the OTLP topic, one record per trace (keyed by trace id,
split when larger than a record may be), in the topic's encoding (``otlp_encoding``); the worker
decodes them there like spans from a Collector. Other spans are counted and dropped: the monitor
is not a trace store. ``GET /metrics`` counts spans by outcome and requests by status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from streams import kafka_clients
from streams.auth import bearer_matches
from streams.errors import ConfigurationError
from streams.otlp.decode import (
    OUTCOMES,
    REJECTED,
    SKIPPED_NO_CONTENT,
    DecodeOptions,
    OTLPDecoder,
    OTLPPayloadError,
    SpanView,
    grouped_by_trace,
    parse_proto,
    request_from_json,
    request_to_json,
)
from streams.settings import Settings

log = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# google.rpc.Code of each error status.
_RPC_CODES = {400: 3, 401: 16, 413: 8, 415: 3, 503: 14}

Records = list[tuple[bytes, bytes]]  # (key, value) to produce
# aiohttp would inflate gzip bodies itself: the receiver does it, bounded by otlp_receiver_max_bytes.
SERVER_OPTIONS: dict[str, Any] = {"auto_decompress": False}


class ReceiverMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.spans = Counter(
            "streamwarden_otlp_spans_total",
            "Spans received, by outcome (decoded, skipped_no_content, skipped_not_genai, rejected).",
            ["outcome"],
            registry=r,
        )
        self.requests = Counter(
            "streamwarden_otlp_requests_total",
            "OTLP/HTTP export requests, by outcome (ok, partial, bad_request, unauthorized, too_large, unsupported, unavailable).",
            ["outcome"],
            registry=r,
        )
        self.records = Counter("streamwarden_otlp_records_total", "Records written to the OTLP topic.", registry=r)
        for outcome in OUTCOMES:
            self.spans.labels(outcome)


class KafkaSink:
    """Writes records to the OTLP topic and waits for the broker's acknowledgements (raises if it does not ack)."""

    def __init__(self, settings: Settings, topic: str, timeout_s: float = 10.0):
        self.settings = settings
        self.topic = topic
        self.timeout_s = timeout_s
        self._producer: Any = None
        self._lock = threading.Lock()

    def __call__(self, records: Records) -> None:
        with self._lock:
            if self._producer is None:  # made on first use: a broker down at start-up is a 503, not a crash
                self._producer = kafka_clients.producer(
                    self.settings, "streamwarden-otlp-receiver", max_request_size=kafka_clients.max_message_bytes(self.settings)
                )
        futures = [self._producer.send(self.topic, key=key, value=value) for key, value in records]
        self._producer.flush(timeout=self.timeout_s)
        for f in futures:
            f.get(timeout=self.timeout_s)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _status(status: int, message: str, content_type: str, headers: dict[str, str] | None = None) -> web.Response:
    """An OTLP/HTTP error: a ``google.rpc.Status`` (code 1, message 2) in the request's encoding."""
    code = _RPC_CODES.get(status, 2)
    if content_type == PROTOBUF:
        text = message.encode("utf-8")
        body = b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text
    else:
        body, content_type = json.dumps({"code": code, "message": message}).encode(), JSON
    return web.Response(status=status, body=body, content_type=content_type, headers=headers)


class OTLPReceiver:
    def __init__(self, settings: Settings, sink: Callable[[Records], None] | None = None):
        if not settings.otlp_enabled:
            raise ConfigurationError("otlp_enabled is off: no worker reads the OTLP topic, so the receiver would feed nothing")
        self.settings = settings
        self.topic = settings.otlp_topic_name
        self.encoding = settings.otlp_encoding
        self.max_bytes = settings.otlp_receiver_max_bytes
        # A record must fit the topic (the broker's default message size) and the worker's max_event_bytes.
        self.max_record_bytes = min(settings.max_event_bytes, kafka_clients.BROKER_DEFAULT_MAX_MESSAGE_BYTES - 4096)
        self.decoder = OTLPDecoder("otlp_proto", DecodeOptions.from_settings(settings))
        self.sink = sink or KafkaSink(settings, self.topic)
        self.metrics = ReceiverMetrics()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_bytes)
        app.router.add_post("/v1/traces", self.traces)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.prometheus)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _cleanup(self, app: web.Application) -> None:
        close = getattr(self.sink, "close", None)
        if close is not None:
            await asyncio.get_running_loop().run_in_executor(None, close)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "topic": self.topic, "encoding": self.encoding})

    async def prometheus(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    # -- POST /v1/traces ---------------------------------------------------------------------

    def _denied(self, request: web.Request, content_type: str) -> web.Response | None:
        token = self.settings.otlp_receiver_token
        if token is None or not token.get_secret_value():
            return None
        if bearer_matches(request.headers.get("Authorization"), token.get_secret_value()):
            return None
        return _status(401, "a valid bearer token is required", content_type, {"WWW-Authenticate": "Bearer"})

    async def _body(self, request: web.Request) -> bytes | None:
        """The body, or None when it is larger than the limit (read no further than that)."""
        if request.content_length is not None and request.content_length > self.max_bytes:
            return None
        chunks, size = [], 0
        async for chunk in request.content.iter_chunked(65536):
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _inflate(self, body: bytes, coding: str) -> bytes | None:
        """The decompressed body, None when it is larger than the limit; raises OTLPPayloadError when it does not inflate."""
        d = zlib.decompressobj(16 + zlib.MAX_WBITS if coding == "gzip" else zlib.MAX_WBITS)
        try:
            out = d.decompress(body, self.max_bytes + 1)
        except zlib.error:
            raise OTLPPayloadError("invalid_encoding", f"the body is not valid {coding}") from None
        if len(out) > self.max_bytes or d.unconsumed_tail:
            return None
        if not d.eof:
            raise OTLPPayloadError("invalid_encoding", f"the {coding} body is truncated")
        return out

    def _done(self, outcome: str, response: web.Response) -> web.Response:
        self.metrics.requests.labels(outcome).inc()
        return response

    async def traces(self, request: web.Request) -> web.Response:
        content_type = request.content_type
        reply_type = content_type if content_type in (PROTOBUF, JSON) else JSON
        denied = self._denied(request, reply_type)
        if denied is not None:
            return self._done("unauthorized", denied)
        if content_type not in (PROTOBUF, JSON):
            return self._done("unsupported", _status(415, f"send {PROTOBUF} or {JSON} (OTLP/HTTP)", reply_type))
        coding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if coding not in ("identity", "none", "", "gzip", "deflate"):
            return self._done("unsupported", _status(415, "the content encoding must be gzip, deflate or none", reply_type))

        def too_large() -> web.Response:
            return self._done("too_large", _status(413, f"the body is larger than {self.max_bytes} bytes", reply_type))

        body = await self._body(request)
        if body is None:
            return too_large()
        try:
            if coding in ("gzip", "deflate"):
                body = self._inflate(body, coding)
                if body is None:
                    return too_large()
            if content_type == PROTOBUF:
                if body[:1] == b"{":
                    raise OTLPPayloadError("invalid_otlp", "the body is JSON but the content type says protobuf")
                message = parse_proto(body)
            else:
                message = request_from_json(body)
            decoded = self.decoder.decode_request(message)
        except OTLPPayloadError as exc:
            return self._done("bad_request", _status(400, exc.reason.replace("the record", "the body"), reply_type))
        records, too_big = self._records(decoded.accepted)
        if records:
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.sink, records)
            except Exception as exc:  # noqa: BLE001 - the exporter retries a 503: at least once, nothing lost
                log.warning("OTLP spans could not be written to %s: %s", self.topic, type(exc).__name__)
                return self._done(
                    "unavailable", _status(503, "the spans could not be written to Kafka; retry", reply_type, {"Retry-After": "5"})
                )
            self.metrics.records.inc(len(records))
        outcomes = dict(decoded.outcomes)
        if too_big:
            outcomes["decoded"] -= too_big
            outcomes[REJECTED] = outcomes.get(REJECTED, 0) + too_big
        for outcome, n in outcomes.items():
            self.metrics.spans.labels(outcome).inc(n)
        return self._done(*self._response(outcomes, decoded.errors, too_big, reply_type))

    def _records(self, accepted: Sequence[SpanView]) -> tuple[Records, int]:
        """One record per trace in the topic's encoding, split to fit a record; spans too large alone are counted."""
        records: Records = []
        too_big = 0
        for trace_id, request in grouped_by_trace(accepted).items():
            pending = [request]
            while pending:
                req = pending.pop()
                value = req.SerializeToString() if self.encoding == "otlp_proto" else request_to_json(req)
                if len(value) <= self.max_record_bytes:
                    records.append((trace_id.encode(), value))
                    continue
                halves = _split(req)
                if halves is None:
                    too_big += 1
                else:
                    pending.extend(halves)
        return records, too_big

    def _response(self, outcomes: dict[str, int], errors: list[str], too_big: int, reply_type: str) -> tuple[str, web.Response]:
        rejected = outcomes.get(REJECTED, 0)
        response = ExportTraceServiceResponse()
        outcome = "ok"
        if rejected:
            why = errors[0] if errors else f"a span is larger than a record may be ({self.max_record_bytes} bytes)"
            response.partial_success.rejected_spans = rejected
            response.partial_success.error_message = f"{rejected} GenAI span(s) rejected; {why}"
            outcome = "partial"
        elif outcomes.get(SKIPPED_NO_CONTENT):
            n = outcomes[SKIPPED_NO_CONTENT]
            response.partial_success.error_message = (
                f"{n} GenAI span(s) carried no message content and were not monitored: turn content capture on "
                "(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT)"
            )
        if reply_type == PROTOBUF:
            return outcome, web.Response(body=response.SerializeToString(), content_type=PROTOBUF)
        from google.protobuf import json_format

        return outcome, web.json_response(json_format.MessageToDict(response))


def _split(request: ExportTraceServiceRequest) -> list[ExportTraceServiceRequest] | None:
    """Two requests with half the spans each, or None when it holds one span."""
    flat = [(rs, ss, span) for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
    if len(flat) < 2:
        return None
    halves = []
    for part in (flat[: len(flat) // 2], flat[len(flat) // 2 :]):
        views = [SpanView("", "", 0, 0, {}, [], False, {}, raw=item) for item in part]
        halves.append(next(iter(grouped_by_trace(views).values())))
    return halves


def run_receiver(settings: Settings) -> None:
    receiver = OTLPReceiver(settings)
    web.run_app(
        receiver.app(), host=settings.otlp_receiver_host, port=settings.otlp_receiver_port, print=None, access_log=None, **SERVER_OPTIONS
    )
