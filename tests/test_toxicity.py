"""Toxicity: the shipped heads offline, ranking on held-out data, per-identity-term false positives, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from detectors import registry
from detectors.toxicity import (
    CATEGORIES,
    IDENTITY_PLACEHOLDER,
    NOT_MASKED,
    ToxicityDetector,
    chunk_text,
    identity_pattern,
    identity_terms,
    mask_identities,
    mask_span,
    normalise,
    rule_hits,
)
from streams.settings import Settings

from .conftest import ROOT, make_event, shared_data

TOXIC = "You are a worthless, disgusting idiot and everyone hates you."
CLEAN = "Sure! You can change your plan under Settings, and the change applies from your next bill."


@pytest.fixture(scope="module")
def det() -> ToxicityDetector:
    d = ToxicityDetector()
    d.warm_up()
    return d


def test_registered_under_toxicity_and_on_by_default():
    assert registry.REGISTRY["toxicity"] == "toxicity:ToxicityDetector"
    assert "toxicity" in Settings.model_fields["detectors"].default_factory()  # type: ignore[misc]
    assert isinstance(registry.build(["toxicity"])[0], ToxicityDetector)


def test_the_head_loads_and_scores_offline():
    """In a fresh process with every outbound connection refused: the head and the embedding model load from disk."""
    code = (
        "import json; from tests.netguard import NetGuard; g = NetGuard().install(); "
        "from detectors.toxicity import ToxicityDetector; d = ToxicityDetector(); "
        f"r = d.score({TOXIC!r}); c = d.score({CLEAN!r}); "
        "print(json.dumps({'attempts': g.attempts, 'toxic': r.score, 'clean': c.score, 'threshold': d.threshold, 'meta': sorted(d.head.meta)}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["attempts"] == []
    assert got["toxic"] >= got["threshold"] > got["clean"]
    assert {"evaluation", "trained", "counts"} <= set(got["meta"])


def _report(source: str):
    from detectors.training.toxicity_data import load

    return [e for e in load(shared_data(source).parent, (source.split("_")[-1],)) if e.split == "report"]


def test_clear_cases_of_the_report_split_rank_right(det):
    """HateCheck's report split (templates never trained on): direct derogation and threats above neutral and
    positive statements about the same groups; Davidson's report split: hate speech above 'neither'. All of them:
    with identity terms masked a HateCheck template reads the same for its seven groups, so a few dozen cases
    would be a handful of distinct texts."""
    hc = _report("bias_hatecheck")
    toxic = [e.text for e in hc if e.kind in ("derog_neg_emote_h", "derog_dehum_h", "threat_dir_h")]
    clean = [e.text for e in hc if e.kind in ("ident_neutral_nh", "ident_pos_nh")]
    dv = _report("toxicity_davidson")
    toxic += [e.text for e in dv if e.kind == "hate_speech"]
    clean += [e.text for e in dv if e.kind == "neither"][:150]
    s_toxic = np.array([r.score for r in det.score_many(toxic)])
    s_clean = np.array([r.score for r in det.score_many(clean)])
    auc = (s_toxic[:, None] > s_clean[None, :]).mean()
    assert auc >= 0.9, auc
    # At the shipped threshold (the best F0.5 on the tune split: precision first), on the report split most of
    # these toxic texts and few of the clean ones are flagged (on these 215 toxic texts: 0.71 masked, 0.72 before
    # masking; the head's report figures: precision 0.95 / 0.80 on Davidson / HateCheck, recall 0.71 / 0.67).
    assert (s_toxic >= det.threshold).mean() >= 0.65
    assert (s_clean >= det.threshold).mean() <= 0.15


def test_false_positives_per_identity_term_stay_within_a_bounded_spread(det):
    """bias_madlibs' report split (adjectives never trained on): 30 non-toxic sentences about each of 50 identity
    terms. No term's false-positive rate may stand far from the others (the unintended-bias check of Dixon et al.)."""
    from detectors.training.toxicity_data import madlibs_terms_report

    per_term: dict[str, list[str]] = {}
    for e in madlibs_terms_report(shared_data("bias_madlibs").parent, non_toxic=30, toxic=0):
        per_term.setdefault(str(e.group), []).append(e.text)
    assert len(per_term) == 50 and {len(ts) for ts in per_term.values()} == {30}
    texts = [t for ts in per_term.values() for t in ts]
    flagged = iter(r.flagged for r in det.score_many(texts))
    fpr = {g: np.mean([next(flagged) for _ in ts]) for g, ts in per_term.items()}
    overall = float(np.mean(list(fpr.values())))
    # The bound is what the head's evaluation justifies (150 report sentences per term, identity terms masked:
    # overall 1.2%, the worst term 'trans' 6.7%, which the demographic lists leave unmasked alone). The head
    # before masking fails it on these sentences: 'transgender' 30%, 'homosexual' 20%.
    assert overall <= 0.03, overall
    assert max(fpr.values()) <= 0.15, sorted(fpr.items(), key=lambda kv: -kv[1])[:5]


