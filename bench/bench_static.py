"""Static embeddings for drift (issue 16): the shipped static table against all-MiniLM-L6-v2, one run.

The protocol of ``bench_drift.py`` (Brown genres with >= 600 paragraphs of >= 12 words, 800 per
genre, shuffled with seed 0), the same draws embedded by each model, streamwarden's MMD
permutation test (alpha 0.01 with 500 permutations, alpha 0.001 with 1,000):

* shift: reference from news, current from another genre (cycling through the others);
* mixed shift (harder, not in bench_drift): current window news with ``--mix`` of it (25 %)
  from the other genre, reference news, the two disjoint;
* same: reference and current from disjoint paragraphs of one genre (a false alarm if flagged).

Then sentences/s of both encoders in the same process on the same texts (demo responses and
Brown paragraphs; the default model on its default CPU backend, onnx int8), the LRU bypassed.
Nothing is tuned here: the static model is model2vec's default recipe (see its model card).

    .venv/bin/python bench/bench_static.py [--reps 60] [--sizes 25,50,100,200] [--mix 0.25]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import random
import time
import warnings
from pathlib import Path

import numpy as np
from bench_drift import genre_samples
from bench_embeddings import demo_responses, rate

from detectors.drift import mmd_permutation_test
from detectors.embeddings import EmbeddingService
from detectors.static_embeddings import StaticEmbeddingService

CACHE = Path(__file__).resolve().parent / ".cache"


def embed_cached(name: str, service, paras: dict[str, list[str]], genres: list[str]) -> dict[str, np.ndarray]:
    """Each genre's vectors, kept under bench/.cache (git ignores it) by model and a hash of the texts."""
    texts = [p for g in genres for p in paras[g]]
    key = hashlib.sha1("\x1e".join([name, *texts]).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    path = CACHE / f"static_bench_{name}_{key}.npy"
    if path.exists():
        vectors = np.load(path)
    else:
        vectors = service.encode(texts)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    out, pos = {}, 0
    for g in genres:
        out[g] = vectors[pos : pos + len(paras[g])]
        pos += len(paras[g])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=60)
    ap.add_argument("--sizes", default="25,50,100,200")
    ap.add_argument("--mix", type=float, default=0.25, help="share of the other genre in a mixed-shift window")
    ap.add_argument("--speed-texts", type=int, default=512)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")

    services = {"minilm": EmbeddingService(device="cpu"), "static": StaticEmbeddingService()}
    print("backends: " + ", ".join(f"{n} ({s.backend}, {s.dimension}-d)" for n, s in services.items()))

    rng = random.Random(0)
    paras, genres = genre_samples(rng)

    # Speed first (same texts, same process, the LRU bypassed by rate()).
    sets = {
        "demo responses": demo_responses(args.speed_texts),
        "Brown paragraphs": [p for g in genres for p in paras[g]][: args.speed_texts],
    }
    print(f"\n{'texts':<18}{'model':<8}{'sentences/s':>13}{'x minilm':>10}")
    for label, texts in sets.items():
        r = {name: rate(s, texts) for name, s in services.items()}
        for name in services:
            print(f"{label:<18}{name:<8}{r[name]:>13,.0f}{r[name] / r['minilm']:>10.2f}")

    emb = {}
    for name, s in services.items():
        t0 = time.perf_counter()
        emb[name] = embed_cached(name, s, paras, genres)
        n = sum(len(v) for v in emb[name].values())
        print(f"{name}: {n} Brown paragraphs embedded (or read from bench/.cache) in {time.perf_counter() - t0:.0f} s")

    tests = {
        "a=0.01": lambda r, c: mmd_permutation_test(r, c, permutations=500, alpha=0.01).drifted,
        "a=0.001": lambda r, c: mmd_permutation_test(r, c, permutations=1000, alpha=0.001).drifted,
    }
    base = "news"
    others = [g for g in genres if g != base]
    print(
        f"\nBrown genres: {', '.join(genres)}\nshift: {base} vs each other genre; mixed: {base} with {args.mix:.0%} of another genre; "
        f"same: disjoint windows of one genre; {args.reps} draws per size and case, the same draws for both models\n"
    )
    header = f"{'model':<8}{'test':<9}{'size':>5}{'shift':>8}{'mixed':>8}{'false alarms':>14}"
    print(header)
    print("-" * len(header))
    for size in (int(s) for s in args.sizes.split(",")):
        k = max(1, round(args.mix * size))
        draws = []
        for i in range(args.reps):
            g, same_g = others[i % len(others)], genres[i % len(genres)]
            a = rng.sample(range(len(paras[base])), 3 * size)
            b = rng.sample(range(len(paras[g])), size)
            s = rng.sample(range(len(paras[same_g])), 2 * size)
            draws.append((g, same_g, a, b, s))
        for name in services:
            e = emb[name]
            for tname, test in tests.items():
                shift = mixed = alarms = 0
                for g, same_g, a, b, s in draws:
                    ref = e[base][a[:size]]
                    shift += test(ref, e[g][b])
                    mixed += test(ref, np.concatenate([e[base][a[size : 2 * size - k]], e[g][b[:k]]]))
                    alarms += test(e[same_g][s[:size]], e[same_g][s[size:]])
                n = len(draws)
                print(f"{name:<8}{tname:<9}{size:>5}{shift / n:>8.2f}{mixed / n:>8.2f}{alarms / n:>14.2f}")
        print()


if __name__ == "__main__":
    main()
