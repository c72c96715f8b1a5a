from __future__ import annotations

import numpy as np

from tapetum.anomaly.metrics import average_precision, recall_at_fpr, roc_auc


def test_roc_auc_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    neg = rng.integers(0, 10, 300).astype(float)
    pos = rng.integers(3, 13, 200).astype(float)
    pairs = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert abs(roc_auc(neg, pos) - pairs) < 1e-12
    assert np.isnan(roc_auc(neg, np.array([])))


def test_average_precision() -> None:
    assert average_precision(np.array([0.1, 0.2]), np.array([0.9, 0.8])) == 1.0
    # Ranking: pos 0.9, neg 0.8, pos 0.7 -> AP = (1/2)*1 + (1/2)*(2/3).
    ap = average_precision(np.array([0.8]), np.array([0.9, 0.7]))
    assert abs(ap - (0.5 + 1 / 3)) < 1e-12


def test_recall_at_fpr() -> None:
    neg = np.arange(100, dtype=float)  # 1% FPR: only the top negative (99) may be exceeded
    pos = np.array([98.5, 99.5, 100.0, 50.0])
    assert recall_at_fpr(neg, pos, 0.01) == 0.75
    assert recall_at_fpr(neg, pos, 0.0) == 0.5