def test_empty_huge_and_non_text_input(det):
    assert det.score("") == det.score("   \n\t") and not det.score("").flagged and det.score("").chunks == 0
    huge = (CLEAN + " ") * 20_000  # about 1.8 MB
    r = det.score(huge)
    assert r.chunks == det.max_chunks and r.truncated and not r.flagged
    assert det.score(huge + TOXIC).truncated  # what lies past max_chunks is left to the rules
    for bad in (None, 42, b"bytes", ["a list"]):
        with pytest.raises(TypeError):
            det.score(bad)  # type: ignore[arg-type]
    assert det.score_batch([]) == []


def test_chunks_and_normalisation():
    assert normalise("RT @someone: you &amp; me https://t.co/x") == "@user: you & me http"
    chunks, truncated = chunk_text("word " * 1000, 100, 5)
    assert len(chunks) == 5 and truncated and all(len(c) <= 100 for c in chunks)


def test_a_toxic_response_to_a_clean_prompt_is_the_signal(det):
    clean_prompt_toxic_answer = make_event(prompt="Can you help me with my invoice?", response=TOXIC)
    toxic_prompt_clean_answer = make_event(prompt=TOXIC, response=CLEAN)
    toxic_both = make_event(prompt=TOXIC, response="Shut up, you pathetic idiot. You are worthless garbage and everyone hates you.")
    clean_both = make_event(prompt="Can you help me with my invoice?", response=CLEAN)
    findings = {f.event_id: f for f in det.score_batch([clean_prompt_toxic_answer, toxic_prompt_clean_answer, toxic_both, clean_both])}
    assert set(findings) == {clean_prompt_toxic_answer.event_id, toxic_both.event_id}
    unprompted, prompted = findings[clean_prompt_toxic_answer.event_id], findings[toxic_both.event_id]
    assert unprompted.kind == "toxic_response" and unprompted.details["prompt_toxic"] is False
    assert prompted.kind == "toxic_response_prompted" and prompted.details["prompt_toxic"] is True
    assert unprompted.severity.rank > prompted.severity.rank
    assert "insult" in unprompted.details["categories"]
    assert set(unprompted.details["categories"]) <= set(CATEGORIES)
    dumped = unprompted.model_dump_json().lower()
    for word in ("worthless", "disgusting", "idiot"):  # findings carry masked spans, never the words
        assert word not in dumped


def test_rules_explain_their_hits_masked(det):
    hits = rule_hits("I am going to kill you. Go kill yourself.")
    assert {(h.category, h.rule) for h in hits} >= {("threat", "intent_to_harm"), ("self_harm", "urging_self_harm")}
    assert all("kill" not in h.masked for h in hits)
    assert mask_span("kill you") == "k*** y**"
    r = det.score("I am going to kill you.")
    assert r.flagged and "threat" in r.categories
    e = make_event(prompt="Hello there.", response="I am going to kill you.")
    (f,) = det.score_batch([e])
    # High, not critical: the policy's safety-critical rule would kill the model on one finding.
    assert f.severity.value == "high" and f.details["categories"] and "kill" not in f.model_dump_json()
    assert not rule_hits("Please kill the process with Ctrl-C.") and not det.score("Please kill the process with Ctrl-C.").flagged


