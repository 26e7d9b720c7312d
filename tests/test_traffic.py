"""The demo's synthetic traffic: its schedule of incidents, its RAG events, and its determinism."""

from __future__ import annotations

import re

import pytest

from detectors.consistency import split_sentences
from detectors.grounding import GroundingDetector
from streams.events.schema import InferenceEvent
from streams.local.traffic import _REFUSALS, _TOXIC, RAG_SHARE, TOXIC_SHARE, UNGROUNDED_SHARE, Phase, Schedule, TrafficGenerator


def events(phase: str, n: int, seed: int = 3) -> list:
    """``n`` valid events of one phase."""
    gen = TrafficGenerator(Schedule((Phase(phase, 0.0, 1.0),)) if phase != "clean" else Schedule(()), seed=seed)
    out = []
    while len(out) < n:
        kind, payload = gen.event(0.5)
        if kind == "event":
            out.append(payload)
    return out


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def supported(response: str, context: list[str]) -> bool:
    """Every sentence of the response is in one of the documents, word for word."""
    docs = [_norm(d) for d in context]
    return all(any(_norm(s) in d for d in docs) for s in split_sentences(response))


def test_the_schedule_places_every_incident_once_in_order_with_clean_traffic_between():
    schedule = Schedule.for_run(70.0)
    assert [p.name for p in schedule.phases] == list(Schedule.INCIDENTS)
    assert "ungrounded" in Schedule.INCIDENTS and Schedule.INCIDENTS[-1] == "topic_shift"
    assert schedule.phase_at(0.0) == "clean" and schedule.phase_at(69.9) == "clean"
    lengths = {round(p.end_s - p.start_s, 6) for p in schedule.phases}
    assert len(lengths) == 1 and 0.08 * 70 < lengths.pop() <= 0.15 * 70  # 80% of 1/9 with eight incidents
    for a, b in zip(schedule.phases, schedule.phases[1:]):
        assert b.start_s - a.end_s >= 0.02 * 70  # a clean gap between two incidents
    assert schedule.phases[-1].end_s < 70.0
    for p in schedule.phases:
        assert schedule.phase_at((p.start_s + p.end_s) / 2) == p.name


def test_the_same_seed_gives_the_same_traffic_and_another_seed_other_traffic():
    def run(seed):
        gen = TrafficGenerator(Schedule.for_run(20.0), seed=seed)
        return [p.model_dump(exclude={"timestamp"}) if kind == "event" else p for kind, p in (gen.event(i / 40) for i in range(800))]

    first = run(5)
    assert first == run(5)
    assert first != run(6)
    assert any(isinstance(e, dict) and e["context"] for e in first)


@pytest.mark.parametrize("phase", ["clean", *Schedule.INCIDENTS])
def test_a_share_of_the_support_questions_come_with_documents_in_every_phase(phase):
    evs = events(phase, 1200)
    support = [e for e in evs if e.model == "support-assistant"]
    with_context = [e for e in support if e.context]
    assert all(not e.context for e in evs if e.model != "support-assistant")
    if phase == "topic_shift":  # most questions are off the help centre's topics: nothing is retrieved
        assert 0 < len(with_context) < 0.1 * len(support)
    elif phase in ("refusal_burst", "biased", "attack"):  # refusals come without documents: they make no claim
        assert 0 < len(with_context) / len(support) < RAG_SHARE - 0.03
        assert not [e for e in with_context if e.response in _REFUSALS]
    else:
        assert abs(len(with_context) / len(support) - RAG_SHARE) < 0.06
    for e in with_context:
        assert 2 <= len(e.context) <= (4 if phase == "attack" else 3) and len(set(e.context)) == len(e.context)  # + a poisoned one
        assert all(2 <= len(split_sentences(d)) <= 5 for d in e.context)
        assert e.input_tokens >= sum(len(d) for d in e.context) // 4


def test_clean_rag_answers_are_stated_by_one_of_their_documents():
    rag = [e for e in events("clean", 3000) if e.context]
    assert len(rag) > 200
    for e in rag:
        assert supported(e.response, e.context), (e.response, e.context)
        # One document states the whole answer; every checked sentence has at least 4 words.
        assert any(all(_norm(s) in _norm(d) for s in split_sentences(e.response)) for d in e.context)
        assert all(len(s.split()) >= 4 for s in split_sentences(e.response) if s.lower() != "yes.")
        assert "confirmation" not in e.response  # no echo of the user's e-mail: it is in no document
    # The lexical fallback agrees: nothing to flag.
    assert GroundingDetector(method="lexical").score_batch(rag) == []


