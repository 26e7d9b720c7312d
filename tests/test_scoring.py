import numpy as np
import pytest

from detectors.training.scoring import auc_pr, best_threshold, roc_auc

pytestmark = pytest.mark.unit


def test_ranking_measures_match_their_definitions_on_known_cases():
    labels = np.array([1, 1, 0, 0])
    assert roc_auc([0.9, 0.8, 0.2, 0.1], labels) == 1.0
    assert roc_auc([0.1, 0.2, 0.8, 0.9], labels) == 0.0
    assert roc_auc([0.9, 0.2, 0.8, 0.1], labels) == 0.75  # 3 of the 4 positive-negative pairs in order
    assert auc_pr([0.9, 0.8, 0.2, 0.1], labels) == 1.0
    assert auc_pr([0.9, 0.2, 0.8, 0.1], labels) == pytest.approx((1 + 2 / 3) / 2)


def test_best_threshold_prefers_precision_at_beta_one_half_and_never_flags_everything():
    scores = np.array([0.95, 0.9, 0.6, 0.55, 0.5, 0.0])
    labels = np.array([1, 1, 0, 1, 0, 0])
    t, f = best_threshold(scores, labels)
    assert t == 0.9 and f == pytest.approx(1.25 * 2 / (0.25 * 3 + 2))  # two of three found, no false alarm
    assert best_threshold(scores, labels, beta=2.0)[0] == 0.55  # recall first: all three found
    assert best_threshold(np.zeros(3), np.array([1, 0, 1]))[0] == 0.5  # only 0: nothing chosen
