"""GenAI spans from real clients, through a real broker and a real worker, to findings.

One worker (only the pii detector, to start fast) and one ``streamwarden otlp receive`` serve the
module. Two ways in: the SDK's OTLP/HTTP exporter to the receiver (configured by
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT alone), and the SDK's own protobuf encoding written to the
OTLP topic as a Collector's kafka exporter writes it.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections import Counter

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client.parser import text_string_to_metric_families

from streams import kafka_clients
from streams.events.topics import ensure_topics
from streams.local.broker import free_port
from streams.local.outputs import OutputReader, OutputTally
from streams.settings import Settings
from streams.worker.pipeline import HEADER_PREFIX

from .conftest import WorkerProcess, http_ok, isolated_settings, wait_for
from .model_standin import ModelStandIn
from .otel_clients import ask, chat_spans, environ, instrumented, otlp_json, otlp_proto, provider, sdk_spans

pytestmark = pytest.mark.integration

LEAK = "Dana's direct line is 415-555-0132; write to dana.whitfield@example.org."
QUESTIONS = ["How do I reach Dana?", "Who handles refunds?", "Is Dana in today?"]


@pytest.fixture(scope="module")
def stack(broker, tmp_path_factory):
    """Settings, a worker and a receiver (real processes) on their own topics; the outputs tallied."""
    tmp = tmp_path_factory.mktemp("otlp")
    settings = isolated_settings(broker, input_partitions=2, output_partitions=1, otlp_receiver_port=free_port())
    ensure_topics(settings)
    extra = {"STREAMWARDEN_DETECTORS": '["pii"]', "STREAMWARDEN_OTLP_RECEIVER_PORT": str(settings.otlp_receiver_port)}
    worker = WorkerProcess(settings, tmp / "worker.log", extra)
    receiver = WorkerProcess(settings, tmp / "receiver.log", extra, args=("otlp", "receive"))
    tally, dead, lock = OutputTally(), [], threading.Lock()

    def on_record(rec):
        with lock:
            tally.add(rec)
            if rec.role == "deadletter":
                dead.append(rec)

    reader = OutputReader(settings, ("findings", "deadletter"), on_record).start()
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{settings.web_port}/healthz"), 90, message="the worker")
        wait_for(lambda: http_ok(f"http://127.0.0.1:{settings.otlp_receiver_port}/healthz"), 60, message="the receiver")
        yield settings, tally, dead
    except BaseException:
        print(worker.log()[-4000:], receiver.log()[-2000:])
        raise
    finally:
        reader.stop()
        receiver.stop()
        assert worker.stop() == 0


def _event_ids(spans) -> list[str]:
    return [
        f"otel-{s.get_span_context().trace_id:032x}-{s.get_span_context().span_id:016x}"
        for s in spans
        if "chat" in (s.attributes.get("gen_ai.operation.name"), s.attributes.get("llm.request.type"))
        or s.attributes.get("openinference.span.kind") == "LLM"
    ]


def _leaks(tally: OutputTally, ids: list[str]) -> bool:
    return all(tally.finding_event_ids[i] >= 1 for i in ids)


def _otlp_spans(settings: Settings) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{settings.web_port}/metrics", timeout=5).read().decode()
    return {
        s.labels["outcome"]: s.value for f in text_string_to_metric_families(body) if f.name == "streamwarden_otlp_spans" for s in f.samples
    }


def test_the_sdk_exporter_through_the_receiver_to_pii_findings(stack):
    settings, tally, _ = stack
    endpoint = f"http://127.0.0.1:{settings.otlp_receiver_port}/v1/traces"
    with environ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint}):
        exporter = OTLPSpanExporter()  # the endpoint from the environment, nothing else
    tp, memory = provider(processor=BatchSpanProcessor(exporter))
    with ModelStandIn(lambda prompt: LEAK) as model, instrumented("openai_v2", tp):
        answers = [ask(model.base_url, [{"role": "user", "content": q}]) for q in QUESTIONS]
    assert answers == [LEAK] * 3
    assert tp.force_flush(10_000)
    tp.shutdown()
    ids = _event_ids(memory.get_finished_spans())
    assert len(ids) == 3
    wait_for(lambda: _leaks(tally, ids), 90, message="a pii finding for each exported span")
    assert all(tally.finding_event_ids[i] == 1 for i in ids)
    # Span counters are counted once the batch commits, which can follow its findings.
    wait_for(lambda: _otlp_spans(settings).get("decoded", 0) >= 3, 30, message="the receiver's spans counted")


def test_spans_written_to_the_topic_as_a_collector_does(stack):
    settings, tally, dead = stack
    before = _otlp_spans(settings).get("decoded", 0)  # the receiver's test, when it ran, counted its 3
    v2 = chat_spans("openai_v2", LEAK, [{"role": "user", "content": QUESTIONS[0]}])
    openllmetry = chat_spans("openllmetry", LEAK, [{"role": "user", "content": QUESTIONS[1]}])
    openinference = chat_spans("openinference", LEAK, [{"role": "user", "content": QUESTIONS[2]}])
    older = sdk_spans(
        "openai.chat",
        {
            "llm.request.type": "chat",
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": QUESTIONS[0],
            "gen_ai.completion.0.content": LEAK,
        },
    )
    silent = chat_spans("openai_v2", LEAK, [{"role": "user", "content": QUESTIONS[0]}], capture=False)
    http_only = sdk_spans("GET /orders", {"http.request.method": "GET"})
    broken = sdk_spans("chat m", {"gen_ai.operation.name": "chat", "gen_ai.input.messages": "[oops " + LEAK})
    good = v2 + openllmetry + openinference + older
    records = [
        otlp_proto(v2 + http_only),
        otlp_proto(openllmetry + openinference),
        otlp_proto(older + broken),  # one span rejected: the record is also dead-lettered, its good span processed
        otlp_proto(silent),
        otlp_proto(http_only),  # no GenAI span at all
        otlp_proto(v2)[:40],  # truncated protobuf
        otlp_json(v2),  # JSON on a protobuf topic
        otlp_proto(v2),  # the same trace again (a Collector retry): the same finding ids
    ]
    producer = kafka_clients.producer(settings, "test-collector")
    for value in records:
        producer.send(settings.otlp_topic_name, value=value)
    producer.flush(10)
    producer.close()

    ids = _event_ids(good)
    assert len(ids) == 4
    wait_for(lambda: _leaks(tally, ids) and len(dead) >= 3, 90, message="a finding per GenAI span and 3 dead letters")
    expected = {"decoded": before + 5, "skipped_no_content": 1, "rejected": 1, "skipped_not_genai": 2}
    wait_for(
        lambda: all(_otlp_spans(settings).get(k, 0) >= v for k, v in expected.items()),
        30,
        message="the span counters (counted once each batch commits)",
    )
    assert all(tally.finding_event_ids[i] == 1 for i in ids)  # the repeated trace's finding was a duplicate id, dropped
    reasons = Counter(r.headers[HEADER_PREFIX + "reason_code"] for r in dead)
    assert reasons == Counter({"invalid_otlp": 2, "schema_violation": 1})
    violation = next(r for r in dead if r.headers[HEADER_PREFIX + "reason_code"] == "schema_violation")
    assert "gen_ai.input.messages: not JSON" in violation.headers[HEADER_PREFIX + "reason"]
    assert violation.headers[HEADER_PREFIX + "source_topic"] == settings.otlp_topic_name
    # Redacted by default, as OTLP/JSON text: the leaked e-mail is masked, the spans still readable.
    assert violation.headers[HEADER_PREFIX + "payload_format"] == "otlp_json"
    body = violation.value.decode()
    assert "dana.whitfield@example.org" not in body and json.loads(body)["resourceSpans"]
    spans = _otlp_spans(settings)
    # This test's spans: 4 + 1 again decoded, 1 without content, 1 rejected, 2 not GenAI.
    assert {k: spans.get(k, 0) for k in expected} == expected
