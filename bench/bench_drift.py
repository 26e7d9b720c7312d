"""Embedding drift on real text with a known shift: the Brown corpus, genres as topics.

Windows of paragraphs (all-MiniLM-L6-v2 embeddings, computed once) are drawn at random:
* shift: reference from one genre, current from another (news vs each other genre);
* same: reference and current from disjoint paragraphs of one genre (a false alarm if flagged).
For each window size: detection rate on shifts, false-alarm rate on same-genre pairs, and
the time per test, for streamwarden's MMD permutation test (alpha 0.01 and 0.001) beside
Evidently's embedding drift methods (model, ratio, distance, mmd; their default thresholds)
on the same windows in the same process. A test whose false-alarm rate exceeds its alpha
is miscalibrated; Evidently's methods have no alpha (fixed thresholds).

    .venv/bin/python bench/bench_drift.py [--reps 20] [--sizes 25,50,100,200]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
import warnings
from pathlib import Path

import numpy as np

from detectors.drift import mmd_permutation_test
from detectors.embeddings import EmbeddingService

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "drift_brown" / "brown_docs.jsonl"


def paragraphs() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in DATA.read_text().splitlines():
        d = json.loads(line)
        out.setdefault(d["category"], []).extend(p for p in d["text"].split("\n") if len(p.split()) >= 12)
    return out


def evidently_methods():
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import distance, mmd, model, ratio

    return {"evidently model": model(), "evidently ratio": ratio(), "evidently distance": distance(), "evidently mmd": mmd()}


def genre_samples(rng: random.Random, min_paragraphs: int = 600, per_genre: int = 800) -> tuple[dict[str, list[str]], list[str]]:
    """Brown's paragraphs by genre, shuffled by ``rng`` (the caller's draws go on from it) and cut to
    ``per_genre``, and the genres with at least ``min_paragraphs`` (the others are too small for the windows)."""
    paras = paragraphs()
    genres = [g for g, ps in paras.items() if len(ps) >= min_paragraphs]
    for g in genres:
        rng.shuffle(paras[g])
        paras[g] = paras[g][:per_genre]
    return paras, genres


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--sizes", default="25,50,100,200")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    import pandas as pd

    rng = random.Random(0)
    paras, genres = genre_samples(rng)
    service = EmbeddingService.shared()
    t0 = time.perf_counter()
    emb = {g: service.encode(paras[g]) for g in genres}
    n_texts = sum(len(v) for v in emb.values())
    enc_rate = n_texts / (time.perf_counter() - t0)
    print(f"Brown genres with >= 600 paragraphs: {', '.join(genres)}; {n_texts} paragraphs embedded at {enc_rate:,.0f}/s")

    methods = {
        "streamwarden MMD a=0.01": lambda r, c: mmd_permutation_test(r, c, permutations=500, alpha=0.01).drifted,
        "streamwarden MMD a=0.001": lambda r, c: mmd_permutation_test(r, c, permutations=1000, alpha=0.001).drifted,
    }
    for name, method in evidently_methods().items():
        methods[name] = lambda r, c, m=method: bool(m(pd.DataFrame(c), pd.DataFrame(r))[1])

    base = "news" if "news" in genres else genres[0]
    others = [g for g in genres if g != base]
    print(f"\nshift: {base} vs {', '.join(others)}; same: disjoint windows of one genre; {args.reps} draws per size and case\n")
    header = f"{'method':<26}{'size':>6}{'detection':>11}{'false alarms':>14}{'ms/test':>10}"
    print(header)
    print("-" * len(header))
    for size in (int(s) for s in args.sizes.split(",")):
        draws = []
        for i in range(args.reps):
            g = others[i % len(others)]
            a = rng.sample(range(len(emb[base])), 2 * size)
            b = rng.sample(range(len(emb[g])), size)
            same_g = genres[i % len(genres)]
            s = rng.sample(range(len(emb[same_g])), 2 * size)
            draws.append(
                (
                    (emb[base][a[:size]], emb[g][b]),
                    (emb[same_g][s[:size]], emb[same_g][s[size:]]),
                )
            )
        for name, method in methods.items():
            detected = alarms = 0
            t = time.perf_counter()
            for shift, same in draws:
                detected += method(*shift)
                alarms += method(*same)
            ms = (time.perf_counter() - t) / (2 * len(draws)) * 1000
            print(f"{name:<26}{size:>6}{detected / len(draws):>11.2f}{alarms / len(draws):>14.2f}{ms:>10.1f}")
        print()

    # Cost of one large test (the GPU figure the issue asks for is taken where a GPU is lent).
    big = 2000
    x = np.random.default_rng(0).normal(size=(big, 384)).astype(np.float32)
    y = np.random.default_rng(1).normal(size=(big, 384)).astype(np.float32)
    t = time.perf_counter()
    mmd_permutation_test(x, y, permutations=200)
    print(f"MMD permutation test, {big} x {big} windows, 384-d, 200 permutations: {time.perf_counter() - t:.2f} s on this CPU")


if __name__ == "__main__":
    main()
