import json
import unicodedata

import jsonschema
import pytest
from pydantic import ValidationError

from streams.events.schema import JSONSCHEMA_FILE, InferenceEvent, json_schema, render_json_schema
from streams.worker.pipeline import RawRecord, decode

from .conftest import make_event


def valid_payload(**over):
    payload = {
        "event_id": "evt-1",
        "timestamp": "2026-11-23T10:00:00Z",
        "model": "chat-large",
        "model_version": "2026.11.1",
        "prompt": "Hello",
        "response": "Hi! How can I help?",
    }
    payload.update(over)
    return payload


def test_plain_text_prompt_is_valid_with_defaults():
    e = InferenceEvent.model_validate(valid_payload())
    assert e.schema_version == 1
    assert e.route == "default"
    assert e.samples == [] and e.context == [] and e.metadata == {}
    assert e.prompt_text == "Hello" and e.user_text == "Hello"


def test_chat_prompt_joins_messages_and_user_text_keeps_only_user_turns():
    e = InferenceEvent.model_validate(
        valid_payload(
            prompt=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "My email is a@b.co"}],
            samples=["s1", "s2"],
            context=["doc"],
            latency_ms=12.5,
            input_tokens=5,
            output_tokens=7,
            metadata={"tenant": "acme", "retry": 0},
        )
    )
    assert e.prompt_text == "Be brief.\nMy email is a@b.co"
    assert e.user_text == "My email is a@b.co"


def test_round_trip_through_json():
    e = make_event(samples=["a", "b"])
    assert InferenceEvent.model_validate_json(e.model_dump_json()) == e


@pytest.mark.parametrize(
    "change, field",
    [
        ({"event_id": ""}, "event_id"),
        ({"event_id": "has space"}, "event_id"),
        ({"event_id": 12}, "event_id"),
        ({"timestamp": "2026-11-23T10:00:00"}, "timestamp"),  # no time zone
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"model": ""}, "model"),
        ({"prompt": []}, "prompt"),
        ({"prompt": [{"role": "wizard", "content": "x"}]}, "prompt"),
        ({"response": None}, "response"),
        ({"response": "x" * 200_001}, "response"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"output_tokens": -3}, "output_tokens"),
        ({"samples": "not a list"}, "samples"),
        ({"metadata": {"nested": {"a": 1}}}, "metadata"),
        ({"schema_version": 2}, "schema_version"),
        ({"respones": "typo"}, "respones"),  # unknown fields are refused, not silently dropped
    ],
)
def test_each_kind_of_invalid_event_is_refused_naming_the_field(change, field):
    with pytest.raises(ValidationError) as info:
        InferenceEvent.model_validate(valid_payload(**change))
    assert field in {str(err["loc"][0]) for err in info.value.errors()}


def test_missing_required_fields_are_all_named():
    with pytest.raises(ValidationError) as info:
        InferenceEvent.model_validate({"event_id": "x"})
    missing = {err["loc"][0] for err in info.value.errors() if err["type"] == "missing"}
    assert missing == {"timestamp", "model", "model_version", "prompt", "response"}


def test_events_are_immutable():
    e = make_event()
    with pytest.raises(ValidationError):
        e.response = "changed"


def test_committed_json_schema_is_what_the_model_generates():
    assert JSONSCHEMA_FILE.read_text() == render_json_schema(), "run: streamwarden schema export --out " + str(JSONSCHEMA_FILE)


def test_json_schema_validates_like_the_model_for_non_python_producers():
    schema = json.loads(JSONSCHEMA_FILE.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    good = json.loads(make_event(prompt=[{"role": "user", "content": "hi"}]).model_dump_json())
    assert not list(validator.iter_errors(good))
    for bad in (valid_payload(latency_ms=-1), valid_payload(extra_field=1), {"event_id": "x"}):
        assert list(validator.iter_errors(bad)), bad


def test_json_schema_names_otel_genai_attributes():
    props = json_schema()["properties"]
    assert props["model"]["x-otel"] == "gen_ai.request.model"
    assert props["input_tokens"]["x-otel"] == "gen_ai.usage.input_tokens"
    assert props["output_tokens"]["x-otel"] == "gen_ai.usage.output_tokens"
    assert "x-otel" not in props["model_version"]


# Blank names: whitespace the worker strips (Unicode White_Space), alone or mixed.
BLANK_NAMES = [
    " ",
    "\t",
    "\n",
    "\r\n",
    "\x0b",
    "\x0c",
    "\x85",
    "\u00a0",
    "\u1680",
    *map(chr, range(0x2000, 0x200B)),
    "\u2028",
    "\u2029",
    "\u202f",
    "\u205f",
    "\u3000",
    " \u3000\t\u1680 ",
]
ORDINARY_NAMES = ["chat-large", "2026.11.1", "  padded  ", "a b", "名前", "\u3000x\u3000", "\ufeff", "\x1c", "\u200b", "\u180e"]
# Every character someone might call whitespace: controls, format characters, separators.
WHITESPACE_LIKE = [chr(i) for i in range(0x110000) if unicodedata.category(chr(i)) in {"Cc", "Cf", "Zs", "Zl", "Zp"}]


def _verdicts(field: str, name: str) -> tuple[bool, bool]:
    """(the JSON Schema accepts, the worker accepts) for a valid event with this name in ``field``."""
    payload = valid_payload(**{field: name})
    schema_ok = _VALIDATOR.is_valid(payload)
    worker_ok = isinstance(decode(RawRecord(json.dumps(payload).encode()), 100_000), InferenceEvent)
    return schema_ok, worker_ok


_VALIDATOR = jsonschema.Draft202012Validator(json.loads(JSONSCHEMA_FILE.read_text()))


@pytest.mark.parametrize("field", ["model", "route", "provider"])
def test_json_schema_and_worker_agree_on_blank_names(field):
    assert {name: _verdicts(field, name) for name in BLANK_NAMES} == {name: (False, False) for name in BLANK_NAMES}
    assert {name: _verdicts(field, name) for name in ORDINARY_NAMES} == {name: (True, True) for name in ORDINARY_NAMES}
    disagree = [hex(ord(c)) for c in WHITESPACE_LIKE for name in (c, f" {c} ") if len(set(_verdicts(field, name))) > 1]
    assert disagree == []
