"""Judgement before and after issue 16's speed changes, in one process, on data none of it was tuned on.

* **before**: the embedding set-up before issue 16: sentence-transformers on torch (fp32) for every
  detector that embeds, and drift's MMD test on those MiniLM vectors;
* **after**: today's defaults: the int8 ONNX export of the same model on onnxruntime (``auto`` on a
  CPU), and drift on the static token table distilled from it.

Each family is scored by the detector as the worker builds it (``Settings().detector_kwargs()``), handed
the configuration's embedding service; a family whose path does not embed (consistency's default
unigram method, PII's recognizers) runs twice all the same, so the table shows it did not move rather
than saying so. Figures (report splits, never trained or tuned on):

* drift: power and false alarms of the MMD test on Brown (bench_drift's protocol: news against
  another genre, news with 25% of another genre, disjoint windows of one genre), alpha 0.01;
* consistency: NonFact AUC-PR on SelfCheckGPT's WikiBio passages 30-59;
* PII: macro F1 over the pattern types on presidio_synth v2 (the first ``--pii`` sentences);
* bias: the stereotype probe's pair accuracy (the probe is off by default; the default disparity detector does not
  embed), held-out kinds (mean) and Winogender;
* injection: F1 at the shipped threshold and the classifier's AUC, report split (a seeded sample);
* toxicity: F1 at the shipped threshold and the head's AUC, report split (a seeded sample).

    .venv/bin/python bench/bench_judgement.py [--reps 100] [--per-genre 250] [--sizes 50,100] [--sample 600] [--pii 1000]

Embeddings of Brown go to bench/.cache (git ignores it) for reruns; nothing else is cached.
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

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"


def auc(scores, labels) -> float:
    """ROC AUC (the probability that a positive outranks a negative; ties count half)."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    allv = np.concatenate([pos, neg])
    for v in np.unique(allv):  # average ranks of ties
        m = allv == v
        if m.sum() > 1:
            ranks[m] = ranks[m].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def f1(flagged, labels) -> float:
    f, y = np.asarray(flagged, dtype=bool), np.asarray(labels, dtype=bool)
    tp = (f & y).sum()
    p = tp / f.sum() if f.sum() else 0.0
    r = tp / y.sum() if y.sum() else 0.0
    return float(2 * p * r / (p + r)) if p + r else 0.0


# -- families ---------------------------------------------------------------------------------------


def drift_figures(services: dict, reps: int, per_genre: int, sizes=(50, 100)) -> dict[str, dict[str, float]]:
    from bench_drift import genre_samples
    from bench_static import embed_cached

    from detectors.drift import mmd_permutation_test

    rng = random.Random(0)
    paras, genres = genre_samples(rng, per_genre=per_genre, min_paragraphs=min(600, per_genre))
    base = "news"
    others = [g for g in genres if g != base]
    emb = {name: embed_cached(cache_name, svc, paras, genres) for name, (cache_name, svc) in services.items()}
    out: dict[str, dict[str, float]] = {name: {} for name in services}
    for size in sizes:
        k = max(1, round(0.25 * size))
        draws = []
        for i in range(reps):
            g, same_g = others[i % len(others)], genres[i % len(genres)]
            draws.append(
                (
                    g,
                    same_g,
                    rng.sample(range(len(paras[base])), 2 * size),
                    rng.sample(range(len(paras[g])), size),
                    rng.sample(range(len(paras[same_g])), 2 * size),
                )
            )
        for name in services:
            e = emb[name]
            shift = mixed = alarms = 0
            for j, (g, same_g, a, b, s) in enumerate(draws):
                ref = e[base][a[:size]]
                shift += mmd_permutation_test(ref, e[g][b], 500, 0.01, seed=j).drifted
                mixed += mmd_permutation_test(
                    ref, np.concatenate([e[base][a[size : 2 * size - k]], e[g][b[:k]]]), 500, 0.01, seed=j
                ).drifted
                alarms += mmd_permutation_test(e[same_g][s[:size]], e[same_g][s[size:]], 500, 0.01, seed=j).drifted
            out[name][f"drift power, news vs another genre, window {size}"] = shift / reps
            out[name][f"drift power, 25% of another genre, window {size}"] = mixed / reps
            out[name][f"drift false alarms, one genre, window {size}"] = alarms / reps
    return out


def consistency_figures(kwargs: dict, service) -> dict[str, float]:
    from bench_consistency import DATA as WIKIBIO
    from bench_consistency import REPORT, metrics

    from detectors.consistency import SelfConsistencyDetector

    data = json.loads(WIKIBIO.read_text())
    det = SelfConsistencyDetector(**(kwargs | {"embeddings": service}))
    res = det.score_many([p["gpt3_sentences"] for p in data], [p["gpt3_text_samples"] for p in data])
    nonfact, _, _ = metrics(data, REPORT, [np.asarray(r.sentence_scores) for r in res], [r.score for r in res])
    return {f"consistency NonFact AUC-PR ({det.method})": nonfact / 100}


def pii_figures(kwargs: dict, limit: int) -> dict[str, float]:
    from bench_pii import load_synth, score

    from detectors.pii import PIILeakDetector

    types = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS")
    data = load_synth(limit)
    det = PIILeakDetector(**kwargs)
    pred = [[(e.entity_type, e.start, e.end) for e in es] for es in det.find_many([t for t, _ in data])]
    table = score([g for _, g in data], pred, types)
    present = [t for t in types if table[t][3]]
    return {"PII macro F1, pattern types": float(np.mean([table[t][2] for t in present]))}


