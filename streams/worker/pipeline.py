"""What the worker does to one micro-batch, free of Kafka and faust so it can be tested alone.

records (bytes) -> decode + validate -> events | dead letters
    (a record of the OTLP topic is one ExportTraceServiceRequest: it gives the events of its GenAI spans)
events -> every detector, each isolated -> findings, detector errors

The batch's embedding forward pass (one per model, shared by the detectors that need vectors) runs
on a thread of its own while the detectors that asked for no vectors this batch run (``overlap``, on
by default): the forward pass releases the GIL, so on a machine with a core to spare the two halves
run side by side. Findings come out in the detectors' order either way.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import ValidationError

from detectors.base import Detector, Finding
from detectors.contracts import LeavesUnjudged, NeedsEmbeddings, declared
from streams.events.schema import SCHEMA_VERSION, InferenceEvent
from streams.otlp.decode import OTLPDecoder, OTLPPayloadError

log = logging.getLogger(__name__)

# Dead-letter reasons: a short code (for metrics and routing) and a readable text.
OVERSIZED = "oversized"
EMPTY = "empty"
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
UNSUPPORTED_VERSION = "unsupported_schema_version"
SCHEMA_VIOLATION = "schema_violation"
PROCESSING_FAILED = "processing_failed"  # the batch could not be handled after decoding (see the worker)
UNDECODABLE = "undecodable"  # an unforeseen failure while decoding: a bug, the record kept for a replay
# OTLP records add streams.otlp.decode's codes: invalid_otlp (not OTLP trace data), and schema_violation when GenAI spans
# make no valid event (the rest of the record is processed); invalid_utf8, invalid_json, not_an_object for OTLP/JSON.

HEADER_PREFIX = "streamwarden.dlq."


@dataclass(frozen=True)
class RawRecord:
    value: bytes | None
    key: bytes | None = None
    topic: str = ""
    partition: int = -1
    offset: int = -1


@dataclass(frozen=True)
class DeadLetter:
    """A rejected record and why; the worker publishes it redacted or byte-exact (``deadletter_payload``)."""

    record: RawRecord
    reason_code: str
    reason: str
    errors: tuple[str, ...] = ()

    def headers(self, worker_id: str) -> list[tuple[str, bytes]]:
        r = self.record
        pairs = {
            "reason_code": self.reason_code,
            "reason": self.reason,
            "errors": json.dumps(list(self.errors)),
            "source_topic": r.topic,
            "source_partition": str(r.partition),
            "source_offset": str(r.offset),
            "worker": worker_id,
            "rejected_at_ms": str(int(time.time() * 1000)),
        }
        return [(HEADER_PREFIX + k, v.encode("utf-8")) for k, v in pairs.items()]


# Room left in a dead letter for Kafka's framing: the record batch, the record's varints and the produce request.
DEAD_LETTER_FRAMING_BYTES = 1024
_HEADER_FRAMING_BYTES = 10  # the two length varints of one header


def fit_dead_letter(
    value: bytes | None, headers: list[tuple[str, bytes]], max_bytes: int, key: bytes | None = None
) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """The value and headers to produce, cut so that the dead letter fits in ``max_bytes``.

    ``max_bytes`` is the smallest of the producer's max request size and the dead-letter
    topic's max message size. A value too long is truncated on a UTF-8 character boundary
    and headers say so (``truncated``, ``original_bytes``); one that fits is returned as is.
    """
    if value is None:
        return value, headers
    extra = [(HEADER_PREFIX + "truncated", b"true"), (HEADER_PREFIX + "original_bytes", str(len(value)).encode())]

    def size(pairs: list[tuple[str, bytes]]) -> int:
        return sum(len(k.encode("utf-8")) + len(v) + _HEADER_FRAMING_BYTES for k, v in pairs)

    room = max_bytes - DEAD_LETTER_FRAMING_BYTES - len(key or b"")
    if len(value) + size(headers) <= room:
        return value, headers
    cut = max(0, room - size(headers) - size(extra))
    # Back off to the start of the character the cut falls in (at most 3 continuation bytes).
    for _ in range(3):
        if 0 < cut < len(value) and value[cut] & 0xC0 == 0x80:
            cut -= 1
    return value[:cut], headers + extra


@dataclass
class BatchResult:
    events: list[InferenceEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    detector_errors: Counter = field(default_factory=Counter)
    # By detector, the events it left unjudged: its ration refused them, it had nothing to judge them on, or it raised.
    unjudged: dict[str, set[str]] = field(default_factory=dict)
    detector_seconds: dict[str, float] = field(default_factory=dict)
    decode_seconds: float = 0.0
    duplicates: int = 0
    otlp_spans: Counter = field(default_factory=Counter)  # spans of OTLP records, by outcome


def _describe_validation_error(exc: ValidationError) -> tuple[str, ...]:
    # Never echo the input values: they may be personal data.
    out = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        out.append(f"{loc}: {err['msg']}")
    return tuple(out[:20])


class _NotJSON(ValueError):
    """Raised by the parser hooks below; its message is ours, never the record's."""


