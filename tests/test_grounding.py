"""Grounding of RAG answers in their context documents, and the NLI stage's ration."""

import pytest

from detectors import nli
from detectors.errors import ConfigurationError
from detectors.grounding import GroundingDetector
from detectors.nli import NLIRation, NLIScorer

from .conftest import make_event

DOC = (
    "The Basic plan costs 10 dollars a month and includes two users. "
    "The Pro plan costs 25 dollars a month and includes ten users. "
    "Refunds are possible within 14 days of the purchase."
)
OTHER = "Our offices are closed on public holidays. Support answers e-mails within one business day."
SUPPORTED = "The Pro plan costs 25 dollars a month. Refunds are possible within 14 days of the purchase."
PARAPHRASED = "The Pro plan is 25 dollars per month. You can get a refund up to 14 days after buying."
CONTRADICTED = "The Pro plan costs 40 dollars a month. Refunds are possible within 60 days of the purchase."
IGNORED = "Our premium tier ships with a free smartwatch and unlimited airport lounge access worldwide."


def test_lexical_fallback_ranks_supported_below_unsupported_and_names_the_closest_document():
    det = GroundingDetector(method="lexical")
    ok, bad, off = (det.score(r, [OTHER, DOC]) for r in (SUPPORTED, CONTRADICTED, IGNORED))
    assert ok.score < bad.score < off.score
    assert ok.best_document == [1, 1] and ok.unsupported_share == 0.0
    assert off.unsupported_share == 1.0 and off.method == "lexical"


def test_claims_leave_out_questions_and_short_sentences_and_documents_are_chunked_with_overlap():
    det = GroundingDetector(method="lexical", chunk_words=10, chunk_overlap=4, max_chunks=50)
    assert det.claims("Sure! Is that all? The Pro plan costs 25 dollars a month.") == ["The Pro plan costs 25 dollars a month."]
    words = [f"w{i}" for i in range(25)]
    chunks = det.chunks([" ".join(words), "short doc"])
    assert [d for d, _ in chunks] == [0, 0, 0, 0, 1]
    assert [c.split()[0] for _, c in chunks[:4]] == ["w0", "w6", "w12", "w18"]  # step = chunk_words - overlap
    assert chunks[0][1].split()[-4:] == ["w6", "w7", "w8", "w9"]  # the overlap
    assert chunks[3][1].split()[-1] == "w24" and chunks[4][1] == "short doc"  # the tail is covered
    # A fact in the tail of a long document is found in its last chunk.
    long_doc = "filler text here. " * 200 + "The Pro plan costs 25 dollars a month."
    assert GroundingDetector(method="lexical", max_chunks=100).score("The Pro plan costs 25 dollars a month.", [long_doc]).score == 0.0


def test_findings_mask_pii_and_skip_events_without_context():
    det = GroundingDetector(method="lexical")
    leaky = make_event(response="Write to jane.doe@example.com for a refund of the smartwatch fee.", context=[DOC])
    fine = make_event(response=SUPPORTED, context=[DOC])
    no_context = make_event(response=IGNORED)
    findings = det.score_batch([leaky, fine, no_context])
    assert [f.event_id for f in findings] == [leaky.event_id]
    f = findings[0]
    assert f.kind == "ungrounded_response" and f.details["method"] == "lexical"
    text = f.details["unsupported"][0]["text"]
    assert "jane.doe@example.com" not in text and "jane.doe@example.com" not in f.summary and "refund" in text
    assert f.details["unsupported"][0]["closest_document"] == 0


def test_warm_up_builds_the_recognizers_that_mask_sentences_and_findings_use_them(monkeypatch):
    from detectors import pii

    monkeypatch.setattr(pii, "_REDACTOR", None)  # as in a fresh process
    det = GroundingDetector(method="lexical")
    det.warm_up()  # the first finding's batch must not pay for building them
    built = pii._REDACTOR
    assert built is not None and "_recognizers" in vars(built)
    [f] = det.score_batch([make_event(response="Write to jane.doe@example.com for a refund of the smartwatch fee.", context=[DOC])])
    assert pii.shared_redactor() is built and "jane.doe@example.com" not in f.model_dump_json()


def test_unknown_method_and_bad_chunking_are_configuration_errors():
    with pytest.raises(ConfigurationError, match="unknown grounding method"):
        GroundingDetector(method="vibes")
    with pytest.raises(ConfigurationError, match="chunk_overlap"):
        GroundingDetector(method="lexical", chunk_words=10, chunk_overlap=10)


def test_a_missing_shipped_model_says_what_to_run(monkeypatch, tmp_path):
    monkeypatch.setattr(nli, "SHIPPED_MODEL", tmp_path / "gone")
    with pytest.raises(ConfigurationError, match="detectors.training.train_nli"):
        GroundingDetector()
    with pytest.raises(ConfigurationError, match="never downloaded"):
        NLIScorer(str(tmp_path / "nowhere"))


def test_ration_share_is_deterministic_and_the_budget_refills_with_time():
    half = NLIRation(share=0.5)
    ids = [f"event-{i}" for i in range(2000)]
    chosen = [half.chosen(i) for i in ids]
    assert chosen == [NLIRation(share=0.5).chosen(i) for i in ids]  # every worker picks the same events
    assert 0.45 < sum(chosen) / len(ids) < 0.55
    now = [0.0]
    budget = NLIRation(pairs_per_second=100, clock=lambda: now[0])
    assert budget.take(60) and not budget.take(60)  # the bucket starts full: 100 pairs
    now[0] += 0.3  # 30 more pairs
    assert budget.take(60) and not budget.take(11) and budget.take(10)
    now[0] += 10
    assert budget.take(500)  # one oversized request runs when the bucket is full...
    assert not budget.take(1)  # ...and leaves it in debt
    with pytest.raises(ConfigurationError):
        NLIRation(share=1.5)


