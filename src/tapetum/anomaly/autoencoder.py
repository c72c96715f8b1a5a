"""A KitNET-style autoencoder ensemble for flow features, in numpy.

KitNET (Mirsky et al., "Kitsune", NDSS 2018): features are clustered by correlation into small
groups (at most `max_group` columns), one tiny autoencoder (hidden = 75% of its inputs) learns
each group, and an output autoencoder learns the vector of the groups' reconstruction errors
(RMSE). The anomaly score is the output autoencoder's RMSE. Small groups keep each autoencoder
cheap and let an explanation name the group whose reconstruction failed.

This is the batch version for flow tables (full passes with Adam instead of KitNET's single
online SGD pass); the packet-level Kitsune lives in `tapetum.kitsune`. Inputs are the robust
scaled columns, squashed with tanh(z / 4) so a clipped outlier cannot dominate training.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

SQUASH = 4.0


def correlation_groups(z: np.ndarray, max_group: int = 10) -> list[list[int]]:
    """Columns grouped by average-linkage clustering on 1 - |correlation|, groups <= max_group."""
    d = z.shape[1]
    if d == 0:
        return []
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.corrcoef(z, rowvar=False) if z.shape[0] > 1 else np.zeros((d, d))
    c = np.nan_to_num(np.atleast_2d(c), nan=0.0)
    dist = 1.0 - np.abs(c)
    groups: list[list[int]] = [[j] for j in range(d)]
    while True:
        best, pair = math.inf, (-1, -1)
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                if len(groups[a]) + len(groups[b]) > max_group:
                    continue
                dd = float(dist[np.ix_(groups[a], groups[b])].mean())
                if dd < best:
                    best, pair = dd, (a, b)
        if pair[0] < 0:
            break
        a, b = pair
        groups[a] = sorted(groups[a] + groups[b])
        del groups[b]
    return sorted(groups)


class _AE:
    """One hidden layer (tanh), linear output, squared error, Adam."""

    def __init__(self, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray):
        self.w1, self.b1, self.w2, self.b2 = w1, b1, w2, b2

    @classmethod
    def new(cls, m: int, rng: np.random.Generator) -> _AE:
        h = max(1, math.ceil(0.75 * m))
        lim = math.sqrt(6.0 / (m + h))
        return cls(rng.uniform(-lim, lim, (m, h)), np.zeros(h),
                   rng.uniform(-lim, lim, (h, m)), np.zeros(m))  # fmt: skip

    def rmse(self, x: np.ndarray) -> np.ndarray:
        y = np.tanh(x @ self.w1 + self.b1) @ self.w2 + self.b2
        return np.asarray(np.sqrt(np.mean((y - x) ** 2, axis=1)))

    def train(self, x: np.ndarray, rng: np.random.Generator, epochs: int, lr: float) -> None:
        params = [self.w1, self.b1, self.w2, self.b2]
        m1 = [np.zeros_like(p) for p in params]
        m2 = [np.zeros_like(p) for p in params]
        step = 0
        n = x.shape[0]
        bs = min(256, n)
        for _ in range(epochs):
            order = rng.permutation(n)
            for s in range(0, n, bs):
                xb = x[order[s : s + bs]]
                hdn = np.tanh(xb @ self.w1 + self.b1)
                y = hdn @ self.w2 + self.b2
                gy = 2.0 * (y - xb) / xb.size
                gw2 = hdn.T @ gy
                gb2 = gy.sum(0)
                gh = (gy @ self.w2.T) * (1.0 - hdn**2)
                gw1 = xb.T @ gh
                gb1 = gh.sum(0)
                step += 1
                for p, g, a, v in zip(params, (gw1, gb1, gw2, gb2), m1, m2, strict=True):
                    a *= 0.9
                    a += 0.1 * g
                    v *= 0.999
                    v += 0.001 * g * g
                    p -= lr * (a / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)


class AutoencoderEnsemble:
    name = "autoencoder"
    version = 1

    def __init__(
        self, *, max_group: int = 10, epochs: int = 30, lr: float = 0.01, seed: int = 0
    ) -> None:
        self.max_group = max_group
        self.epochs = epochs
        self.lr = lr
        self.seed = seed
        self.groups_: list[list[int]] = []
        self.aes_: list[_AE] = []
        self.out_: _AE | None = None
        self.err_center_: np.ndarray | None = None
        self.err_scale_: np.ndarray | None = None

    def _errors(self, x: np.ndarray) -> np.ndarray:
        cols = [ae.rmse(x[:, g]) for ae, g in zip(self.aes_, self.groups_, strict=True)]
        return np.log1p(np.stack(cols, axis=1)) if cols else np.zeros((x.shape[0], 0))

    def fit(self, z: np.ndarray) -> AutoencoderEnsemble:
        if z.shape[0] == 0:
            raise ValueError("cannot fit an autoencoder ensemble on no rows")
        rng = np.random.default_rng(self.seed)
        x = np.tanh(np.asarray(z, dtype=np.float64) / SQUASH)
        self.groups_ = correlation_groups(x, self.max_group)
        self.aes_ = []
        for g in self.groups_:
            ae = _AE.new(len(g), rng)
            ae.train(x[:, g], rng, self.epochs, self.lr)
            self.aes_.append(ae)
        e = self._errors(x)
        self.err_center_ = e.mean(0)
        sd = e.std(0)
        self.err_scale_ = np.where(sd > 0, sd, 1.0)
        out = _AE.new(e.shape[1], rng)
        out.train((e - self.err_center_) / self.err_scale_, rng, self.epochs, self.lr)
        self.out_ = out
        return self

    def group_errors(self, z: np.ndarray) -> np.ndarray:
        """Each group's standardised log reconstruction error (for explanations)."""
        assert self.err_center_ is not None and self.err_scale_ is not None, "fit first"
        x = np.tanh(np.asarray(z, dtype=np.float64) / SQUASH)
        return np.asarray((self._errors(x) - self.err_center_) / self.err_scale_)

    def score(self, z: np.ndarray) -> np.ndarray:
        assert self.out_ is not None, "fit first"
        if z.shape[0] == 0:
            return np.zeros(0)
        e = np.clip(self.group_errors(z), -1e3, 1e3)
        return np.asarray(np.nan_to_num(self.out_.rmse(e), nan=0.0, posinf=1e6))

    def params(self) -> dict[str, Any]:
        return {"max_group": self.max_group, "epochs": self.epochs, "lr": self.lr,
                "seed": self.seed, "groups": self.groups_}  # fmt: skip

    def arrays(self) -> dict[str, np.ndarray]:
        assert self.out_ is not None and self.err_center_ is not None
        assert self.err_scale_ is not None
        out: dict[str, np.ndarray] = {"ae.err_center": self.err_center_,
                                      "ae.err_scale": self.err_scale_}  # fmt: skip
        for k, ae in enumerate([*self.aes_, self.out_]):
            tag = "out" if k == len(self.aes_) else str(k)
            out.update({f"ae.{tag}.w1": ae.w1, f"ae.{tag}.b1": ae.b1,
                        f"ae.{tag}.w2": ae.w2, f"ae.{tag}.b2": ae.b2})  # fmt: skip
        return out

    @classmethod
    def restore(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> AutoencoderEnsemble:
        e = cls(max_group=int(params["max_group"]), epochs=int(params["epochs"]),
                lr=float(params["lr"]), seed=int(params["seed"]))  # fmt: skip
        e.groups_ = [[int(j) for j in g] for g in params["groups"]]

        def ae(tag: str, m: int) -> _AE:
            w = [np.asarray(arrays[f"ae.{tag}.{p}"], dtype=np.float64)
                 for p in ("w1", "b1", "w2", "b2")]  # fmt: skip
            if w[0].shape[0] != m or w[2].shape[1] != m:
                raise ValueError(f"autoencoder {tag}: weights for {w[0].shape[0]} inputs, not {m}")
            return _AE(*w)

        e.aes_ = [ae(str(k), len(g)) for k, g in enumerate(e.groups_)]
        e.out_ = ae("out", len(e.groups_))
        e.err_center_ = np.asarray(arrays["ae.err_center"], dtype=np.float64)
        e.err_scale_ = np.asarray(arrays["ae.err_scale"], dtype=np.float64)
        return e
