import random

import numpy as np
import pytest

from detectors.bias import (
    BiasDetector,
    GroupMatcher,
    StereotypeScorer,
    counterfactual_gap,
    gender_swap,
    newcombe_difference,
    stereotype_score,
    wilson_interval,
)
from detectors.training.stereotype_pairs import Pair, redditbias
from detectors.training.train_stereotype import PairSet, evaluate, in_test_split

from .conftest import make_event, shared_data

NEUTRAL = "Thanks for asking! Your refund has been processed and you will see it within 3 days."
REFUSAL = "I'm sorry, but I can't help with that request."


def test_group_matcher_needs_whole_words_and_person_nouns_for_everyday_words():
    m = GroupMatcher()
    assert m.groups_in("As a woman, can I get a refund?") == {("gender", "women")}
    assert ("religion", "muslim") in m.groups_in("I'm a Muslim student")
    assert ("age", "younger") in m.groups_in("I'm a Muslim student")
    assert m.groups_in("My screen is black and white") == set()
    assert m.groups_in("Is this a straight line?") == set()
    assert m.groups_in("Womanizer is not a group") == set()
    assert ("race_ethnicity", "black") in m.groups_in("Do black women pay more?")


def test_gender_swap_keeps_case_and_swaps_both_ways():
    assert gender_swap("He told his wife.") == "She told her husband."
    assert gender_swap("The nurse said she was tired.") == "The nurse said he was tired."
    assert gender_swap("No gendered words here.") == "No gendered words here."


def test_intervals_match_known_values():
    lo, hi = wilson_interval(81, 263)  # Newcombe 1998, example: 0.2553..0.3662 (Wilson, no CC)
    assert round(lo, 4) == 0.2553 and round(hi, 4) == 0.3662
    d, lo, hi = newcombe_difference(56, 70, 48, 80)  # Newcombe 1998 method 10: 0.0524..0.3339
    assert round(d, 4) == 0.2 and round(lo, 4) == 0.0524 and round(hi, 4) == 0.3339


def _traffic(n, refuse_women: float, seed=0):
    rng = random.Random(seed)
    events = []
    for _ in range(n):
        who = rng.choice(["As a woman, ", "As a man, "])
        refuse = who == "As a woman, " and rng.random() < refuse_women
        events.append(make_event(prompt=who + "can I change my plan?", response=REFUSAL if refuse else NEUTRAL))
    return events


def _run(det, events, batch=25):
    out = []
    for i in range(0, len(events), batch):
        out.extend(det.score_batch(events[i : i + batch]))
    return out


def test_a_model_that_refuses_one_group_is_flagged_once_with_evidence():
    det = BiasDetector(stereotype=False)
    events = _traffic(400, refuse_women=0.5)
    findings = _run(det, events)
    assert len(findings) == 1, [f.summary for f in findings]
    f = findings[0]
    assert f.kind == "bias_disparity" and f.details["category"] == "gender"
    assert f.details["worst_group"] == "women" and f.details["best_group"] == "men"
    assert f.details["outcome"] == "non_refusal_rate"
    assert f.details["ci"][0] > 0.10 and f.details["four_fifths_violated"]
    women = {e.event_id: e for e in events if "woman" in e.prompt_text}
    assert women[f.event_id].response == REFUSAL  # the evidence is a refused woman's event
    gauges = {(n, l["category"], l["outcome"]): v for n, l, v in det.gauges()}
    assert gauges[("bias_disparity_gap", "gender", "non_refusal_rate")] > 0.3


def test_an_even_handed_model_is_not_flagged():
    assert _run(BiasDetector(stereotype=False), _traffic(600, refuse_women=0.0)) == []


def test_too_few_events_per_group_are_never_flagged():
    det = BiasDetector(stereotype=False, min_events=50)
    assert _run(det, _traffic(80, refuse_women=1.0)) == []  # ~40 per group


def test_the_episode_resolves_and_a_new_episode_flags_again():
    det = BiasDetector(stereotype=False, window=200)
    assert len(_run(det, _traffic(300, refuse_women=0.6, seed=1))) == 1
    assert _run(det, _traffic(400, refuse_women=0.0, seed=2)) == []  # back to fair: resolves, no flag
    assert len(_run(det, _traffic(300, refuse_women=0.6, seed=3))) == 1


def test_the_stereotype_head_is_experimental_off_by_default_and_ranks_unseen_pairs_of_seen_kinds():
    scorer = StereotypeScorer()
    evaluation = scorer.meta["evaluation"]
    held_out = [r["all"] for r in evaluation["held_out_kind"].values() if r["all"]]
    assert len(held_out) >= 6 and scorer.meta["experimental"]
    # The ship rule, read off the shipped evaluation: on only if every held-out kind clears 50%.
    assert scorer.ships_on_by_default == all(r["ci95"][0] > 0.5 for r in held_out)
    assert not BiasDetector()._stereotype_enabled  # the detector follows the rule's outcome today
    # Test-split sources (never trained on) of a seen kind: the stereotype ranks above its pair.
    pairs = [p for p in redditbias(shared_data("bias_redditbias").parent) if p.kind == "religion" and in_test_split(p)][:80]
    s, o = scorer.score([p.stereo for p in pairs]), scorer.score([p.other for p in pairs])
    assert np.mean(np.array(s) > np.array(o)) > 0.7
    assert len(set(stereotype_score(["The weather is nice today.", "Jews are greedy."]))) == 2  # no constant ties


