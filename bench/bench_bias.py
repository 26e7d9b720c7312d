"""Bias: the (experimental) stereotype score on kinds it never saw, the group lists' coverage,
and the passive detector's speed and delay.

Stereotype score (detectors.bias.stereotype_score): pair accuracy (the stereotype scored above
its counterpart) with a 95% Wilson interval, per kind of bias,
* held out: fitted without that kind (leave one kind out), the figure the ship rule reads;
* seen: fitted on 80% of every kind's sources, tested on the other 20% (never trained on);
* Winogender, never trained on.
Pairs from ../shared/data (detectors/training/stereotype_pairs.py says how): "association"
pairs differ in which group holds an attribute; "swap" pairs are a stereotyping statement
against the same statement about a counterpart group.

Group lists (data/demographic_terms.yaml): per kind, its groups, terms and source, and the share
of the kind's labelled sentences in which the matcher finds one of its groups.

Passive detector (BiasDetector) on the demo's synthetic traffic: events/s, and how many
events into a biased phase it takes to flag, over several seeds (no flags elsewhere).

    .venv/bin/python bench/bench_bias.py
"""

from __future__ import annotations

import gzip
import json
import logging
import time
from pathlib import Path

from detectors.bias import BiasDetector, GroupMatcher
from detectors.embeddings import EmbeddingService
from detectors.training.stereotype_pairs import KINDS, all_pairs, winogender_pairs
from detectors.training.train_stereotype import DEFAULT_DATA, embed, evaluate

CACHE = Path(__file__).with_name(".cache")
CATEGORY = {"race": "race_ethnicity"}  # kind -> the term lists' category name, where they differ


def _cell(r: dict | None) -> str:
    if not r:
        return f"{'-':>24}"
    return f"{r['accuracy']:>7.3f} [{r['ci95'][0]:.3f},{r['ci95'][1]:.3f}] {r['n']:>5}"


def stereotype_table() -> None:
    service = EmbeddingService.shared()
    report = evaluate(embed(service, all_pairs(DEFAULT_DATA), CACHE), embed(service, winogender_pairs(DEFAULT_DATA), CACHE))
    print("stereotype score, pair accuracy [95% CI] n   (held out = fitted without that kind)")
    print(f"{'kind':<20}{'family':<13}{'held out':>24}{'seen (20% test)':>26}")
    for kind in KINDS:
        held, seen = report["held_out_kind"][kind], report["seen_kind"].get(kind, {})
        if held["all"] is None:
            print(f"{kind:<20}{'-':<13}  {held['note']}")
            continue
        for family in ("all", "association", "swap"):
            if family in held:
                print(f"{kind if family == 'all' else '':<20}{family:<13}{_cell(held[family])}  {_cell(seen.get(family))}")
    print(f"{'Winogender (never trained on)':<33}{'':>24}  {_cell(report['winogender_never_trained'])}")
    print(f"ship rule (every held-out kind's lower bound > 50%): {'met' if report['ships_on_by_default'] else 'NOT met: off by default'}")


def _labelled_sentences(kind: str) -> list[str]:
    """Sentences of ../shared/data about a group of this kind (for the coverage column)."""
    if kind == "age":
        age = {"elderly", "old", "older", "young", "younger", "teenage", "middle aged", "millenial"}
        with gzip.open(DEFAULT_DATA / "bias_madlibs" / "bias_madlibs_77k.jsonl.gz", "rt") as fh:
            return [r["text"] for r in map(json.loads, fh) if r["group"] in age][:2000]
    return [p.stereo for p in all_pairs(DEFAULT_DATA) if p.kind == kind and p.source != "seegull"]


def coverage_table() -> None:
    m = GroupMatcher()
    print("\ngroup term lists (bias disparity), per kind: groups, terms, labelled sentences of the kind matched")
    for kind in KINDS:
        category = CATEGORY.get(kind, kind)
        groups = [g for c, g in m.terms if c == category]
        n_terms = sum(len(words) for (c, _), words in m.terms.items() if c == category)
        sentences = _labelled_sentences(kind)
        if sentences:
            hit = sum(any(c == category for c, _ in m.groups_in(t)) for t in sentences) / len(sentences)
            cov = f"{hit:>6.1%} of {len(sentences):>5}"
        else:
            cov = "no labelled sentences"
        print(f"{kind:<20}{len(groups):>3} groups {n_terms:>4} terms  {cov:<18}  source: {m.sources.get(category, '?')[:70]}")


def passive_table(seeds=(1, 2, 3, 4, 5)) -> None:
    from streams.local.traffic import Schedule, TrafficGenerator

    print("\npassive detector on the demo's traffic (20 s schedule at 200 events/s, batches of 64):")
    print(f"{'seed':>5}{'events/s':>11}{'flags in biased':>17}{'elsewhere':>11}{'biased events before flag':>27}")
    for seed in seeds:
        sched = Schedule.for_run(20.0)
        gen = TrafficGenerator(sched, seed=seed, malformed_rate=0.0)
        events = [gen.event(i / 200.0)[1] for i in range(4000)]
        det = BiasDetector()
        det.warm_up()
        t0 = time.perf_counter()
        flags = []
        for i in range(0, len(events), 64):
            batch = events[i : i + 64]
            for f in det.score_batch(batch):
                flags.append((i, f))
        rate = len(events) / (time.perf_counter() - t0)
        phase_of = {e.event_id: e.metadata["phase"] for e in events}
        in_biased = [f for _, f in flags if phase_of.get(f.event_id) == "biased"]
        first_biased = next(i for i, e in enumerate(events) if e.metadata["phase"] == "biased")
        delay = min((i + 64 - first_biased for i, f in flags if phase_of.get(f.event_id) == "biased"), default=None)
        print(f"{seed:>5}{rate:>11,.0f}{len(in_biased):>17}{len(flags) - len(in_biased):>11}{str(delay):>27}")


def main() -> None:
    logging.disable(logging.WARNING)
    stereotype_table()
    coverage_table()
    passive_table()


if __name__ == "__main__":
    main()
