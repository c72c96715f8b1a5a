"""Robust per-column scaling and categorical encoding that survive bad input.

Counts and byte volumes are heavy-tailed: columns are compressed with a signed log1p, then
centred on the median and divided by a robust spread (IQR, else MAD, else standard deviation,
else 1), so one huge flow does not define the scale. NaN becomes the median (z = 0: "nothing
known"), ±inf and extreme values are clipped to ±`clip` robust units, so no input can yield a
non-finite score. Constant training columns keep scale 1: any departure from the constant still
shows as a deviation instead of a division by zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numba import njit, prange

IQR_TO_SIGMA = 1.0 / 1.3489795  # IQR of a normal distribution is 1.349 sigma
MAD_TO_SIGMA = 1.4826


def signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.sign(x) * np.log1p(np.abs(x)))


def as_matrix(x: Any, n_features: int | None = None) -> np.ndarray:
    """A float64 2-D copy; a 1-D input with n_features columns is one row."""
    a = np.array(x, dtype=np.float64, copy=True)
    if a.ndim == 1:
        a = a.reshape(1, -1) if n_features is not None and a.size == n_features else a[:, None]
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D feature matrix, got shape {a.shape}")
    if n_features is not None and a.shape[1] != n_features:
        raise ValueError(f"expected {n_features} feature columns, got {a.shape[1]}")
    return a


@njit(cache=True, parallel=True)
def _transform(x, center, scale, log, clip, posinf, neginf, out):  # type: ignore[no-untyped-def]
    """One fused pass: signed log1p, centre, scale, NaN -> 0, ±inf -> just beyond the largest
    finite value learnt, clip."""
    n, d = x.shape
    for i in prange(n):
        for j in range(d):
            v = x[i, j]
            if v != v:
                out[i, j] = 0.0
                continue
            if v == np.inf:
                out[i, j] = posinf[j]
                continue
            if v == -np.inf:
                out[i, j] = neginf[j]
                continue
            if log:
                if v >= 0:
                    v = np.log1p(v) if v < np.inf else np.inf
                else:
                    v = -np.log1p(-v) if v > -np.inf else -np.inf
            z = (v - center[j]) / scale[j]
            if z != z:
                z = 0.0
            out[i, j] = min(max(z, -clip), clip)


class RobustScaler:
    """signed log1p → (x - median) / robust spread, clipped to ±clip; NaN → 0; ±inf → one unit
    beyond the largest (smallest) finite value learnt, so an "Infinity" rate in the learning data
    does not stretch a column's range to the clip and hide everything finite."""

    def __init__(self, *, log: bool = True, clip: float = 50.0) -> None:
        self.log = log
        self.clip = clip
        self.center_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.posinf_: np.ndarray | None = None
        self.neginf_: np.ndarray | None = None

    def _t(self, x: np.ndarray) -> np.ndarray:
        x = np.where(np.isposinf(x), np.finfo(np.float64).max, x)
        x = np.where(np.isneginf(x), -np.finfo(np.float64).max, x)
        return signed_log1p(x) if self.log else x

    def fit(self, x: np.ndarray) -> RobustScaler:
        x = as_matrix(x)
        t = self._t(x)
        d = t.shape[1]
        center = np.zeros(d)
        scale = np.ones(d)
        hi = np.ones(d)
        lo = -np.ones(d)
        for j in range(d):
            col = t[:, j]
            col = col[np.isfinite(col)]
            if col.size == 0:
                continue  # all NaN: centre 0, scale 1
            q1, med, q3 = np.quantile(col, [0.25, 0.5, 0.75])
            center[j] = med
            s = (q3 - q1) * IQR_TO_SIGMA
            if s <= 0:
                s = float(np.median(np.abs(col - med))) * MAD_TO_SIGMA
            if s <= 0:
                s = float(col.std())
            scale[j] = s if s > 0 else 1.0
            hi[j] = (col.max() - med) / scale[j] + 1.0
            lo[j] = (col.min() - med) / scale[j] - 1.0
        self.center_, self.scale_ = center, scale
        self.posinf_ = np.clip(hi, -self.clip, self.clip)
        self.neginf_ = np.clip(lo, -self.clip, self.clip)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        assert self.center_ is not None and self.scale_ is not None, "fit first"
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            x = as_matrix(x, len(self.center_))
        if x.shape[1] != len(self.center_):
            raise ValueError(f"expected {len(self.center_)} feature columns, got {x.shape[1]}")
        assert self.posinf_ is not None and self.neginf_ is not None
        out = np.empty(x.shape)
        _transform(x, self.center_, self.scale_, self.log, float(self.clip), self.posinf_,
                   self.neginf_, out)  # fmt: skip
        return out

    def inverse(self, z: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """Raw values whose scaled value in column columns[k] is z[k] (the inverse transform)."""
        assert self.center_ is not None and self.scale_ is not None
        u = np.asarray(z) * self.scale_[columns] + self.center_[columns]
        if not self.log:
            return np.asarray(u)
        with np.errstate(over="ignore"):
            return np.asarray(np.sign(u) * np.expm1(np.abs(u)))

    def typical(self) -> np.ndarray:
        """The median of each column in its original units."""
        assert self.center_ is not None
        c = self.center_
        return np.asarray(np.sign(c) * np.expm1(np.abs(c))) if self.log else c.copy()

    def arrays(self) -> dict[str, np.ndarray]:
        assert self.center_ is not None and self.scale_ is not None
        assert self.posinf_ is not None and self.neginf_ is not None
        return {"scaler.center": self.center_, "scaler.scale": self.scale_,
                "scaler.posinf": self.posinf_, "scaler.neginf": self.neginf_}  # fmt: skip

    def params(self) -> dict[str, Any]:
        return {"log": self.log, "clip": self.clip}

    @classmethod
    def restore(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> RobustScaler:
        s = cls(log=bool(params["log"]), clip=float(params["clip"]))
        s.center_ = np.asarray(arrays["scaler.center"], dtype=np.float64)
        s.scale_ = np.asarray(arrays["scaler.scale"], dtype=np.float64)
        s.posinf_ = np.asarray(arrays["scaler.posinf"], dtype=np.float64)
        s.neginf_ = np.asarray(arrays["scaler.neginf"], dtype=np.float64)
        return s


class CategoryEncoder:
    """One-hot columns for a fixed vocabulary plus an "other" column: a value never seen in
    learning (an unseen category) lands in "other" instead of failing or vanishing."""

    def __init__(self, name: str, vocabulary: Sequence[str]) -> None:
        self.name = name
        self.vocabulary = list(vocabulary)
        self._index = {v: k for k, v in enumerate(self.vocabulary)}

    @property
    def columns(self) -> list[str]:
        return [f"{self.name}_{v}" for v in self.vocabulary] + [f"{self.name}_other"]

    def encode(self, values: Sequence[str]) -> np.ndarray:
        other = len(self.vocabulary)
        idx = np.fromiter(
            (self._index.get(v, other) for v in values), dtype=np.int64, count=len(values)
        )
        out = np.zeros((len(values), other + 1))
        out[np.arange(len(values)), idx] = 1.0
        return out