def test_the_time_budget_charges_what_the_calls_measured():
    now = [0.0]
    ration = NLIRation(time_share=0.25, clock=lambda: now[0])
    assert ration.take(20) and not ration.take(10)  # at the prior 0.01 s a pair, the bucket (0.25 s) holds 25
    ration.spent(0.4, 20)  # they took 0.02 s each: the bucket pays the difference, the estimate rises
    assert ration.seconds_per_pair == pytest.approx(0.013)
    now[0] += 1.0  # a second refills a quarter of a second: 0.10 s left, 10 pairs now cost 0.13 s
    assert not ration.take(10)
    now[0] += 10.0
    assert ration.take(10)  # never more than one second's worth: 0.25 s
    assert not ration.take(10)
    with pytest.raises(ConfigurationError):
        NLIRation(time_share=0.0)


def test_the_detector_keeps_the_model_within_its_share_of_the_time():
    det = GroundingDetector(nli_time_share=0.02)
    events = [make_event(response=IGNORED, context=[DOC]) for _ in range(6)]
    findings = det.score_batch(events)
    methods = [f.details["method"] for f in findings]
    assert len(findings) == 6 and "nli" in methods and methods.count("lexical") >= 3
    assert det.ration.seconds_per_pair != NLIRation.PRIOR_SECONDS_PER_PAIR  # the call was measured
    assert GroundingDetector(nli_time_share=None).score_batch(events[:3])[0].details["method"] == "nli"


def test_events_the_budget_does_not_admit_are_judged_lexically():
    det = GroundingDetector(nli_pairs_per_second=1)
    events = [make_event(response=IGNORED, context=[DOC]) for _ in range(3)]
    findings = det.score_batch(events)
    methods = [f.details["method"] for f in findings]
    assert methods.count("lexical") >= 2 and len(findings) == 3
    assert det.ration.skipped_budget >= 2


def test_shipped_model_supports_what_the_document_says_and_not_a_changed_fact():
    """The trained model, loaded from the package (offline), on a fixed example."""
    det = GroundingDetector()
    ok, bad, off = det.score_many([PARAPHRASED, CONTRADICTED, IGNORED], [[OTHER, DOC]] * 3)
    assert det.quoted(det.claims(PARAPHRASED), det.chunks([OTHER, DOC])) == [-1, -1]  # the model judged them
    assert ok.method == "nli"
    assert ok.score < det.threshold <= bad.score and off.score >= det.threshold
    assert ok.best_document == [1, 1]
    probs = NLIScorer.shared().probabilities(
        ["A man is playing a guitar on stage.", "A man is playing a guitar on stage."],
        ["A man is playing an instrument.", "A man is sleeping in his bed."],
    )
    assert probs[0, nli.ENTAILMENT] > 0.5 and probs[1, nli.CONTRADICTION] > 0.5


class CountingNLI:
    """The NLI scorer, counting the pairs it is asked to judge."""

    def __init__(self):
        self.pairs: list[tuple[str, str]] = []

    def probabilities(self, premises, hypotheses):
        self.pairs += list(zip(premises, hypotheses))
        return NLIScorer.shared().probabilities(premises, hypotheses)


def test_sentences_a_document_states_word_for_word_need_no_model_and_no_budget():
    det = GroundingDetector(nli_pairs_per_second=1)
    det._nli = counting = CountingNLI()  # type: ignore[assignment]
    chunks = det.chunks([OTHER, DOC])
    # Case and spacing aside, word for word (its full stop included), at word boundaries; a changed
    # number, a sentence cut short or a clause of a longer sentence is not a quote.
    stated = "The Pro plan costs 25 dollars a month and includes ten users."
    assert det.quoted([stated.upper().replace(" a ", "  a "), stated.replace("25", "40")], chunks) == [1, -1]
    assert det.quoted(
        ["The Pro plan costs 25 dollars a month.", "he Pro plan costs 25 dollars a month and includes ten users."], chunks
    ) == [-1, -1]
    quoted = [make_event(response=f"{stated} Refunds are possible within 14 days of the purchase.", context=[OTHER, DOC]) for _ in range(5)]
    assert det.score_batch(quoted) == []
    assert counting.pairs == [] and det.ration.admitted == 0 and det.ration.skipped_budget == 0
    gauges = {g.labels["outcome"]: g.value for g in det.gauges()}
    assert gauges["quoted"] == 5
    # One quoted sentence and one changed fact: only the changed one goes to the model, against each chunk.
    (f,) = det.score_batch([make_event(response=f"{stated} The Pro plan costs 40 dollars a month.", context=[OTHER, DOC])])
    assert [h for _, h in counting.pairs] == ["The Pro plan costs 40 dollars a month."] * 2
    assert f.details["method"] == "nli" and [u["sentence"] for u in f.details["unsupported"]] == [1]


def test_events_without_context_are_left_unjudged_so_the_rate_is_over_rag_answers():
    det = GroundingDetector(method="lexical")
    rag = make_event(response="The smartwatch has a two-year warranty.", context=[DOC])
    plain = make_event(response="Paris is the capital of France.")
    blank_docs = make_event(response="Paris.", context=["  "])
    no_answer = make_event(response=" ", context=[DOC])
    batch = [rag, plain, blank_docs, no_answer]
    det.score_batch(batch)
    assert det.unjudged(batch) == {plain.event_id, blank_docs.event_id, no_answer.event_id}