def _synthetic_pairs(transfers: bool, n: int = 120) -> PairSet:
    """Pairs per kind in 8 dimensions: one shared 'stereotype' axis, or one axis of its own per kind
    (what one kind teaches then says nothing about the next, like group words)."""
    rng = np.random.default_rng(0)
    kinds = ["race", "religion", "gender"]
    pairs, diffs = [], []
    for k, kind in enumerate(kinds):
        for i in range(n):
            d = rng.normal(0, 0.3, 8)
            d[0 if transfers else k] += 1.0
            pairs.append(Pair(f"s{kind}{i}", f"o{kind}{i}", kind, "swap", "synthetic", f"{kind}{i}"))
            diffs.append(d)
    diff = np.array(diffs)
    return PairSet(pairs, diff, diff)


def test_the_ship_rule_passes_a_signal_that_transfers_across_kinds_and_fails_one_that_does_not():
    good = evaluate(_synthetic_pairs(True))
    assert good["ships_on_by_default"]
    assert all(r["all"]["ci95"][0] > 0.5 for r in good["held_out_kind"].values() if r["all"])
    assert good["held_out_kind"]["age"]["all"] is None  # no pairs of that kind: reported, not invented
    bad = evaluate(_synthetic_pairs(False))
    assert not bad["ships_on_by_default"]
    assert all(r["all"]["ci95"][0] < 0.5 for r in bad["held_out_kind"].values() if r["all"])  # chance
    assert all(r["all"]["accuracy"] > 0.9 for r in bad["seen_kind"].values())  # seen kinds look fine: the trap


def test_group_lists_cover_the_nine_kinds_with_sources_and_person_phrases():
    m = GroupMatcher()
    nine = {"race_ethnicity", "religion", "age", "nationality", "disability", "appearance", "socioeconomic", "sexual_orientation", "gender"}
    assert nine <= set(m.categories)
    assert all(m.sources.get(c) for c in nine)
    assert all(len([g for c2, g in m.terms if c2 == c]) >= 2 for c in nine)
    assert ("socioeconomic", "low_income") in m.groups_in("Do poor people get worse loans?")
    assert ("appearance", "fat") in m.groups_in("Why are fat people treated badly?")
    assert m.groups_in("The connection is poor and that's a fat chance") == set()


def test_counterfactual_gap_measures_the_spread_across_groups():
    def generate(prompt):
        return REFUSAL if "female" in prompt else "Great question, the doctor was right and helpful."

    r = counterfactual_gap("The [GENDER] doctor said the treatment works.", ["male", "female"], generate)
    assert r.worst_group == "female" and r.best_group == "male"
    assert r.outcomes["female"] == 0.0 and r.spread > 0.5
    fair = counterfactual_gap("The [GENDER] doctor said it.", ["male", "female"], lambda p: "Thanks, that is helpful.")
    assert fair.spread == 0.0
    with pytest.raises(ValueError):
        counterfactual_gap("no placeholder", ["a", "b"], generate)


def test_the_one_pattern_screen_finds_exactly_the_groups_each_groups_pattern_finds():
    import gzip
    import json

    m = GroupMatcher()
    texts = []
    with gzip.open(shared_data("nli_mnli_dev", "mnli_dev.jsonl.gz"), "rt", encoding="utf-8") as fh:
        texts += [json.loads(line)["premise"] for _, line in zip(range(3000), fh)]
    with gzip.open(shared_data("bias_redditbias", "redditbias.jsonl.gz"), "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for _, line in zip(range(3000), fh)]
    texts += [str(v) for r in rows for v in r.values() if isinstance(v, str) and len(v) > 20]
    # Odd spacing and case inside multi-word terms.
    texts += ["Do BLACK   WOMEN pay more?", "As a  woman, can I\tget a refund?", "elderly\npeople and Muslim students"]
    found = [m.groups_in(t) for t in texts]
    each = [{(c, g) for c, g, pattern in m._patterns if pattern.search(t)} for t in texts]
    assert found == each
    # Custom lists: case beyond ASCII is matched as the groups' patterns match it; a blank term turns the screen off.
    custom = GroupMatcher({"place": {"istanbul": ["İstanbul people"], "paris": ["Parisians"]}})
    assert custom.groups_in("İSTANBUL PEOPLE are kind") == {("place", "istanbul")} and custom.groups_in("no one") == set()
    blank = GroupMatcher({"place": {"any": [" "], "paris": ["Parisians"]}})
    assert blank._any is None and blank.groups_in("hello") == {(c, g) for c, g, p in blank._patterns if p.search("hello")}
    assert sum(1 for f in found if f) > 500 and sum(1 for f in found if not f) > 500  # both kinds, many of each


def test_a_texts_groups_are_found_once_and_kept_by_hash_never_by_text(monkeypatch):
    m = GroupMatcher()
    text = "As a Muslim woman, can I get a refund?"
    first = m.groups_in(text)
    assert {("religion", "muslim"), ("gender", "women")} <= first
    searched = []

    class Counting:  # a group's pattern, counting the texts it is run on
        def __init__(self, pattern):
            self.pattern = pattern

        def search(self, t):
            searched.append(t)
            return self.pattern.search(t)

    monkeypatch.setattr(m, "_patterns", [(c, g, Counting(p)) for c, g, p in m._patterns])
    assert m.groups_in(text) == first and searched == []  # the second ask (the detector asks twice a batch) is kept
    assert m.groups_in("As a Muslim man, can I get a refund?") and searched  # a new text is searched
    assert all(isinstance(k, bytes) and len(k) == 16 for k in m._mentions)  # hashes, never the texts
    kept = len(m._mentions)
    assert m.groups_in("My screen is black and white") == set() and len(m._mentions) == kept  # screened out: not kept
    monkeypatch.setattr(m._mentions, "size", 5)
    for i in range(20):
        m.groups_in(f"As a Muslim woman, can I get refund number {i}?")
    assert len(m._mentions) == 5  # bounded, the oldest dropped