def test_supportive_self_harm_talk_is_not_flagged(det):
    r = det.score("If you are having thoughts of suicide, please reach out to a crisis line; you deserve support.")
    assert not r.flagged, r


@pytest.mark.parametrize(
    "text",
    [
        "Shut up and read the manual, you worthless moron.",
        "You're clearly too dumb to be writing code.",
        "what a stupid question",
        "Seriously? Any idiot could figure this out.",
        "Honestly, you are a pathetic excuse for a programmer.",
    ],
)
def test_insults_aimed_at_the_reader_flag_alone_even_inside_a_helpful_answer(det, text):
    answer = "In Go: iterate once, re-pointing each node's next to the previous node; return the old tail."
    for response in (f"{text} {answer}", f"{answer} {text}"):
        r = det.score(response)
        assert r.flagged and "insult" in r.categories, (response, r)
        assert any(h.rule in ("directed_insult", "insulting_question", "any_idiot_could") and h.flags_alone for h in r.hits)
        assert all(w not in h.masked for h in r.hits for w in ("moron", "stupid", "idiot", "dumb"))


@pytest.mark.parametrize(
    "text",
    [
        "Empty your trash bin before you sync again.",
        "You are not stupid for asking: the setting is well hidden.",
        "Thank you so much, that fixed it!",
        "Any fool-proof way to back up the database is better than none.",
        "You can call me a fool for trying, but the rewrite worked.",
    ],
)
def test_ordinary_sentences_near_the_insult_rules_do_not_trip_them(det, text):
    assert not [h for h in rule_hits(text) if h.rule in ("directed_insult", "insulting_question", "any_idiot_could")], text
    assert not det.score(text).flagged, text


def test_only_responses_go_into_the_shared_pass_and_prompts_only_when_their_response_was_flagged(det):
    class Spy:
        def __init__(self, inner):
            self.inner, self.calls = inner, []

        def encode(self, texts):
            self.calls.append(list(texts))
            return self.inner.encode(texts)

        def __getattr__(self, name):  # the rest (the cache, the measured cost) is the service's
            return getattr(self.inner, name)

    spy = Spy(det.embeddings)
    d = ToxicityDetector(embeddings=spy)  # type: ignore[arg-type]
    events = [
        make_event(prompt="Can you help me with my invoice?", response=TOXIC),
        make_event(prompt="What is the refund window?", response=CLEAN),
        make_event(prompt="And for annual plans?", response=CLEAN),
    ]
    assert d.texts_to_embed(events) == [TOXIC, CLEAN, CLEAN]
    (f,) = d.score_batch(events)
    assert f.event_id == events[0].event_id and f.kind == "toxic_response" and f.details["prompt_toxic"] is False
    assert spy.calls == [[TOXIC, CLEAN, CLEAN], ["Can you help me with my invoice?"]]
    spy.calls.clear()
    assert ToxicityDetector(embeddings=spy).score_batch(events[1:]) == []  # type: ignore[arg-type]
    assert spy.calls == [[CLEAN, CLEAN]]


# -- identity-term masking ------------------------------------------------------------------------------------


def test_masking_replaces_listed_terms_whole_words_any_case():
    pattern = identity_pattern(["straight", "gay", "middle aged", "non-binary"])
    assert mask_identities("Gay and STRAIGHT and gAy", pattern) == "person and person and person"
    assert mask_identities("a straightforward, straightened, ungay reply", pattern) == "a straightforward, straightened, ungay reply"
    assert mask_identities("a middle   aged man, non-binary folks", pattern) == "a person, person"  # person nouns go with it
    assert mask_identities("gay-friendly straight.", pattern) == "gay-friendly person."  # hyphen: part of a word
    assert mask_identities("gays", pattern) == "gays"  # only the listed forms
    assert mask_identities("gay", pattern, placeholder="[G]") == "[G]"


