"""Accuracy of the shipped NLI model (int8 ONNX, as the worker runs it) on data it was not trained on.

* the held-out **test split** of every training source (premise-hash 0-9 of
  :func:`detectors.training.train_nli.split_of`), 3-way accuracy per source, and on the
  ``hard`` subsets of MultiNLI and SNLI;
* **FEVER** (Symmetric + 2.0 adversarial), never trained on: 3-way accuracy, and the
  2-way accuracy of "supported" = argmax is entailment;
* speed: pairs/s over the test split with the scorer's own batching.

    .venv/bin/python -m detectors.training.eval_nli [--model PATH] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from detectors.nli import ENTAILMENT, NLIScorer
from detectors.training.train_nli import DEFAULT_DATA, LABELS, OOD_SOURCE, TRAIN_SOURCES, _rows, load_pairs, split_of


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="default: the shipped model")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args(argv)
    scorer = NLIScorer(args.model)
    scorer.warm_up()
    rows = []
    for folder, name in TRAIN_SOURCES:
        rows += [
            r
            for r in _rows(args.data / folder / name)
            if r.get("label") in LABELS and r.get("premise") and split_of(r["premise"]) == "test"
        ]
    ood = [r for r in _rows(args.data / OOD_SOURCE[0] / OOD_SOURCE[1]) if r.get("label") in LABELS and r.get("premise")]
    t0 = time.perf_counter()
    probs = scorer.probabilities([r["premise"] for r in rows], [r["hypothesis"] for r in rows])
    rate = len(rows) / (time.perf_counter() - t0)
    ood_probs = scorer.probabilities([r["premise"] for r in ood], [r["hypothesis"] for r in ood])

    def acc(rs, ps) -> tuple[float, int]:
        gold = np.array([LABELS.index(r["label"]) for r in rs])
        return (float((ps.argmax(axis=1) == gold).mean()) if len(rs) else float("nan")), len(rs)

    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[r["source"]].append(i)
        if r.get("hard"):
            groups[f"{r['source']} hard"].append(i)
    report: dict[str, object] = {"test split, 3-way accuracy": {}, "model": scorer.model_path}
    table = report["test split, 3-way accuracy"]
    assert isinstance(table, dict)
    all_acc, n = acc(rows, probs)
    table["all"] = {"accuracy": round(all_acc, 4), "n": n}
    for g, idx in sorted(groups.items()):
        a, n = acc([rows[i] for i in idx], probs[idx])
        table[g] = {"accuracy": round(a, 4), "n": n}
    fever_by: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(ood):
        fever_by[r["source"]].append(i)
    report["FEVER (never trained on)"] = {}
    fever = report["FEVER (never trained on)"]
    assert isinstance(fever, dict)
    for g, idx in sorted(fever_by.items()) + [("all", list(range(len(ood))))]:
        rs, ps = [ood[i] for i in idx], ood_probs[idx]
        three, n = acc(rs, ps)
        supported = np.array([r["label"] == "entailment" for r in rs])
        two = float(((ps.argmax(axis=1) == ENTAILMENT) == supported).mean())
        fever[g] = {"3-way accuracy": round(three, 4), "supported-vs-not accuracy": round(two, 4), "n": n}
    # The training script's learning-curve sample (fp32, in training) scored again by the int8 model: the cost of quantising.
    data = load_pairs(args.data)
    val = random.Random(13).sample(data["val"], min(500, len(data["val"])))
    vp = scorer.probabilities([p for p, _, _, _ in val], [h for _, h, _, _ in val])
    int8_acc = float((vp.argmax(axis=1) == np.array([y for _, _, y, _ in val])).mean())
    config = json.loads((scorer.path / "nli_config.json").read_text()) if (scorer.path / "nli_config.json").exists() else {}
    curve = config.get("learning_curve") or [{}]
    report["validation sample (500): fp32 at the end of training vs int8 shipped"] = {
        "fp32": curve[-1].get("val_acc"),
        "int8": round(int8_acc, 4),
    }
    report["pairs/s (test split, this machine)"] = round(rate, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
