"""Thresholds calibrated to a target false-alarm rate on benign (learning) scores.

With at least `MIN_TAIL` benign scores above the wanted quantile it is the empirical quantile.
A rarer rate than the data can show (fpr < MIN_TAIL / n) is extrapolated with a
peaks-over-threshold fit (Siffer et al., "Anomaly detection in streams with extreme value
theory", KDD 2017, exponential tail): excesses over the 90% quantile are modelled as exponential
with their mean, so a threshold of 1 in 10 000 can be set from 2 000 benign rows instead of
stopping at the largest one seen.

Per entity class (e.g. service class, internal/external): a class with enough rows gets its own
threshold, the rest use the global one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

MIN_TAIL = 10
TAIL_QUANTILE = 0.9


def calibrate(scores: np.ndarray, fpr: float) -> float:
    """The score above which a fraction `fpr` of these benign scores (and of future ones from
    the same distribution) lies."""
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"target false-alarm rate must be in (0, 1), got {fpr}")
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return math.inf  # nothing learnt: nothing is known to be abnormal
    if s.size * fpr >= MIN_TAIL:
        return float(np.quantile(s, 1.0 - fpr, method="higher"))
    t0 = float(np.quantile(s, TAIL_QUANTILE))
    excess = s[s > t0] - t0
    if excess.size == 0:
        return float(s.max())  # a flat tail (all scores equal): anything above is new
    p_tail = excess.size / s.size
    # Exponential tail: P(S > t0 + y) = p_tail * exp(-y / mean_excess).
    return t0 + float(excess.mean()) * math.log(p_tail / fpr)


class Thresholds:
    """A global threshold and optional per-class ones."""

    def __init__(self, fpr: float, global_: float, by_class: dict[str, float] | None = None):
        self.fpr = fpr
        self.global_ = global_
        self.by_class = dict(by_class or {})

    @classmethod
    def fit(
        cls,
        scores: np.ndarray,
        fpr: float,
        classes: Sequence[str] | None = None,
        min_class_rows: int | None = None,
    ) -> Thresholds:
        scores = np.asarray(scores, dtype=np.float64)
        t = cls(fpr, calibrate(scores, fpr))
        if classes is not None:
            need = min_class_rows if min_class_rows is not None else max(50, int(MIN_TAIL / 0.1))
            labels = np.asarray(list(classes), dtype=object)
            for c in sorted(set(labels.tolist())):
                m = labels == c
                if int(m.sum()) >= need:
                    t.by_class[str(c)] = calibrate(scores[m], fpr)
        return t

    def of(self, n: int, classes: Sequence[str] | None = None) -> np.ndarray:
        out = np.full(n, self.global_, dtype=np.float64)
        if classes is not None and self.by_class:
            for k, c in enumerate(classes):
                out[k] = self.by_class.get(c, self.global_)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"fpr": self.fpr, "global": _num(self.global_), "by_class": {
            k: _num(v) for k, v in self.by_class.items()}}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Thresholds:
        return cls(float(d["fpr"]), _unnum(d["global"]),
                   {str(k): _unnum(v) for k, v in d["by_class"].items()})  # fmt: skip


def _num(x: float) -> float | str:
    return "inf" if math.isinf(x) else x  # JSON has no infinity


def _unnum(x: float | str) -> float:
    return math.inf if x == "inf" else float(x)


def to_unit(raw: np.ndarray, threshold: np.ndarray | float) -> np.ndarray:
    """Map non-negative raw scores to 0..1 with 0.5 exactly at the threshold (monotone)."""
    raw = np.maximum(np.nan_to_num(np.asarray(raw, dtype=np.float64), nan=0.0), 0.0)
    thr = np.asarray(threshold, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = raw / (raw + thr)
    u = np.where(np.isinf(thr), 0.0, u)
    return np.asarray(np.nan_to_num(u, nan=0.0, posinf=1.0))
