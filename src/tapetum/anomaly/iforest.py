"""Isolation Forest (Liu, Ting and Zhou, ICDM 2008), fitted and scored with numba.

Each tree isolates a random subsample (`max_samples`, 256 by default) with random axis-parallel
splits up to depth ceil(log2 max_samples); a point's anomaly score is 2^(-E[h(x)] / c(n)), where
h is the path length (plus the expected remaining length c(size) at a leaf). Few splits isolate
an anomaly, so high scores (towards 1) mean anomalous, about 0.5 or less means normal.

The forest is flat arrays (feature, threshold, left child, leaf size per node), so it persists as
npz and scores without any Python per row. scikit-learn's IsolationForest is not used: it would
need pickle to persist, and it is not installed here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit, prange

from tapetum.anomaly.scaling import RobustScaler

EULER = 0.5772156649015329


@njit(cache=True)
def _c(n: float) -> float:
    """Average path length of an unsuccessful BST search among n points."""
    if n <= 1.0:
        return 0.0
    if n == 2.0:
        return 1.0
    return 2.0 * (math.log(n - 1.0) + EULER) - 2.0 * (n - 1.0) / n


@njit(cache=True)
def _build(x, n_trees, psi, seed, feature, threshold, left, size):  # type: ignore[no-untyped-def]
    """Grow n_trees trees; node k of tree t lives at t * max_nodes + k (max_nodes = 2 psi - 1)."""
    np.random.seed(seed)
    n, d = x.shape
    max_nodes = 2 * psi - 1
    limit = int(math.ceil(math.log2(max(psi, 2))))  # noqa: RUF046 (numba: float ceil)
    idx = np.empty(psi, dtype=np.int64)
    stack_lo = np.empty(max_nodes, dtype=np.int64)
    stack_hi = np.empty(max_nodes, dtype=np.int64)
    stack_node = np.empty(max_nodes, dtype=np.int64)
    stack_depth = np.empty(max_nodes, dtype=np.int64)
    cand = np.empty(d, dtype=np.int64)
    for t in range(n_trees):
        base = t * max_nodes
        perm = np.random.permutation(n)
        for k in range(psi):
            idx[k] = perm[k]
        top = 0
        stack_lo[0] = 0
        stack_hi[0] = psi
        stack_node[0] = 0
        stack_depth[0] = 0
        top = 1
        next_node = 1
        while top > 0:
            top -= 1
            lo = stack_lo[top]
            hi = stack_hi[top]
            node = stack_node[top]
            depth = stack_depth[top]
            cnt = hi - lo
            feature[base + node] = -1
            left[base + node] = -1
            size[base + node] = cnt
            if cnt <= 1 or depth >= limit:
                continue
            # Features that are not constant within this node.
            nc = 0
            for j in range(d):
                mn = x[idx[lo], j]
                mx = mn
                for k in range(lo + 1, hi):
                    v = x[idx[k], j]
                    if v < mn:
                        mn = v
                    elif v > mx:
                        mx = v
                if mx > mn:
                    cand[nc] = j
                    nc += 1
            if nc == 0:
                continue  # duplicates only: a leaf
            j = cand[np.random.randint(0, nc)]
            mn = x[idx[lo], j]
            mx = mn
            for k in range(lo + 1, hi):
                v = x[idx[k], j]
                if v < mn:
                    mn = v
                elif v > mx:
                    mx = v
            thr = mn + np.random.random() * (mx - mn)
            if thr >= mx:
                thr = mn  # keep both sides non-empty
            # Partition idx[lo:hi] on x[:, j] <= thr.
            i = lo
            r = hi - 1
            while i <= r:
                if x[idx[i], j] <= thr:
                    i += 1
                else:
                    tmp = idx[i]
                    idx[i] = idx[r]
                    idx[r] = tmp
                    r -= 1
            feature[base + node] = j
            threshold[base + node] = thr
            left[base + node] = next_node
            stack_lo[top] = lo
            stack_hi[top] = i
            stack_node[top] = next_node
            stack_depth[top] = depth + 1
            top += 1
            stack_lo[top] = i
            stack_hi[top] = hi
            stack_node[top] = next_node + 1
            stack_depth[top] = depth + 1
            top += 1
            next_node += 2


@njit(cache=True, parallel=True)
def _score(x, walk, threshold, path, n_trees, max_nodes, limit, c_psi):  # type: ignore[no-untyped-def]
    """Branch-free traversal: leaves point to themselves with threshold +inf, so every tree is
    walked exactly `limit` steps; blocks of rows walk one tree level by level, which keeps the
    tree in cache and lets the CPU overlap the independent loads of different rows. `walk` holds
    (feature, left child) per node; float32 halves the memory traffic."""
    n = x.shape[0]
    out = np.empty(n)
    block = 128
    for b in prange((n + block - 1) // block):
        r0 = b * block
        m = min(block, n - r0)
        nodes = np.empty(m, dtype=np.int32)
        acc = np.zeros(m)
        for t in range(n_trees):
            base = t * max_nodes
            for i in range(m):
                nodes[i] = base
            for _ in range(limit):
                for i in range(m):
                    nd = nodes[i]
                    nodes[i] = base + walk[nd, 1] + (x[r0 + i, walk[nd, 0]] > threshold[nd])
            for i in range(m):
                acc[i] += path[nodes[i]]
        for i in range(m):
            out[r0 + i] = 2.0 ** (-(acc[i] / n_trees) / c_psi)
    return out


def _scoring_arrays(
    feature: np.ndarray, threshold: np.ndarray, left: np.ndarray, leaf_c: np.ndarray, m: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Self-looping leaves and per-node path lengths (depth + c(size)) for `_score`."""
    n = feature.shape[0]
    local = np.arange(n) % m
    leaf = feature < 0
    walk = np.stack([np.where(leaf, 0, feature), np.where(leaf, local, left)], axis=1)
    with np.errstate(over="ignore"):
        thr = np.where(leaf, np.inf, threshold).astype(np.float32)
    depth = np.zeros(n)
    limit = 0
    # Children are always numbered after their parent: one pass in node order sets depths.
    for k in np.flatnonzero(~leaf).tolist():
        base = k - local[k]
        d = depth[k] + 1
        depth[base + left[k]] = d
        depth[base + left[k] + 1] = d
        limit = max(limit, int(d))
    return np.ascontiguousarray(walk, dtype=np.int32), thr, depth + leaf_c, limit


