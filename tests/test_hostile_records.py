"""Records that once escaped the per-record rule: every record is an event or a dead letter, and a dead letter fits Kafka."""

import json
import logging

import pytest

from streams.events.schema import InferenceEvent
from streams.worker import pipeline as pl
from streams.worker.pipeline import HEADER_PREFIX, DeadLetter, Pipeline, RawRecord, decode

from .conftest import make_event

SECRET = "4111 1111 1111 1111"


def event_text(**raw_fields: str) -> str:
    """A valid event's JSON with some fields set to raw JSON text (numbers json.dumps could not write)."""
    payload = json.loads(make_event().model_dump_json())
    for name in raw_fields:
        payload.pop(name, None)
    members = [json.dumps(payload)[1:-1]] + [f'"{name}": {text}' for name, text in raw_fields.items()]
    return "{" + ", ".join(members) + "}"


@pytest.mark.parametrize(
    "fields",
    [
        {"input_tokens": "1" * 5000},  # past Python's int max str digits: json.loads raised a plain ValueError
        {"metadata": '{"n": -' + "9" * 4301 + "}"},
        {"metadata": '{"x": NaN}'},
        {"metadata": '{"x": Infinity}'},
        {"metadata": '{"x": -Infinity}'},
        {"latency_ms": "NaN"},
        {"metadata": '{"x": 1e400}'},  # a float that overflows to inf
    ],
)
def test_numbers_json_cannot_hold_are_invalid_json_and_the_batch_goes_on(fields):
    good = [make_event() for _ in range(2)]
    bad = event_text(**fields).encode()
    records = [
        RawRecord(good[0].model_dump_json().encode(), offset=0),
        RawRecord(bad, offset=1),
        RawRecord(good[1].model_dump_json().encode(), offset=2),
    ]
    result = Pipeline([], max_event_bytes=100_000).process(records)
    assert result.events == good
    [dead] = result.dead_letters
    assert dead.reason_code == pl.INVALID_JSON and dead.record.offset == 1
    assert "99999" not in dead.reason and "11111" not in dead.reason  # the number itself is not echoed


def test_an_unforeseen_decode_failure_dead_letters_that_record_only(monkeypatch, caplog):
    events = [make_event() for _ in range(5)]
    target = events[2].event_id
    original = InferenceEvent.model_validate.__func__

    def failing(cls, data, *args, **kwargs):
        if data.get("event_id") == target:
            raise RuntimeError(f"bug quoting the record: {SECRET}")
        return original(cls, data, *args, **kwargs)

    monkeypatch.setattr(InferenceEvent, "model_validate", classmethod(failing))
    records = [RawRecord(e.model_dump_json().encode(), offset=i) for i, e in enumerate(events)] + [RawRecord(b"{oops", offset=5)]
    with caplog.at_level(logging.ERROR):
        result = Pipeline([], max_event_bytes=100_000).process(records)
    assert [e.event_id for e in result.events] == [e.event_id for i, e in enumerate(events) if i != 2]
    assert [(d.reason_code, d.record.offset) for d in result.dead_letters] == [(pl.UNDECODABLE, 2), (pl.INVALID_JSON, 5)]
    assert len(result.events) + len(result.dead_letters) + result.duplicates == len(records)
    dead = result.dead_letters[0]
    assert "RuntimeError" in dead.reason and SECRET not in dead.reason
    assert SECRET.encode() not in b"".join(v for _, v in dead.headers("w1"))
    assert "RuntimeError" in caplog.text and SECRET not in caplog.text


# --- dead letters that fit the producer's message limit ---------------------------------

MIXED = "aé€😀"  # 1-, 2-, 3- and 4-byte characters, so cuts land inside each kind


def dlq_size(value, headers, key):
    return len(value or b"") + len(key or b"") + sum(len(k.encode()) + len(v) for k, v in headers)


def test_a_one_megabyte_dead_letter_is_cut_to_fit():
    text = MIXED * 49_000  # 196,000 characters, 490,000 bytes
    payload = json.loads(make_event(response=text, samples=[text, text]).model_dump_json())  # ~1.5 MB of valid shape...
    payload["latency_ms"] = -1  # ...and one invalid field
    record = RawRecord(json.dumps(payload, ensure_ascii=False).encode(), key=b"k" * 40, topic="in", partition=0, offset=7)
    dead = decode(record, max_event_bytes=2_000_000)
    assert dead.reason_code == pl.SCHEMA_VIOLATION and len(record.value) > 1_000_000
    limit = 1_048_576
    assert dlq_size(record.value, dead.headers("w1"), record.key) > limit - pl.DEAD_LETTER_FRAMING_BYTES

    value, headers = pl.fit_dead_letter(record.value, dead.headers("w1"), limit, key=record.key)
    assert dlq_size(value, headers, record.key) <= limit - pl.DEAD_LETTER_FRAMING_BYTES
    assert record.value.startswith(value) and len(value) > limit // 2
    value.decode("utf-8")  # cut on a character boundary
    h = dict(headers)
    assert h[HEADER_PREFIX + "truncated"] == b"true"
    assert h[HEADER_PREFIX + "original_bytes"] == str(len(record.value)).encode()
    assert h[HEADER_PREFIX + "reason_code"] == b"schema_violation"  # the original headers are kept


@pytest.mark.parametrize("max_bytes", range(5000, 5012))
def test_truncation_keeps_a_valid_utf8_prefix_whatever_the_cut(max_bytes):
    value = (MIXED * 2000).encode()
    headers = [(HEADER_PREFIX + "reason_code", b"schema_violation")]
    out, out_headers = pl.fit_dead_letter(value, headers, max_bytes)
    assert value.startswith(out) and out.decode("utf-8")
    assert dlq_size(out, out_headers, None) <= max_bytes - pl.DEAD_LETTER_FRAMING_BYTES
    assert dlq_size(out, out_headers, None) > max_bytes - pl.DEAD_LETTER_FRAMING_BYTES - 100  # cut close to the limit
    assert headers == [(HEADER_PREFIX + "reason_code", b"schema_violation")]  # the caller's list is not changed


@pytest.mark.parametrize("value", [b'{"small": true}', None, b""])
def test_a_dead_letter_that_fits_is_left_as_it_is(value):
    headers = [(HEADER_PREFIX + "reason_code", b"invalid_json")]
    out, out_headers = pl.fit_dead_letter(value, headers, 1_048_576, key=b"k")
    assert out == value and out_headers == headers
    assert HEADER_PREFIX + "truncated" not in dict(out_headers)


def test_the_cut_fits_a_real_kafka_record_batch():
    aiokafka_records = pytest.importorskip("aiokafka.record.default_records")
    limit = 1_048_576
    value, headers = pl.fit_dead_letter(
        (MIXED * 200_000).encode(), DeadLetter(RawRecord(b"x"), "r", "why").headers("w1"), limit, key=b"key"
    )
    builder = aiokafka_records.DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=0, producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=2 * limit
    )
    assert builder.append(0, timestamp=None, key=b"key", value=value, headers=headers) is not None
    assert len(builder.build()) < limit - 512  # room left for the produce request around the batch
