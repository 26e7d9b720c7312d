"""Ranking and threshold measures shared by the training scripts and the benches (numpy only)."""

from __future__ import annotations

import numpy as np


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve from ranks (ties ranked in input order)."""
    scores = np.asarray(scores)
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    pos = np.asarray(labels).astype(bool)
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / max(1, n_pos * n_neg))


def auc_pr(scores, labels) -> float:
    """Average precision: the area under the precision-recall curve."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    lab = np.asarray(labels, dtype=float)[order]
    precision = np.cumsum(lab) / np.arange(1, len(lab) + 1)
    return float((precision * lab).sum() / lab.sum())


def best_threshold(scores, labels, beta: float = 0.5) -> tuple[float, float]:
    """(threshold, F-beta) of the best F-beta over the scores rounded to 0.01 (beta 0.5: precision
    counts twice as much as recall, as a monitor's false alarms cost more than a miss)."""
    scores, labels = np.asarray(scores), np.asarray(labels, dtype=bool)
    best = (0.5, -1.0)
    for t in np.unique(np.round(scores, 2)):
        if t <= 0:  # flags everything: no threshold
            continue
        flagged = scores >= t
        tp = (flagged & labels).sum()
        f = (1 + beta**2) * tp / max(1, beta**2 * labels.sum() + flagged.sum())
        if f > best[1]:
            best = (float(t), float(f))
    return best
