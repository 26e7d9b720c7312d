"""Records that once escaped the per-record rule: every record is an event or a dead letter, and a dead letter fits Kafka."""

import json
import logging

import pytest

from streams import pipeline as pl
from streams.pipeline import HEADER_PREFIX, DeadLetter, Pipeline, RawRecord, decode
from streams.schema import InferenceEvent

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
    records = [RawRecord(good[0].model_dump_json().encode(), offset=0), RawRecord(bad, offset=1), RawRecord(good[1].model_dump_json().encode(), offset=2)]
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
