"""Bias: the stereotype score on held-out data, and the passive detector's speed and delay.

Stereotype score (detectors.bias.stereotype_score), held out from its training split:
* WinoBias test split (type 1 and 2): pro- vs anti-stereotyped sentence pairs;
* Winogender: sentences whose pronoun refers to the occupation, pro when the pronoun's
  gender is the occupation's majority gender (BLS).
Reported: accuracy at 0.5, ROC AUC, pairwise accuracy (pro scored above its anti twin),
and texts/s beside the baseline of the same model's plain encode() in the same process.

Passive detector (BiasDetector) on the demo's synthetic traffic: events/s, and how many
events into a biased phase it takes to flag, over several seeds (no flags elsewhere).

    .venv/bin/python bench/bench_bias.py
"""

from __future__ import annotations

import logging
import time

import numpy as np

from detectors.bias import BiasDetector, StereotypeScorer
from detectors.embeddings import EmbeddingService
from detectors.training.train_stereotype import DEFAULT_DATA, winobias, winogender


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    order = np.argsort(scores)
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    pos = labels == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def stereotype_table() -> None:
    service = EmbeddingService.shared()
    scorer = StereotypeScorer(service)
    print(f"stereotype head: {scorer.meta.get('features')}; trained on {scorer.meta.get('trained_on')}")
    print(f"{'held-out set':<28}{'n':>6}{'acc@0.5':>9}{'AUC':>7}{'pairwise':>10}")
    x, y = winobias(DEFAULT_DATA, "test")
    s = np.array(scorer.score(x))
    y = np.array(y)
    half = len(x) // 2  # pro sentences first, then their anti twins in the same order
    pairwise = float((s[:half] > s[half:]).mean())
    print(f"{'WinoBias test':<28}{len(x):>6}{((s > 0.5) == y).mean():>9.3f}{auc(s, y):>7.3f}{pairwise:>10.3f}")
    x, y = winogender(DEFAULT_DATA)
    s = np.array(scorer.score(x))
    y = np.array(y)
    print(f"{'Winogender (occupation)':<28}{len(x):>6}{((s > 0.5) == y).mean():>9.3f}{auc(s, y):>7.3f}{'-':>10}")

    texts = winobias(DEFAULT_DATA, "test")[0][:512]
    service.encode(texts[:32])
    t0 = time.perf_counter()
    service.encode(texts)
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    scorer.score(texts)
    t_ours = time.perf_counter() - t0
    print(
        f"\nspeed: encode() baseline {len(texts) / t_base:,.0f} texts/s; stereotype_score {len(texts) / t_ours:,.0f} texts/s "
        f"(x{t_base / t_ours:.2f}: it encodes each text and its gender swap)"
    )


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
    passive_table()


if __name__ == "__main__":
    main()
