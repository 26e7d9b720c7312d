"""Grounding on labelled claim/evidence pairs: does the detector tell supported claims from the rest?

Each pair becomes one RAG event: the claim is the response, the evidence its one context
document. "Not supported" = REFUTES or NOT ENOUGH INFO (contradiction / neutral).

* **tuning split**: VitaminC pairs whose premise hashes into the validation split of
  detectors/training/train_nli.py (never trained on); the shipped thresholds were chosen on it
  (the best F0.5 for "not supported": a monitor's false alarms cost more than a miss), and are
  re-derived here to show it;
* **report splits**: VitaminC's test split (never trained on, never tuned on) and FEVER
  Symmetric + 2.0 adversarial (another source, never trained on).

Printed per method (nli, lexical): AUC-PR for "not supported" (with the random baseline),
precision and recall at the shipped threshold, and claims/s.

    .venv/bin/python bench/bench_grounding.py [--nli-model PATH] [--limit N]
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from pathlib import Path

import numpy as np

from detectors.grounding import DEFAULT_THRESHOLDS, GroundingDetector
from detectors.training.scoring import auc_pr, best_threshold
from detectors.training.train_nli import _rows, split_of

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nli-model", default=None)
    ap.add_argument("--limit", type=int, default=3000, help="pairs per split at most (a seeded sample)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    vitc = [r for r in _rows(DATA / "factver_vitaminc" / "vitaminc_test.jsonl.gz") if r["premise"] and r["hypothesis"]]
    rng = random.Random(7)
    splits = {
        "VitaminC validation (tuning)": [r for r in vitc if split_of(r["premise"]) == "val"],
        "VitaminC test (report)": [r for r in vitc if split_of(r["premise"]) == "test"],
        "FEVER sym + 2.0 adv (report, other source)": [r for r in _rows(DATA / "factver_fever_eval" / "fever_eval.jsonl") if r["premise"]],
    }
    splits = {k: (rng.sample(v, args.limit) if len(v) > args.limit else v) for k, v in splits.items()}
    detectors = {"nli": GroundingDetector(method="nli", nli_model=args.nli_model), "lexical": GroundingDetector(method="lexical")}
    detectors["nli"].warm_up()
    print(f"{'split':<46}{'method':<9}{'n':>6}{'base':>7}{'AUC-PR':>8}{'thr':>6}{'prec':>7}{'recall':>8}{'claims/s':>10}")
    tuned = {}
    for split, rows in splits.items():
        labels = [r["label"] != "entailment" for r in rows]
        for method, det in detectors.items():
            t0 = time.perf_counter()
            res = det.score_many([r["hypothesis"] for r in rows], [[r["premise"]] for r in rows])
            rate = len(rows) / (time.perf_counter() - t0)
            scores = np.array([x.score for x in res])
            if split.endswith("(tuning)"):
                tuned[method] = (best_threshold(scores, labels), best_threshold(scores, labels, beta=1.0))
            thr = DEFAULT_THRESHOLDS[method]
            flagged = scores >= thr
            lab = np.array(labels)
            prec = (flagged & lab).sum() / max(1, flagged.sum())
            rec = (flagged & lab).sum() / max(1, lab.sum())
            print(
                f"{split:<46}{method:<9}{len(rows):>6}{100 * lab.mean():>7.1f}{100 * auc_pr(scores, labels):>8.2f}{thr:>6.2f}{100 * prec:>7.1f}{100 * rec:>8.1f}{rate:>10,.1f}"
            )
    for method, ((t, f05), (t1, f1)) in tuned.items():
        print(
            f"tuning split, {method}: best F0.5 at {t:.2f} ({f05:.3f}), best F1 at {t1:.2f} ({f1:.3f}); "
            f"shipped {DEFAULT_THRESHOLDS[method]:.2f} (the best F0.5)"
        )


if __name__ == "__main__":
    main()
