"""The original KitNET, per sample, as published: the baseline our batched ensemble is compared to.

A faithful re-implementation of KitNET/KitNET.py, KitNET/dA.py and KitNET/corClust.py of
https://github.com/ymirsky/Kitsune-py (Yisroel Mirsky; dA.py adapted from Yusuke Sugomori's
DeepLearning code), the implementation of Mirsky et al., "Kitsune: An Ensemble of Autoencoders
for Online Network Intrusion Detection", NDSS 2018. Same algorithm, same order of operations:

- `process(x)`: while n_trained <= FM_grace + AD_grace, train on x and return 0.0; afterwards
  return the output autoencoder's RMSE for x (no further learning);
- feature mapper: incremental correlation over the first FM_grace + 1 samples (running sums of
  residuals against the running mean), single-linkage clustering of the correlation distance,
  dendrogram split until clusters have at most m features;
- each autoencoder: tied weights initialised uniform(-1/n_visible, 1/n_visible) from
  RandomState(1234), hidden size ceil(0.75 n_visible), sigmoid layers, per-sample SGD (lr 0.1),
  0-1 normalisation by the running min/max seen in training (+1e-16);
- the output autoencoder is trained on the ensemble's RMSEs measured while training.

Only Python 3 / numpy 2 spelling changed (np.inf, no prints); quirks are kept, e.g. the hidden
biases all move by the mean of the hidden gradient (an axis-0 mean of a vector). Needs scipy
(the original's linkage/to_tree), an extra of the test and bench installs. Original licence (MIT):

Copyright (c) 2017 Yisroel Mirsky; Copyright (c) 2017 Yusuke Sugomori

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction,
including without limitation the rights to use, copy, modify, merge, publish, distribute,
sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions: The above copyright notice and this
permission notice shall be included in all copies or substantial portions of the Software.
THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT
OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.cluster.hierarchy import (  # type: ignore[import-untyped]
    ClusterNode,
    linkage,
    to_tree,
)


def sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # the original silences numpy errors globally
        return np.asarray(1.0 / (1.0 + np.exp(-x)))


class CorClust:
    """corClust.py: incremental correlation-distance clustering of the features."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.c = np.zeros(n)  # linear sum of the features
        self.c_r = np.zeros(n)  # linear sum of feature residuals
        self.c_rs = np.zeros(n)  # linear sum of squared feature residuals
        self.C = np.zeros((n, n))  # partial correlation matrix
        self.N = 0

    def update(self, x: np.ndarray) -> None:
        self.N += 1
        self.c += x
        c_rt = x - self.c / self.N
        self.c_r += c_rt
        self.c_rs += c_rt**2
        self.C += np.outer(c_rt, c_rt)

    def corr_dist(self) -> np.ndarray:
        c_rs_sqrt = np.sqrt(self.c_rs)
        big = np.outer(c_rs_sqrt, c_rs_sqrt)
        big[big == 0] = 1e-100  # constant features
        d = 1 - self.C / big
        d[d < 0] = 0
        return np.asarray(d)

    def cluster(self, max_clust: int) -> list[list[int]]:
        d = self.corr_dist()
        z = linkage(d[np.triu_indices(self.n, 1)])
        max_clust = min(max(max_clust, 1), self.n)
        return self._break(to_tree(z), max_clust)

    def _break(self, dendro: ClusterNode, max_clust: int) -> list[list[int]]:
        if dendro.count <= max_clust:
            return [[int(i) for i in dendro.pre_order()]]
        return self._break(dendro.get_left(), max_clust) + self._break(
            dendro.get_right(), max_clust
        )


