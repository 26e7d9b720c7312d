import json

import numpy as np
import pytest

from detectors import nli
from detectors.consistency import CrossTrafficConsistency, SelfConsistencyDetector, split_sentences, unigram_scores
from detectors.embeddings import EmbeddingService
from detectors.errors import ConfigurationError

from .conftest import make_event, shared_data

GROUNDED = "Marie Curie won the Nobel Prize in Physics in 1903. She was born in Warsaw."
SAMPLES = [
    "Marie Curie was born in Warsaw. She won the Nobel Prize in Physics in 1903.",
    "Born in Warsaw, Marie Curie won the 1903 Nobel Prize in Physics.",
    "Marie Curie, born in Warsaw, received the Nobel Prize in Physics in 1903.",
]
MADE_UP = "Marie Curie won the Nobel Prize in Chemistry in 1921. She was born in Lyon to a family of bakers."


def test_split_sentences():
    assert split_sentences('He left at 5 p.m. today! Why? "Fine." 3 more.') == ["He left at 5 p.m. today!", "Why?", '"Fine."', "3 more."]
    assert split_sentences("One. Two.\n\nThree") == ["One.", "Two.", "Three"]
    assert split_sentences("version 2.5 is out") == ["version 2.5 is out"]


@pytest.mark.parametrize("method", ["unigram", "embedding", "nli", "combined"])
def test_unsupported_sentences_score_higher_than_supported_ones(method):
    det = SelfConsistencyDetector(method=method)
    grounded = det.score(GROUNDED, SAMPLES)
    made_up = det.score(MADE_UP, SAMPLES)
    assert made_up.score > grounded.score
    assert len(made_up.sentence_scores) == 2 and all(0 <= s <= 1 for s in made_up.sentence_scores)
    assert made_up.sentences[1].startswith("She was born in Lyon")
    # A list of sentences is taken as given.
    one = det.score(["She was born in Lyon to a family of bakers."], SAMPLES)
    assert one.sentences == ["She was born in Lyon to a family of bakers."] and one.score > grounded.score


def test_detector_flags_only_events_with_enough_samples_and_a_high_score():
    det = SelfConsistencyDetector()
    bad = make_event(
        response=MADE_UP, samples=["Paris is in France. Lyon is a city.", "Bakers bake bread daily.", "Prizes are awarded yearly."]
    )
    good = make_event(response=GROUNDED, samples=SAMPLES)
    no_samples = make_event(response=MADE_UP)
    findings = det.score_batch([bad, good, no_samples])
    assert [f.event_id for f in findings] == [bad.event_id]
    assert findings[0].kind == "inconsistent_response" and findings[0].details["n_samples"] == 3
    # What it could not check it leaves unjudged (too few samples, an empty response), so that the rate of its
    # findings is a share of the events it judged, not of every event.
    one_sample = make_event(response=MADE_UP, samples=SAMPLES[:1])
    empty = make_event(response="  ", samples=SAMPLES)
    batch = [bad, good, no_samples, one_sample, empty]
    det.score_batch(batch)
    assert det.unjudged(batch) == {no_samples.event_id, one_sample.event_id, empty.event_id}
    assert SelfConsistencyDetector(min_samples=1).unjudged(batch) == {no_samples.event_id, empty.event_id}