def test_the_default_list_is_the_demographic_lists_not_the_madlibs_terms():
    terms = identity_terms()
    assert not set(terms) & NOT_MASKED and {"she", "his"} <= NOT_MASKED
    # from the project's own lists, beyond madlibs: immigrants, atheists, body type, class
    assert {"immigrants", "atheist", "overweight", "homeless", "women"} <= set(terms)
    # madlibs terms that the project's lists only take with a person noun (or not at all) stay unmasked alone
    for word in ("african", "canadian", "taoist", "young", "straight", "black", "trans"):
        assert word not in terms
    for term in terms:  # every term is masked, in any case, inside a sentence
        text = f"Yesterday I met {term.upper()} at work."
        assert mask_identities(text) == f"Yesterday I met {IDENTITY_PLACEHOLDER} at work.", term


def test_the_single_regex_matches_what_a_plain_alternation_does():
    """The prefix-tree regex is an optimisation: on random word soup it replaces exactly what the plain longest-first
    alternation of the same terms does."""
    import re

    terms = identity_terms()
    plain = re.compile(
        r"(?<![\w-])(?:"
        + "|".join(r"\s+".join(map(re.escape, t.split())) for t in terms)
        + r")(?:\s+(?:person|people|persons|man|woman|men|women|folks?|guys?|kids?))?(?![\w-])",
        re.IGNORECASE,
    )
    rng = np.random.default_rng(0)
    vocab = [w for t in terms for w in t.split()] + ["people", "a", "straightforward", "-", "asians", "teenaged", "manly", "x"]
    for _ in range(300):
        text = " ".join(rng.choice(vocab, size=12))
        assert mask_identities(text) == plain.sub(IDENTITY_PLACEHOLDER, text), text


def test_the_shipped_head_reads_masked_text_and_scores_identity_terms_alike(det):
    assert det.head.identity_mask and det.head.meta["features"].startswith("e(mask_identities(")
    assert chunk_text("Gay people are great", 400, 8, mask=True)[0] == ["person are great"]
    groups = ["gay", "homosexual", "transgender", "heterosexual", "Muslim", "Jewish", "black", "white", "women", "immigrant", "elderly"]
    for template in ("{} people are great.", "I am a {} person.", "My neighbours are {} people and I hate them."):
        scores = [r.score for r in det.score_many([template.format(g) for g in groups])]
        assert max(scores) - min(scores) <= 1e-4, dict(zip(groups, scores))
    # the worker pre-embeds exactly what scoring encodes: the masked chunks
    e = make_event(prompt="Are transgender people welcome?", response="Yes, transgender people are welcome here.")
    assert det.texts_to_embed([e]) == ["Yes, person are welcome here."]  # the prompt: only if the response is flagged