def test_ungrounded_rag_answers_contradict_or_ignore_their_documents():
    evs = events("ungrounded", 3000)
    rag = [e for e in evs if e.context]
    assert len(rag) > 200
    unsupported = [e for e in rag if not supported(e.response, e.context)]
    assert abs(len(unsupported) / len(rag) - UNGROUNDED_SHARE) < 0.08
    # The others are grounded answers, as in clean traffic.
    assert GroundingDetector(method="lexical").score_batch([e for e in rag if e not in unsupported]) == []
    # About half ignore the documents (an unrelated policy): even the lexical fallback flags those.
    lexical = GroundingDetector(method="lexical")
    results = lexical.score_many([e.response for e in unsupported], [e.context for e in unsupported])
    assert sum(r.score >= lexical.threshold for r in results) > 0.4 * len(unsupported)


def test_rag_traffic_leaves_the_other_draws_as_they_were(monkeypatch):
    """The RAG draws come from their own generator: the same seed gives the same prompts, models
    and incidents with or without documents (only a RAG answer's e-mail echo goes)."""

    def run(rag: bool) -> list:
        gen = TrafficGenerator(Schedule.for_run(60.0), seed=9)
        if not rag:
            monkeypatch.setattr(gen._rag, "random", lambda: 1.0)  # no question gets documents
        return [gen.event(i / 20) for i in range(1200)]

    plain, rag = run(False), run(True)
    assert any(isinstance(e, InferenceEvent) and e.context for _, e in rag)
    for (_, a), (_, b) in zip(plain, rag):
        if not (isinstance(a, InferenceEvent) and isinstance(b, InferenceEvent)):
            assert a == b
            continue
        assert (a.model, a.prompt, a.event_id, a.latency_ms, a.metadata) == (b.model, b.prompt, b.event_id, b.latency_ms, b.metadata)
        if not b.context:
            assert (a.response, a.samples) == (b.response, b.samples)
        elif b.metadata["phase"] != "ungrounded":
            assert a.response.startswith(b.response)


def test_the_toxic_canary_insults_clean_questions_in_a_share_of_its_answers_and_only_there():
    from detectors.toxicity import ToxicityDetector

    def insulting(e) -> bool:
        return any(t in e.response for t in _TOXIC)

    evs = events("toxic_canary", 1500)
    code = [e for e in evs if e.model == "code-helper"]
    toxic = [e for e in code if insulting(e)]
    assert abs(len(toxic) / len(code) - TOXIC_SHARE) < 0.06
    assert not [e for e in evs if e.model != "code-helper" and insulting(e)]
    assert not [e for e in events("clean", 1500) if insulting(e)]
    # The shipped detector flags most of the insulting answers, as toxic responses to clean prompts,
    # and none of the phase's other answers.
    det = ToxicityDetector()
    sample = toxic[:60] + [e for e in evs if not insulting(e)][:120]
    flagged = {f.event_id: f for f in det.score_batch(sample)}
    assert sum(e.event_id in flagged for e in toxic[:60]) >= 0.8 * 60
    assert not [e for e in sample if not insulting(e) and e.event_id in flagged]
    assert {f.kind for f in flagged.values()} == {"toxic_response"}


def test_the_toxic_canary_leaves_the_other_draws_as_they_were(monkeypatch):
    """Its draws come from their own generator: without it, the phase is clean traffic, event for event."""

    def run(toxic: bool) -> list:
        gen = TrafficGenerator(Schedule((Phase("toxic_canary", 0.0, 100.0),)), seed=4)
        if not toxic:
            monkeypatch.setattr(gen._toxic, "random", lambda: 1.0)  # no answer turns toxic
        return [gen.event(0.5) for _ in range(600)]

    plain, toxic = run(False), run(True)
    changed = 0
    for (_, a), (_, b) in zip(plain, toxic):
        if not (isinstance(a, InferenceEvent) and isinstance(b, InferenceEvent)):
            assert a == b
            continue
        assert (a.model, a.prompt, a.event_id, a.context, a.samples) == (b.model, b.prompt, b.event_id, b.context, b.samples)
        if a.response != b.response:
            changed += 1
            assert b.model == "code-helper" and a.response in b.response
    assert changed > 50