class DA:
    """dA.py: a tied-weight autoencoder trained per sample with running 0-1 normalisation."""

    def __init__(self, n_visible: int, lr: float = 0.1, hidden_ratio: float = 0.75) -> None:
        self.n_visible = n_visible
        self.n_hidden = int(np.ceil(n_visible * hidden_ratio))
        self.lr = lr
        self.norm_max = np.ones((n_visible,)) * -np.inf
        self.norm_min = np.ones((n_visible,)) * np.inf
        self.n = 0
        self.rng = np.random.RandomState(1234)
        a = 1.0 / n_visible
        self.W = np.array(self.rng.uniform(low=-a, high=a, size=(n_visible, self.n_hidden)))
        self.hbias = np.zeros(self.n_hidden)
        self.vbias = np.zeros(n_visible)
        self.W_prime = self.W.T  # a view: the decoder shares the encoder's weights

    def get_hidden_values(self, x: np.ndarray) -> np.ndarray:
        return sigmoid(np.dot(x, self.W) + self.hbias)

    def get_reconstructed_input(self, hidden: np.ndarray) -> np.ndarray:
        return sigmoid(np.dot(hidden, self.W_prime) + self.vbias)

    def train(self, x: np.ndarray) -> float:
        self.n += 1
        self.norm_max[x > self.norm_max] = x[x > self.norm_max]
        self.norm_min[x < self.norm_min] = x[x < self.norm_min]
        x = (x - self.norm_min) / (self.norm_max - self.norm_min + 0.0000000000000001)
        tilde_x = x  # corruption level 0
        y = self.get_hidden_values(tilde_x)
        z = self.get_reconstructed_input(y)
        L_h2 = x - z
        L_h1 = np.dot(L_h2, self.W) * y * (1 - y)
        L_vbias = L_h2
        L_hbias = L_h1
        L_W = np.outer(tilde_x.T, L_h1) + np.outer(L_h2.T, y)
        self.W += self.lr * L_W
        self.hbias += self.lr * np.mean(L_hbias, axis=0)
        self.vbias += self.lr * np.mean(L_vbias, axis=0)
        return float(np.sqrt(np.mean(L_h2**2)))

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        return self.get_reconstructed_input(self.get_hidden_values(x))

    def execute(self, x: np.ndarray) -> float:
        x = (x - self.norm_min) / (self.norm_max - self.norm_min + 0.0000000000000001)
        z = self.reconstruct(x)
        return float(np.sqrt(((x - z) ** 2).mean()))


class ReferenceKitNET:
    """KitNET.py: feature mapper, ensemble layer and output layer, one sample at a time."""

    def __init__(
        self,
        n: int,
        max_autoencoder_size: int = 10,
        FM_grace_period: int | None = None,  # the original's parameter names
        AD_grace_period: int = 10000,
        learning_rate: float = 0.1,
        hidden_ratio: float = 0.75,
        feature_map: list[list[int]] | None = None,
    ) -> None:
        self.AD_grace_period = AD_grace_period
        self.FM_grace_period = AD_grace_period if FM_grace_period is None else FM_grace_period
        self.m = 1 if max_autoencoder_size <= 0 else max_autoencoder_size
        self.lr = learning_rate
        self.hr = hidden_ratio
        self.n = n
        self.n_trained = 0
        self.n_executed = 0
        self.v = feature_map
        self.ensembleLayer: list[DA] = []
        self.outputLayer: DA | None = None
        if self.v is not None:
            self._create_ad()
        self.FM = CorClust(self.n)

    def process(self, x: np.ndarray) -> float:
        """Train on x during the grace periods (returning 0.0), then return x's RMSE."""
        if self.n_trained > self.FM_grace_period + self.AD_grace_period:
            return self.execute(x)
        self.train(x)
        return 0.0

    def train(self, x: np.ndarray) -> None:
        if self.n_trained <= self.FM_grace_period and self.v is None:
            self.FM.update(x)
            if self.n_trained == self.FM_grace_period:
                self.v = self.FM.cluster(self.m)
                self._create_ad()
        else:
            assert self.outputLayer is not None
            s_l1 = np.zeros(len(self.ensembleLayer))
            for a in range(len(self.ensembleLayer)):
                s_l1[a] = self.ensembleLayer[a].train(x[self.v[a]])  # type: ignore[index]
            self.outputLayer.train(s_l1)
        self.n_trained += 1

    def execute(self, x: np.ndarray) -> float:
        if self.v is None or self.outputLayer is None:
            raise RuntimeError("KitNET cannot execute x: no feature mapping learned yet")
        self.n_executed += 1
        s_l1 = np.zeros(len(self.ensembleLayer))
        for a in range(len(self.ensembleLayer)):
            s_l1[a] = self.ensembleLayer[a].execute(x[self.v[a]])
        return self.outputLayer.execute(s_l1)

    def _create_ad(self) -> None:
        assert self.v is not None
        for fmap in self.v:
            self.ensembleLayer.append(DA(len(fmap), self.lr, self.hr))
        self.outputLayer = DA(len(self.v), self.lr, self.hr)

    @property
    def training_samples(self) -> int:
        """Samples consumed by training before scores are produced (FM + AD grace + 1)."""
        return self.FM_grace_period + self.AD_grace_period + 1


def quantile_threshold(scores: np.ndarray, false_alarm_rate: float) -> float:
    """The (1 - rate) quantile of scores: the calibrated alert threshold (NaN if none)."""
    s = np.asarray(scores, np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return math.nan
    return float(np.quantile(s, 1.0 - false_alarm_rate))
