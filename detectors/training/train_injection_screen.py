"""Train the injection classifier's static screen: a logistic head on the static token table that decides
which texts need all-MiniLM-L6-v2 at all (issue 16).

The screen reads every text; only a text whose screen score reaches the **gate** goes through MiniLM and the
shipped head (``injection_head.json``, trained by ``train_injection.py``, unchanged); below the gate the
screen's own score stands in for the classifier's. Same data, hash splits, class weights and seed as
``train_injection.py``:

* the screen's C: the best AUC on the **tuning split**;
* the gate: on the tuning split only, the highest at which the screened detector flags every tuning-split
  text the unscreened one flags (rules + MiniLM head at its threshold);
* the **report split**, never trained or tuned on: precision, recall, F1 and AUC with and without the
  screen, the flags that differ, and the share of each source's texts that still go to MiniLM; MNLI
  premises (never trained on) too. Kept in the file's ``evaluation``.

    .venv/bin/python -m detectors.training.train_injection_screen [--data ../shared/data] [--out PATH]

MiniLM's vectors come from ``train_injection``'s cache (bench/.cache) when present.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import numpy as np

from detectors.injection import HEAD_FILE, SCREEN_FILE, InjectionHead, noisy_or
from detectors.training import train_injection as ti
from detectors.training.scoring import roc_auc
from detectors.training.train_injection import embed_windows  # bound here: bench_injection_static replaces ti's


def static_windows(texts: list[str]) -> list[np.ndarray]:
    """Per text, the static table's vectors of its windows (as the detector's screen reads them)."""
    from detectors.static_embeddings import StaticEmbeddingService

    return embed_windows(texts, StaticEmbeddingService(), cache_tag="static")


def screened(gate: float, p_static: np.ndarray, p_minilm: np.ndarray, rules: np.ndarray, threshold: float):
    """Flags, scores and which texts went to MiniLM, with the screen at ``gate``."""
    to_minilm = p_static >= gate
    p = np.where(to_minilm, p_minilm, p_static)
    score = np.array([noisy_or([r, q]) for r, q in zip(rules, p)])
    return score >= threshold, score, to_minilm


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", type=Path, default=ti.DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=SCREEN_FILE)
    args = ap.parse_args()
    attacks, benign, other = ti.load_attacks(args.data), ti.load_benign(args.data), ti.load_other_benign(args.data)
    rows = [(a["text"], 1, "attack") for a in attacks] + [(t, 0, src) for src, ts in benign.items() for t in ts]
    for k in ti.EXTRA_TRAIN:
        rows += [(t, 0, k) for t in other[k]]
    texts = [r[0] for r in rows]
    y = np.array([r[1] for r in rows])
    group = np.array([r[2] for r in rows])
    split = np.array([ti.split_of(t) for t in texts])
    tr, tu, rp = split == "train", split == "tune", split == "report"

    head = InjectionHead(HEAD_FILE)
    x_minilm = ti.embed_windows(texts)
    p_minilm = np.array([float(head.probabilities(v).max()) for v in x_minilm])
    rules = ti.rule_scores(texts)
    unscreened_score = np.array([noisy_or([r, p]) for r, p in zip(rules, p_minilm)])
    unscreened = unscreened_score >= head.threshold

    x_static = static_windows(texts)
    tuned = {}
    for c in ti.C_GRID:
        w, b = ti.fit([x_static[i] for i in np.flatnonzero(tr)], y[tr], c)
        tuned[c] = roc_auc(ti.predict(w, b, [x_static[i] for i in np.flatnonzero(tu)]), y[tu])
    c_best = max(tuned, key=lambda c: tuned[c])
    w, b = ti.fit([x_static[i] for i in np.flatnonzero(tr)], y[tr], c_best)
    p_static = ti.predict(w, b, x_static)

    gate = 0.0
    for g in sorted(np.unique(p_static[tu])):
        flagged, _, _ = screened(float(g), p_static[tu], p_minilm[tu], rules[tu], head.threshold)
        if not (flagged | ~unscreened[tu]).all():
            break
        gate = float(g)
    gate = float(np.floor(gate * 1e4) / 1e4)  # stored rounded down: never above the tuned value

    flagged, score, to_minilm = screened(gate, p_static, p_minilm, rules, head.threshold)
    to_minilm_share = {
        g: round(float(to_minilm[rp & (group == g)].mean()), 4) for g in ("attack", "notinject", "wildguard", *ti.EXTRA_TRAIN)
    }
    mnli = other["mnli_premises"]
    to_minilm_share["mnli_premises_never_trained_on"] = round(float((ti.predict(w, b, static_windows(mnli)) >= gate).mean()), 4)
    evaluation = {
        "C_by_tuning_auc": {str(k): round(v, 4) for k, v in tuned.items()},
        "C": c_best,
        "gate_tuned": gate,
        "report_split": {
            "unscreened": ti.prf(unscreened[rp], y[rp]) | {"auc": round(roc_auc(unscreened_score[rp], y[rp]), 4)},
            "screened": ti.prf(flagged[rp], y[rp]) | {"auc": round(roc_auc(score[rp], y[rp]), 4)},
            "flags_that_differ": int((flagged[rp] != unscreened[rp]).sum()),
            "texts": int(rp.sum()),
        },
        "share_sent_to_minilm_report_split": to_minilm_share,
    }
    out = {
        "model": "logistic regression on the static token table (detectors/models/static-minilm-l6), windows as train_injection",
        "embedding": "static-minilm-l6",
        "dimension": int(len(w)),
        "gate": gate,
        "trained": date.today().isoformat(),
        "seed": ti.SEED,
        "script": "detectors/training/train_injection_screen.py",
        "evaluation": evaluation,
        "weights": [round(float(v), 6) for v in w],
        "bias": round(b, 6),
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in out.items() if k not in ("weights",)}, indent=1))


if __name__ == "__main__":
    main()
