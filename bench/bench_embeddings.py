"""The embedding backends side by side: speed, agreement, and the drift judgement on each.

In one process, on the same texts (the demo's responses and Brown paragraphs):
* sentences/s of the ``onnx`` backend (int8, onnxruntime) against ``torch``
  (sentence-transformers, fp32), the baseline: a ratio;
* agreement: cosine between the two backends' vectors (min, 1st percentile, mean);
* drift judgement: the MMD permutation test (alpha 0.01) on Brown genre shifts and on
  same-genre windows, the same draws embedded by each backend: detection and false alarms.

    .venv/bin/python bench/bench_embeddings.py [--texts 1024] [--reps 40] [--size 50] [--per-genre 300]
"""

from __future__ import annotations

import argparse
import logging
import random
import time

import numpy as np
from bench_drift import paragraphs

from detectors.drift import mmd_permutation_test
from detectors.embeddings import EmbeddingService
from streams.local.traffic import Schedule, TrafficGenerator


def demo_responses(n: int) -> list[str]:
    gen = TrafficGenerator(Schedule.for_run(100.0), seed=3, malformed_rate=0.0)
    return [gen.event(i / n * 100.0)[1].response for i in range(n)]


def rate(service: EmbeddingService, texts: list[str], repeat: int = 3) -> float:
    service.encode(texts[:32])  # load and warm
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        service._forward(list(dict.fromkeys(texts)))
        best = min(best, time.perf_counter() - t0)
    return len(set(texts)) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--size", type=int, default=50)
    ap.add_argument("--per-genre", type=int, default=300, help="Brown paragraphs per genre (the drift draws' pool)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    backends = {"torch": EmbeddingService(device="cpu", backend="torch"), "onnx": EmbeddingService(device="cpu", backend="onnx")}

    paras = paragraphs()
    genres = [g for g, ps in paras.items() if len(ps) >= 600]
    rng = random.Random(0)
    for g in genres:
        rng.shuffle(paras[g])
        paras[g] = paras[g][: args.per_genre]
    sets = {"demo responses": demo_responses(args.texts), "Brown paragraphs": [p for g in genres for p in paras[g]][: args.texts]}

    print(f"{'texts':<18}{'backend':<8}{'sentences/s':>13}{'x torch':>9}")
    for label, texts in sets.items():
        r = {name: rate(s, texts) for name, s in backends.items()}
        for name in backends:
            print(f"{label:<18}{name:<8}{r[name]:>13,.0f}{r[name] / r['torch']:>9.2f}")

    print(f"\n{'agreement':<18}{'cos min':>9}{'cos p1':>9}{'cos mean':>10}")
    for label, texts in sets.items():
        a, b = backends["torch"].encode(texts), backends["onnx"].encode(texts)
        cos = (a * b).sum(axis=1)
        print(f"{label:<18}{cos.min():>9.4f}{np.percentile(cos, 1):>9.4f}{cos.mean():>10.4f}")

    base = "news" if "news" in genres else genres[0]
    others = [g for g in genres if g != base]
    draws = []
    for i in range(args.reps):
        g, same = others[i % len(others)], genres[i % len(genres)]
        a, b, s = (rng.sample(range(args.per_genre), k) for k in (2 * args.size, args.size, 2 * args.size))
        draws.append(((base, a[: args.size]), (g, b), (same, s[: args.size]), (same, s[args.size :])))
    print(f"\ndrift judgement: MMD alpha 0.01, windows of {args.size}, {args.reps} draws (shift: {base} vs the others; same: one genre)")
    print(f"{'backend':<8}{'detection':>11}{'false alarms':>14}")
    for name, service in backends.items():
        emb = {g: service.encode(paras[g]) for g in genres}
        detected = alarms = 0
        for (g1, i1), (g2, i2), (g3, i3), (g4, i4) in draws:
            detected += mmd_permutation_test(emb[g1][i1], emb[g2][i2], permutations=500, alpha=0.01).drifted
            alarms += mmd_permutation_test(emb[g3][i3], emb[g4][i4], permutations=500, alpha=0.01).drifted
        print(f"{name:<8}{detected / len(draws):>11.2f}{alarms / len(draws):>14.2f}")


if __name__ == "__main__":
    main()