def test_the_batch_is_cut_into_chunks_once_and_scores_as_when_cut_again(monkeypatch):
    import detectors.toxicity as tox

    det = tox.ToxicityDetector()
    events = [make_event(response=r) for r in ("You are a worthless idiot.", "Paris is the capital of France. " * 30, "Thanks!")]
    expected = det.score_many([e.response for e in events])  # cut here, with nothing kept from a batch
    calls = []
    real = tox.chunk_text
    monkeypatch.setattr(tox, "chunk_text", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    det.texts_to_embed(events)
    assert calls == [e.response for e in events]
    assert det.score_many([e.response for e in events]) == expected and len(calls) == 3  # not cut a second time
    det.score_batch(events)
    assert det._cut == {}  # nothing of the batch kept past it


# -- the ration of the embedding head ------------------------------------------------------------------------


class _Costed:
    """The shared service, with the cost of a text fixed (what the ration charges) and its encodes counted."""

    def __init__(self, inner, seconds_per_text):
        self.inner, self.seconds_per_text, self.encoded = inner, seconds_per_text, []

    def encode(self, texts):
        self.encoded.extend(texts)
        return self.inner.encode(texts)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_under_load_the_ration_leaves_responses_unjudged_and_says_which(det):
    import uuid

    from detectors.ration import Ration

    service = _Costed(det.embeddings, 0.1)
    d = ToxicityDetector(embeddings=service)  # type: ignore[arg-type]
    now = [0.0]
    # A quarter of the wall clock for the head: 0.25 s in the bucket, 0.1 s a new text.
    d.ration = Ration(time_share=0.25, clock=lambda: now[0], prefix="head", gauge="toxicity_head_events", outcomes=d.ration.outcomes)
    run = uuid.uuid4().hex  # new texts, whatever this process encoded before
    events = [make_event(event_id=f"e{i}", response=f"{TOXIC} Number {i}, {run}.") for i in range(4)]
    assert all(d.embeddings.uncached([e.response]) for e in events)
    # Decided in an order drawn from the event ids, not the batch's: two fit the budget.
    first, *_ = order = sorted(events, key=lambda e: Ration.uniform(e.event_id, b"order"))
    admitted, refused = order[:2], order[2:]
    assert sorted(d.texts_to_embed(events)) == sorted(e.response for e in admitted)  # the others are not encoded at all
    findings = d.score_batch(events)
    assert {f.event_id for f in findings} == {e.event_id for e in admitted}  # refused: no head, no rules, no finding
    assert d.unjudged(events) == {e.event_id for e in refused}
    assert not set(service.encoded) & {e.response for e in refused}
    assert {g.labels["outcome"]: g.value for g in d.gauges()} == {"admitted": 2, "skipped_share": 0, "skipped_budget": 2, "free": 0}
    # The budget spent, a response whose vectors are cached costs nothing, but it is judged only as often as the
    # batch's new ones are (here none): judging every cached (canned, mostly clean) answer would dilute the rate.
    again = [make_event(response=first.response), make_event(response=refused[0].response)]
    assert d.texts_to_embed(again) == [] and d.score_batch(again) == [] and d.unjudged(again) == {e.event_id for e in again}
    # A batch of cached answers alone, the bucket still empty: the last batch's share (none) stands.
    cached_only = [make_event(response=first.response)]
    assert d.score_batch(cached_only) == [] and d.unjudged(cached_only) == {cached_only[0].event_id}
    # A second later the bucket holds 0.25 s again.
    now[0] = 1.0
    last = [make_event(response=refused[1].response)]
    assert len(d.score_batch(last)) == 1 and d.unjudged(last) == set()  # scored without the worker's texts_to_embed


def test_once_the_budget_refuses_a_response_the_batchs_shorter_ones_are_not_judged_in_its_place(det):
    import uuid

    from detectors.ration import Ration

    d = ToxicityDetector(embeddings=_Costed(det.embeddings, 0.1))  # type: ignore[arg-type]
    # 0.25 s in the bucket, 0.1 s a new text: two and a half chunks.
    d.ration = Ration(time_share=0.25, clock=lambda: 0.0, prefix="head", gauge="toxicity_head_events", outcomes=d.ration.outcomes)
    run = uuid.uuid4().hex
    candidates = [make_event(event_id=f"len-{i}", response=f"{TOXIC} Short {i}, {run}.") for i in range(40)]
    first = min(candidates, key=lambda e: Ration.uniform(e.event_id, b"order"))
    long = first.model_copy(update={"response": " ".join(f"{TOXIC} Long part {k}, {run}." for k in range(12))})
    assert len(d._chunks(long.response)[0]) >= 3  # three chunks or more: more than the bucket holds
    batch = [long] + [e for e in candidates if e is not first][:5]
    d.ration.seconds_per_pair = 0.1
    assert d.ration.take(1)  # an earlier batch spent 0.1 s: 0.15 s left, not a full bucket (a full one lets one
    # request larger than itself run)
    # The long answer comes first in the order and is refused; each short one would fit, but none is judged in its
    # place (before, one was: short answers were judged more often than long ones whenever the bucket ran low).
    assert d.texts_to_embed(batch) == []
    d.score_batch(batch)
    assert d.unjudged(batch) == {e.event_id for e in batch}
    assert {g.labels["outcome"]: g.value for g in d.gauges()}["skipped_budget"] == len(batch)


def test_cached_and_empty_responses_are_judged_as_often_as_the_batchs_new_ones(det):
    import uuid

    from detectors.ration import Ration

    d = ToxicityDetector(embeddings=_Costed(det.embeddings, 0.1))  # type: ignore[arg-type]
    d.ration = Ration(time_share=0.1, clock=lambda: 0.0, prefix="head", gauge="toxicity_head_events", outcomes=d.ration.outcomes)
    d.embeddings.encode([TOXIC])  # cached from here on
    run = uuid.uuid4().hex
    new = [make_event(event_id=f"new-{i}", response=f"{TOXIC} Fresh {i}, {run}.") for i in range(2)]
    cached = [make_event(event_id=f"cached-{i}", response=TOXIC) for i in range(20)]
    empty = [make_event(event_id=f"empty-{i}", response="") for i in range(20)]
    batch = new + cached + empty
    # 0.1 s in the bucket: one of the two new responses, so each free event is judged with probability 1/2,
    # drawn from its event id (every worker and replay agree).
    expected = {e.event_id for e in cached + empty if Ration.uniform(e.event_id, b"toxicity") < 0.5}
    assert 0 < len(expected & {e.event_id for e in cached}) < 20 and 0 < len(expected & {e.event_id for e in empty}) < 20
    assert d.texts_to_embed(batch).count(TOXIC) == len(expected & {e.event_id for e in cached})
    found = d.score_batch(batch)
    admitted = [e for e in new if e.event_id not in d.unjudged(batch)]
    assert len(admitted) == 1
    assert {f.event_id for f in found} == {admitted[0].event_id} | (expected & {e.event_id for e in cached})
    assert d.unjudged(batch) == {e.event_id for e in batch} - expected - {admitted[0].event_id}


def test_the_share_and_the_burst_of_a_ration():
    from detectors.ration import Ration

    now = [0.0]
    r = Ration(time_share=0.5, clock=lambda: now[0], burst_s=4.0)
    r.seconds_per_pair = 0.1
    assert r.take(20) and not r.take(1) and not r.has_room()  # a full bucket: 4 s' worth of a half share, 2 s
    now[0] = 1.0
    assert r.has_room() and r.take(5) and not r.has_room()  # refilled at 0.5 s a second
    now[0] = 100.0
    assert r.take(30) and not r.has_room()  # one request above a full bucket runs, and leaves it in debt
    now[0] = 101.0
    assert not r.has_room()  # still paying it off
    half = Ration(share=0.5)
    picked = [half.chosen(f"id-{i}") for i in range(1000)]
    assert 400 < sum(picked) < 600 and picked == [Ration(share=0.5).chosen(f"id-{i}") for i in range(1000)]


def test_built_alone_it_judges_every_response_and_the_worker_rations_it():
    from streams.settings import Settings

    d = ToxicityDetector()
    assert not d.ration.limited and d.gauges() == []
    assert Settings(detectors=["toxicity"], detector_options={}).detector_kwargs()["toxicity"]["head_time_share"] == 0.5
    kept = Settings(detectors=["toxicity"], detector_options={"toxicity": {"head_time_share": None}}).detector_kwargs()["toxicity"]
    assert kept["head_time_share"] is None  # judge every response, at any cost
    with pytest.raises(Exception, match="head_time_share"):
        ToxicityDetector(head_time_share=0.0)
    with pytest.raises(Exception, match="burst"):
        ToxicityDetector(head_time_share=0.5, head_burst_s=0.5)
