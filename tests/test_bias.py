import random
import re

import numpy as np
import pytest

from detectors.bias import (
    BiasDetector,
    GroupMatcher,
    counterfactual_gap,
    gender_swap,
    newcombe_difference,
    stereotype_score,
    wilson_interval,
)

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


def test_stereotype_score_ranks_pro_above_anti_stereotypical_sentences_held_out():
    def load(kind):
        lines = shared_data("winobias", f"{kind}_stereotyped_type1.txt.test").read_text().splitlines()
        return [re.sub(r"^\d+\s+", "", l).replace("[", "").replace("]", "") for l in lines if l.strip()][:150]

    pro, anti = stereotype_score(load("pro")), stereotype_score(load("anti"))
    assert np.mean(pro) > np.mean(anti)
    assert stereotype_score(["The weather is nice today."]) == [0.5]  # no gendered word: no signal


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
