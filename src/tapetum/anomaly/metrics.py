"""Ranking metrics for benign-vs-attack evaluations (no scikit-learn needed)."""

from __future__ import annotations

import numpy as np


def roc_auc(neg: np.ndarray, pos: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U)."""
    neg = np.asarray(neg, dtype=np.float64)
    pos = np.asarray(pos, dtype=np.float64)
    if neg.size == 0 or pos.size == 0:
        return float("nan")
    allv = np.concatenate([neg, pos])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(allv.size)
    sv = allv[order]
    # Average ranks over ties.
    edges = np.flatnonzero(np.diff(sv)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [sv.size]])
    avg = (starts + ends - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[neg.size :].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (neg.size * pos.size))


def average_precision(neg: np.ndarray, pos: np.ndarray) -> float:
    """Area under the precision-recall curve (step-wise, as scikit-learn's average_precision)."""
    neg = np.asarray(neg, dtype=np.float64)
    pos = np.asarray(pos, dtype=np.float64)
    if pos.size == 0:
        return float("nan")
    s = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / pos.size
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def recall_at_fpr(neg: np.ndarray, pos: np.ndarray, fpr: float = 0.01) -> float:
    """Share of positives above the score that at most `fpr` of the negatives exceed."""
    neg = np.asarray(neg, dtype=np.float64)
    pos = np.asarray(pos, dtype=np.float64)
    if neg.size == 0 or pos.size == 0:
        return float("nan")
    s = np.sort(neg)[::-1]
    k = int(np.floor(fpr * neg.size))  # negatives allowed above the threshold
    thr = s[k] if k < s.size else -np.inf
    return float(np.mean(pos > thr))