def bias_figures(service) -> dict[str, float]:
    from detectors.training.stereotype_pairs import KINDS, all_pairs, winogender_pairs
    from detectors.training.train_stereotype import DEFAULT_DATA, embed, evaluate

    report = evaluate(embed(service, all_pairs(DEFAULT_DATA)), embed(service, winogender_pairs(DEFAULT_DATA)))
    held = [report["held_out_kind"][k]["all"]["accuracy"] for k in KINDS if report["held_out_kind"][k]["all"]]
    return {
        "bias: stereotype probe (off by default), held-out kinds, mean pair accuracy": float(np.mean(held)),
        "bias: stereotype probe (off by default), Winogender pair accuracy": report["winogender_never_trained"]["accuracy"],
    }


def injection_sample(n: int) -> tuple[list[str], list[bool]]:
    from detectors.training.train_injection import load_attacks, load_benign, split_of

    rng = random.Random(16)
    attacks = [r["text"] for r in load_attacks(DATA) if split_of(r["text"]) == "report"]
    benign = [t for ts in load_benign(DATA).values() for t in ts if split_of(t) == "report"]
    attacks, benign = rng.sample(attacks, min(n, len(attacks))), rng.sample(benign, min(n, len(benign)))
    return attacks + benign, [True] * len(attacks) + [False] * len(benign)


def injection_figures(kwargs: dict, service, texts, labels) -> dict[str, float]:
    from detectors.injection import InjectionDetector

    det = InjectionDetector(**(kwargs | {"embeddings": service}))
    res = det.score_many(texts)
    return {
        "injection F1, report split sample": f1([r.flagged for r in res], labels),
        "injection classifier AUC": auc([r.classifier_score or 0.0 for r in res], labels),
    }


def toxicity_sample(n: int) -> tuple[list[str], list[bool]]:
    from detectors.training.toxicity_data import load

    rng = random.Random(16)
    report = [e for e in load() if e.split == "report"]
    chosen = rng.sample(report, min(2 * n, len(report)))
    return [e.text for e in chosen], [e.toxic for e in chosen]


def toxicity_figures(kwargs: dict, service, texts, labels) -> dict[str, float]:
    from detectors.toxicity import ToxicityDetector

    det = ToxicityDetector(**(kwargs | {"embeddings": service}))
    res = det.score_many(texts)
    return {
        "toxicity F1, report split sample": f1([r.flagged for r in res], labels),
        "toxicity head AUC": auc([r.head_score for r in res], labels),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=100, help="drift draws per window size and case")
    ap.add_argument("--per-genre", type=int, default=250, help="Brown paragraphs per genre (the drift draws' pool)")
    ap.add_argument("--sizes", default="50,100", help="drift window sizes (at most half of --per-genre)")
    ap.add_argument("--sample", type=int, default=600, help="injection: attacks and benign prompts each; toxicity: texts / 2")
    ap.add_argument("--pii", type=int, default=1000, help="presidio_synth v2 sentences")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")

    from detectors.embeddings import EmbeddingService
    from detectors.static_embeddings import StaticEmbeddingService
    from streams.settings import Settings

    kwargs = Settings().detector_kwargs()
    before = EmbeddingService(backend="torch", device="cpu")
    after = EmbeddingService(device="cpu")  # the default: auto
    print(f"before: MiniLM on {before.backend}; drift on MiniLM ({before.backend})")
    print(f"after:  MiniLM on {after.backend}; drift on the static table")
    for svc in (before, after):
        svc.cache_entries = 0  # every text reaches its model: no vector crosses from one configuration to the other

    rows: dict[str, dict[str, float]] = {"before": {}, "after": {}}
    seconds: dict[str, float] = {}

    def timed(label: str, fn, *fn_args):
        t0 = time.perf_counter()
        out = fn(*fn_args)
        seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - t0
        return out

    d = timed(
        "drift",
        lambda: drift_figures(
            {"before": ("minilm_torch", before), "after": ("static", StaticEmbeddingService())},
            args.reps,
            args.per_genre,
            tuple(int(x) for x in args.sizes.split(",")),
        ),
    )
    rows["before"] |= d["before"]
    rows["after"] |= d["after"]
    inj = injection_sample(args.sample)
    tox = toxicity_sample(args.sample)
    for name, svc in (("before", before), ("after", after)):
        rows[name] |= timed("consistency", consistency_figures, kwargs.get("consistency", {}), svc)
        rows[name] |= timed("pii", pii_figures, kwargs.get("pii", {}), args.pii)
        rows[name] |= timed("bias", bias_figures, svc)
        rows[name] |= timed("injection", injection_figures, kwargs.get("injection", {}), svc, *inj)
        rows[name] |= timed("toxicity", toxicity_figures, kwargs.get("toxicity", {}), svc, *tox)

    print(
        f"\nsamples: drift {args.reps} draws per cell from {args.per_genre} Brown paragraphs per genre; injection {sum(inj[1])} attacks + "
        f"{len(inj[1]) - sum(inj[1])} benign; toxicity {len(tox[1])} texts ({sum(tox[1])} toxic); PII {args.pii} sentences\n"
    )
    width = max(len(k) for k in rows["after"]) + 2
    print(f"{'figure (report data)':<{width}}{'before':>9}{'after':>9}{'after - before':>16}")
    for key in rows["after"]:
        b, a = rows["before"][key], rows["after"][key]
        print(f"{key:<{width}}{b:>9.3f}{a:>9.3f}{a - b:>+16.3f}")
    print("\nseconds per family (both configurations): " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))


if __name__ == "__main__":
    main()