def test_unknown_method_and_a_missing_nli_model_are_clear_errors(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        SelfConsistencyDetector(method="magic")
    monkeypatch.setattr(nli, "SHIPPED_MODEL", tmp_path / "gone")
    with pytest.raises(ConfigurationError, match="detectors.training.train_nli"):
        SelfConsistencyDetector(method="nli")
    SelfConsistencyDetector(method="unigram")  # needs no model


def test_unigram_sentence_scores_rank_exactly_as_the_raw_signal_across_responses():
    """The sentence score is one monotone map of SelfCheckGPT's unigram (max) NLL for every
    response, whatever its samples; the event score is calibrated by the samples' volume."""
    few = unigram_scores(["Lyon is home to bakers.", "Marie Curie won the Nobel Prize."], SAMPLES[:2])
    many = unigram_scores(["Lyon is home to bakers.", "Marie Curie won the Nobel Prize."], SAMPLES * 6)
    raw = few.raw + many.raw
    scores = few.sentence_scores + many.sentence_scores
    assert sorted(range(4), key=raw.__getitem__) == sorted(range(4), key=scores.__getitem__)
    assert few.raw[0] > few.raw[1] and many.raw[0] > many.raw[1]  # "lyon"/"bakers" are in no sample
    # A word no sample has is worth more with more samples (raw), not for the event score.
    assert many.raw[0] > few.raw[0]
    assert abs(many.event_score - few.event_score) < 0.15 and 0.0 <= few.event_score <= 1.0


def test_nli_stage_outside_its_share_falls_back_to_unigram():
    det = SelfConsistencyDetector(method="combined", nli_share=0.0)
    event = make_event(response=MADE_UP, samples=SAMPLES)
    findings = det.score_batch([event])
    assert det.ration.skipped_share == 1
    assert all(f.details["method"] == "unigram" for f in findings)
    results = det.score_many([MADE_UP, MADE_UP], [SAMPLES, SAMPLES], use_nli=[True, False])
    assert [r.method for r in results] == ["combined", "unigram"]


def test_nli_variant_loads_a_local_cross_encoder(tmp_path):
    """Plumbing only: a tiny random BERT cross-encoder saved locally (no NLI model ships offline)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted({w.lower().strip(".,") for w in (GROUNDED + " " + MADE_UP).split()})
    (tmp_path / "vocab.txt").write_text("\n".join(vocab))
    BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
        id2label={0: "contradiction", 1: "entailment", 2: "neutral"},
        label2id={"contradiction": 0, "entailment": 1, "neutral": 2},
    )
    BertForSequenceClassification(cfg).save_pretrained(tmp_path)
    det = SelfConsistencyDetector(method="nli", nli_model=str(tmp_path))
    r = det.score(MADE_UP, SAMPLES)
    assert r.method == "nli" and len(r.sentence_scores) == 2 and all(0 <= s <= 1 for s in r.sentence_scores)


def test_cross_traffic_consistency_flags_the_odd_answer_out():
    det = CrossTrafficConsistency(prompt_similarity=0.9, threshold=0.4)
    q = "What is the capital of France?"
    agreeing = [
        make_event(prompt=q, response=r) for r in ("The capital of France is Paris.", "Paris is the capital of France.", "It's Paris.")
    ]
    assert det.score_batch(agreeing) == []
    odd = make_event(prompt="What's the capital of France?", response="Bananas are rich in potassium and grow in tropical climates.")
    other_version = make_event(prompt=q, response="Bananas are yellow.", model_version="v2")
    findings = det.score_batch([odd, other_version])
    assert [f.event_id for f in findings] == [odd.event_id]  # v2 has no neighbours yet
    assert findings[0].details["neighbours"] == 3


def test_selfcheck_protocol_on_wikibio_beats_chance():
    """A few passages of the SelfCheckGPT set: NonFact sentences rank above factual ones."""
    data = json.loads(shared_data("selfcheckgpt_wikibio", "wikibio_gpt3_hallucination_dev60.json").read_text())[:20]
    det = SelfConsistencyDetector(method="unigram")
    results = det.score_many([p["gpt3_sentences"] for p in data], [p["gpt3_text_samples"] for p in data])
    scores = np.concatenate([r.sentence_scores for r in results])
    nonfact = np.array([a != "accurate" for p in data for a in p["annotation"]])
    assert scores[nonfact].mean() > scores[~nonfact].mean()


def test_one_forward_pass_serves_every_detector_of_a_batch():
    from detectors.drift import EmbeddingDriftDetector
    from streams.worker.pipeline import Pipeline, RawRecord

    service = EmbeddingService.shared()
    dets = [
        SelfConsistencyDetector(method="embedding"),
        CrossTrafficConsistency(),
        EmbeddingDriftDetector(reference_size=4, window_size=4, test_every=2, sample_rate=1.0),
    ]
    events = [make_event(prompt=f"question {i}", response=GROUNDED, samples=SAMPLES) for i in range(6)]
    service.clear_cache()  # earlier tests' vectors would answer some texts without the model
    before = service.forward_passes
    Pipeline(dets, 10**6).process([RawRecord(e.model_dump_json().encode()) for e in events])
    assert service.forward_passes - before == 1