class IsolationForest:
    name = "iforest"
    version = 1

    def __init__(self, *, n_trees: int = 100, max_samples: int = 256, seed: int = 0) -> None:
        self.n_trees = n_trees
        self.max_samples = max_samples
        self.seed = seed
        self.psi_ = 0
        self.feature_: np.ndarray | None = None
        self.threshold_: np.ndarray | None = None
        self.left_: np.ndarray | None = None
        self.leaf_c_: np.ndarray | None = None
        self._walk: tuple[np.ndarray, np.ndarray, np.ndarray, int] | None = None
        self._walk_raw: tuple[RobustScaler, tuple[np.ndarray, np.ndarray, np.ndarray, int]] | None
        self._walk_raw = None

    def fit(self, z: np.ndarray) -> IsolationForest:
        z = np.ascontiguousarray(z, dtype=np.float64)
        n = z.shape[0]
        if n == 0:
            raise ValueError("cannot fit an isolation forest on no rows")
        psi = max(1, min(self.max_samples, n))
        m = 2 * psi - 1
        feature = np.full(self.n_trees * m, -1, dtype=np.int32)
        threshold = np.zeros(self.n_trees * m, dtype=np.float64)
        left = np.full(self.n_trees * m, -1, dtype=np.int32)
        size = np.zeros(self.n_trees * m, dtype=np.int64)
        _build(z, self.n_trees, psi, self.seed, feature, threshold, left, size)
        self.psi_ = psi
        self.feature_, self.threshold_, self.left_ = feature, threshold, left
        self.leaf_c_ = np.array([_c(float(s)) for s in size.tolist()])
        self._walk = None
        self._walk_raw = None
        return self

    def score(self, z: np.ndarray) -> np.ndarray:
        assert self.feature_ is not None and self.leaf_c_ is not None, "fit first"
        assert self.threshold_ is not None and self.left_ is not None
        if z.shape[0] == 0:
            return np.zeros(0)
        if self._walk is None:
            self._walk = _scoring_arrays(
                self.feature_, self.threshold_, self.left_, self.leaf_c_, 2 * self.psi_ - 1
            )
        walk, thr, path, limit = self._walk
        c_psi = max(_c(float(self.psi_)), 1.0)
        m = 2 * self.psi_ - 1
        x = np.ascontiguousarray(z, dtype=np.float32)
        return np.asarray(_score(x, walk, thr, path, self.n_trees, m, limit, c_psi))

    def score_unscaled(self, x: np.ndarray, scaler: RobustScaler) -> np.ndarray:
        """Scores of raw rows equal to `score(scaler.transform(x))`, without transforming them.

        The scaler is monotone per column, so a split "z <= t" is the split "x <= t'" with t'
        the threshold mapped back to raw units; NaN (scaled to 0) becomes the column's median.
        This skips a pass over the data that costs more than the forest itself."""
        assert self.feature_ is not None and self.threshold_ is not None
        assert self.left_ is not None and self.leaf_c_ is not None
        if x.shape[0] == 0:
            return np.zeros(0)
        if self._walk_raw is None or self._walk_raw[0] is not scaler:
            inv = scaler.inverse(self.threshold_, np.maximum(self.feature_, 0))
            inv = np.where(self.feature_ < 0, self.threshold_, inv)
            m = 2 * self.psi_ - 1
            self._walk_raw = (
                scaler,
                _scoring_arrays(self.feature_, inv, self.left_, self.leaf_c_, m),
            )
        walk, thr32, path, limit = self._walk_raw[1]
        x = np.asarray(x, dtype=np.float64)
        nan = np.isnan(x)
        if nan.any():
            x = np.where(nan, scaler.typical()[None, :], x)
        c_psi = max(_c(float(self.psi_)), 1.0)
        m = 2 * self.psi_ - 1
        with np.errstate(over="ignore"):  # beyond float32: ±inf, still on the right side
            x32 = np.ascontiguousarray(x, dtype=np.float32)
        return np.asarray(_score(x32, walk, thr32, path, self.n_trees, m, limit, c_psi))

    def params(self) -> dict[str, Any]:
        return {"n_trees": self.n_trees, "max_samples": self.max_samples, "seed": self.seed,
                "psi": self.psi_}  # fmt: skip

    def arrays(self) -> dict[str, np.ndarray]:
        assert self.feature_ is not None and self.threshold_ is not None
        assert self.left_ is not None and self.leaf_c_ is not None
        return {"iforest.feature": self.feature_, "iforest.threshold": self.threshold_,
                "iforest.left": self.left_, "iforest.leaf_c": self.leaf_c_}  # fmt: skip

    @classmethod
    def restore(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> IsolationForest:
        f = cls(n_trees=int(params["n_trees"]), max_samples=int(params["max_samples"]),
                seed=int(params["seed"]))  # fmt: skip
        f.psi_ = int(params["psi"])
        m = f.n_trees * (2 * f.psi_ - 1)
        f.feature_ = np.asarray(arrays["iforest.feature"], dtype=np.int32)
        f.threshold_ = np.asarray(arrays["iforest.threshold"], dtype=np.float64)
        f.left_ = np.asarray(arrays["iforest.left"], dtype=np.int32)
        f.leaf_c_ = np.asarray(arrays["iforest.leaf_c"], dtype=np.float64)
        for a in (f.feature_, f.threshold_, f.left_, f.leaf_c_):
            if a.shape != (m,):
                raise ValueError(f"forest arrays have {a.shape[0]} nodes, expected {m}")
        nd = int(f.left_.max(initial=0))
        if nd >= 2 * f.psi_ - 1:
            raise ValueError("forest child index out of range")
        return f