def _reject_constant(name: str) -> None:
    raise _NotJSON(f"{name} is not a JSON value")  # name is one of NaN, Infinity, -Infinity


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJSON("a number is out of range")
    return value


def _bounded_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # more digits than sys.get_int_max_str_digits()
        raise _NotJSON(f"an integer has more than {sys.get_int_max_str_digits()} digits") from None


# One decoder, built once (json.loads with hooks would build a new one per record).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_bounded_int)


def decode(record: RawRecord, max_event_bytes: int) -> InferenceEvent | DeadLetter:
    """Parse and validate one record; any problem, even an unforeseen one, becomes a dead letter with its reason."""
    try:
        return _decode(record, max_event_bytes)
    except Exception as exc:  # noqa: BLE001 - one record must not lose the batch
        # The type and the frames, not the message: a message may quote the record.
        log.error(
            "decoding %s[%d]@%d failed: %s\n%s",
            record.topic,
            record.partition,
            record.offset,
            type(exc).__name__,
            "".join(traceback.format_tb(exc.__traceback__)),
        )
        return DeadLetter(record, UNDECODABLE, f"decoding failed unexpectedly ({type(exc).__name__})")


def _decode(record: RawRecord, max_event_bytes: int) -> InferenceEvent | DeadLetter:
    value = record.value
    if value is None or len(value) == 0:
        return DeadLetter(record, EMPTY, "the record has no value")
    if len(value) > max_event_bytes:
        return DeadLetter(record, OVERSIZED, f"the record is {len(value)} bytes; the limit is {max_event_bytes}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return DeadLetter(record, INVALID_UTF8, f"the record is not valid UTF-8 (byte {exc.start})")
    try:
        data = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        return DeadLetter(record, INVALID_JSON, f"the record is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except RecursionError:
        # The C parser bounds nesting itself; shallower nesting fails validation.
        return DeadLetter(record, INVALID_JSON, "the record is not JSON: nested too deeply")
    except _NotJSON as exc:
        return DeadLetter(record, INVALID_JSON, f"the record is not JSON: {exc}")
    if not isinstance(data, dict):
        return DeadLetter(record, NOT_AN_OBJECT, f"the record is a JSON {type(data).__name__}, not an object")
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        return DeadLetter(
            record, UNSUPPORTED_VERSION, f"schema_version {str(version)[:16]!r} is not supported (this worker reads {SCHEMA_VERSION})"
        )
    try:
        return InferenceEvent.model_validate(data)
    except ValidationError as exc:
        errors = _describe_validation_error(exc)
        return DeadLetter(record, SCHEMA_VIOLATION, f"{len(exc.errors())} field(s) invalid: {errors[0]}", errors)


def decode_otlp(record: RawRecord, max_event_bytes: int, decoder: OTLPDecoder, spans: Counter) -> list[InferenceEvent | DeadLetter]:
    """The events of one OTLP record's GenAI spans, counting every span's outcome in ``spans``.

    A record that is not OTLP traces is one dead letter. GenAI spans that make no valid event
    are counted ``rejected`` and the record is also dead-lettered (``schema_violation``, the
    spans and fields in ``errors``), so nothing is lost; its other spans are processed as usual
    (a replay of the dead letter gives them again with the same event ids).
    """
    value = record.value
    if value is None or len(value) == 0:
        return [DeadLetter(record, EMPTY, "the record has no value")]
    if len(value) > max_event_bytes:
        return [DeadLetter(record, OVERSIZED, f"the record is {len(value)} bytes; the limit is {max_event_bytes}")]
    try:
        decoded = decoder.decode(value)
    except OTLPPayloadError as exc:
        return [DeadLetter(record, exc.code, exc.reason)]
    except Exception as exc:  # noqa: BLE001 - one record must not lose the batch
        log.error("decoding OTLP %s[%d]@%d failed: %s", record.topic, record.partition, record.offset, type(exc).__name__)
        return [DeadLetter(record, UNDECODABLE, f"decoding failed unexpectedly ({type(exc).__name__})")]
    spans.update(decoded.outcomes)
    out: list[InferenceEvent | DeadLetter] = list(decoded.events)
    if decoded.rejected:
        n = decoded.rejected
        out.append(
            DeadLetter(record, SCHEMA_VIOLATION, f"{n} GenAI span(s) make no valid event: {decoded.errors[0]}", tuple(decoded.errors))
        )
    return out


class Pipeline:
    """Decodes a batch and runs every detector on its valid events, each one isolated.

    With an ``otlp_decoder``, records of ``otlp_topic`` are OTLP traces, the others native events.
    With ``overlap`` (the default), the embedding forward pass runs on the pipeline's own thread
    beside the detectors that asked for no vectors this batch; ``process`` is called from one thread
    at a time (the worker's executor).
    """

    def __init__(
        self,
        detectors: Sequence[Detector],
        max_event_bytes: int,
        otlp_topic: str | None = None,
        otlp_decoder: OTLPDecoder | None = None,
        overlap: bool = True,
    ):
        self.detectors = list(detectors)
        self.max_event_bytes = max_event_bytes
        self.otlp_topic = otlp_topic
        self.otlp_decoder = otlp_decoder
        self.overlap = overlap
        self._forward_thread: ThreadPoolExecutor | None = None

    def process(self, records: Sequence[RawRecord]) -> BatchResult:
        result = BatchResult()
        t0 = time.perf_counter()
        seen: set[str] = set()
        for record in records:
            if self.otlp_decoder is not None and record.topic == self.otlp_topic:
                items: list[InferenceEvent | DeadLetter] = decode_otlp(record, self.max_event_bytes, self.otlp_decoder, result.otlp_spans)
            else:
                items = [decode(record, self.max_event_bytes)]
            for decoded in items:
                if isinstance(decoded, DeadLetter):
                    result.dead_letters.append(decoded)
                elif decoded.event_id in seen:
                    # A client retry inside one batch: processed once, the copy counted and dropped.
                    result.duplicates += 1
                else:
                    seen.add(decoded.event_id)
                    result.events.append(decoded)
        result.decode_seconds = time.perf_counter() - t0
        if result.events:
            with ExitStack() as stack:
                wanted, waiting = self._embedding_needs(result)
                if not wanted:
                    findings = self._run_detectors(result, self.detectors)
                elif not self.overlap or len(waiting) == len(self.detectors):
                    self._prefetch_embeddings(result, wanted, stack)
                    findings = self._run_detectors(result, self.detectors)
                else:
                    # The forward pass on its own thread; meanwhile the detectors that need no vectors run here.
                    if self._forward_thread is None:
                        self._forward_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")
                    forward = self._forward_thread.submit(self._prefetch_embeddings, result, wanted, stack)
                    try:
                        findings = self._run_detectors(result, [d for d in self.detectors if id(d) not in waiting])
                    finally:  # the batch cache closes (the stack's exit) only after the forward pass entered it
                        forward.result()
                    findings.update(self._run_detectors(result, [d for d in self.detectors if id(d) in waiting]))
            result.findings = [f for d in self.detectors for f in findings.get(id(d), [])]  # in the detectors' order
        return result

    def close(self) -> None:
        """Stops the forward-pass thread (a later ``process`` starts a new one)."""
        if self._forward_thread is not None:
            self._forward_thread.shutdown(wait=True)
            self._forward_thread = None

    def _embedding_needs(self, result: BatchResult) -> tuple[dict[int, tuple[Any, list[str]]], set[int]]:
        """The texts to encode per embedding service, and the detectors (ids) that wait for the forward pass: those
        that asked for texts this batch. The others run beside it; one that encodes texts of its own meanwhile is
        served correctly (the service makes one model call at a time, and the batch cache only gains vectors)."""
        wanted: dict[int, tuple[Any, list[str]]] = {}
        waiting: set[int] = set()
        for detector in self.detectors:
            if NeedsEmbeddings not in declared(detector):  # the class declares it (isinstance would evaluate properties)
                continue
            needs = cast(NeedsEmbeddings, detector)
            try:
                service = needs.embeddings
                texts = needs.texts_to_embed(result.events)
            except Exception:  # noqa: BLE001 - the detector's own run will fail and be counted
                waiting.add(id(detector))  # it runs after the forward pass, as it would have without one
                continue
            if service is None or not texts:
                continue
            waiting.add(id(detector))
            wanted.setdefault(id(service), (service, []))[1].extend(texts)
        return wanted, waiting

    def _prefetch_embeddings(self, result: BatchResult, wanted: dict[int, tuple[Any, list[str]]], stack: ExitStack) -> None:
        """One forward pass per embedding model for the whole batch, shared by every detector."""
        t = time.perf_counter()
        for service, texts in wanted.values():
            try:
                stack.enter_context(service.batch(texts))
            except Exception as exc:  # noqa: BLE001 - detectors will encode on their own
                log.error("embedding prefetch failed: %s", type(exc).__name__)
        result.detector_seconds["embed"] = time.perf_counter() - t

    def _run_detectors(self, result: BatchResult, detectors: Sequence[Detector]) -> dict[int, list[Finding]]:
        """Runs ``detectors`` in order; returns their findings by detector (id). A failure is counted in ``result``,
        and its batch's events are unjudged by that detector, as are those a detector's ration left."""
        out: dict[int, list[Finding]] = {}
        for detector in detectors:
            t = time.perf_counter()
            try:
                out[id(detector)] = detector.score_batch(result.events)
            except Exception as exc:  # noqa: BLE001 - one detector must not stop the others or the stream
                result.detector_errors[detector.name] += 1
                result.unjudged[detector.name] = {e.event_id for e in result.events}
                # The type and the frames, not the message: a message may quote event text.
                log.error(
                    "detector %s failed on a batch of %d events: %s\n%s",
                    detector.name,
                    len(result.events),
                    type(exc).__name__,
                    "".join(traceback.format_tb(exc.__traceback__)),
                )
            finally:
                result.detector_seconds[detector.name] = time.perf_counter() - t
            if id(detector) in out and LeavesUnjudged in declared(detector):
                try:
                    left = cast(LeavesUnjudged, detector).unjudged(result.events)
                except Exception as exc:  # noqa: BLE001 - its findings stand; the events count as judged
                    log.error("detector %s could not say which events it left unjudged: %s", detector.name, type(exc).__name__)
                else:
                    if left:
                        result.unjudged[detector.name] = set(left)
        return out
