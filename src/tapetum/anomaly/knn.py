"""k-nearest-neighbour distance (Ramaswamy, Rastogi and Shim, SIGMOD 2000).

The score of a row is its Euclidean distance, in robust-scaled units, to the k-th nearest of the
learnt normal rows (at most `max_reference`, a seeded subsample). Slower than the forest (it
compares every row with the whole reference set) but often sharper on flow tables whose benign
traffic forms many small, tight clusters (one per service) that axis-parallel random splits
describe poorly.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class KNNDistance:
    name = "knn"
    version = 1

    def __init__(self, *, k: int = 5, max_reference: int = 4096, seed: int = 0) -> None:
        self.k = k
        self.max_reference = max_reference
        self.seed = seed
        self.reference_: np.ndarray | None = None

    def fit(self, z: np.ndarray) -> KNNDistance:
        z = np.asarray(z, dtype=np.float64)
        if z.shape[0] == 0:
            raise ValueError("cannot fit on no rows")
        if z.shape[0] > self.max_reference:
            pick = np.random.default_rng(self.seed).choice(
                z.shape[0], self.max_reference, replace=False
            )
            z = z[np.sort(pick)]
        self.reference_ = np.ascontiguousarray(z)
        return self

    def score(self, z: np.ndarray) -> np.ndarray:
        ref = self.reference_
        assert ref is not None, "fit first"
        z = np.asarray(z, dtype=np.float64)
        n = z.shape[0]
        out = np.zeros(n)
        if n == 0:
            return out
        k = min(self.k, ref.shape[0])
        rr = (ref * ref).sum(1)
        block = max(1, 2_000_000 // max(1, ref.shape[0]))
        for s in range(0, n, block):
            q = z[s : s + block]
            # |q - r|^2 = |q|^2 + |r|^2 - 2 q.r, one matrix product per block.
            d2 = (q * q).sum(1)[:, None] + rr[None, :] - 2.0 * (q @ ref.T)
            kth = np.partition(d2, k - 1, axis=1)[:, k - 1]
            out[s : s + block] = np.sqrt(np.maximum(kth, 0.0))
        return out

    def params(self) -> dict[str, Any]:
        return {"k": self.k, "max_reference": self.max_reference, "seed": self.seed}

    def arrays(self) -> dict[str, np.ndarray]:
        assert self.reference_ is not None
        return {"knn.reference": self.reference_}

    @classmethod
    def restore(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> KNNDistance:
        m = cls(k=int(params["k"]), max_reference=int(params["max_reference"]),
                seed=int(params["seed"]))  # fmt: skip
        ref = np.asarray(arrays["knn.reference"], dtype=np.float64)
        if ref.ndim != 2 or ref.shape[0] == 0:
            raise ValueError("k-NN reference set is empty or not a matrix")
        m.reference_ = ref
        return m
