"""Ranking metrics without a dependency: ROC-AUC (Mann-Whitney, ties count half), PR-AUC
(average precision) and recall / precision at a false-positive-rate budget."""

from __future__ import annotations

import numpy as np


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Probability that a random positive outscores a random negative; None without both."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # Average ranks over ties.
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - npos * (npos + 1) / 2.0) / (npos * nneg))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float | None:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if not y.any():
        return None
    order = np.argsort(-s, kind="mergesort")
    hits = y[order]
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(s) + 1)
    return float((precision * hits).sum() / hits.sum())


def at_fpr(scores: np.ndarray, labels: np.ndarray, fpr: float = 0.01) -> dict[str, float] | None:
    """Threshold = the negatives' (1 - fpr) quantile: recall and precision there."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if not y.any() or y.all():
        return None
    neg = np.sort(s[~y])
    k = int(np.floor(len(neg) * (1.0 - fpr)))
    thr = neg[min(k, len(neg) - 1)]
    flagged = s > thr
    tp = int((flagged & y).sum())
    fp = int((flagged & ~y).sum())
    return {
        "threshold": float(thr),
        "recall": tp / int(y.sum()),
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "fpr": fp / len(neg),
    }


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rates, true-positive rates) at every distinct threshold."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    order = np.argsort(-s, kind="mergesort")
    ys, ss = y[order], s[order]
    distinct = np.r_[np.flatnonzero(np.diff(ss)), len(ss) - 1] if len(ss) else np.zeros(0, int)
    tp = np.cumsum(ys)[distinct]
    fp = np.cumsum(~ys)[distinct]
    tpr = np.r_[0.0, tp / max(int(y.sum()), 1)]
    fpr = np.r_[0.0, fp / max(int((~y).sum()), 1)]
    return fpr, tpr
