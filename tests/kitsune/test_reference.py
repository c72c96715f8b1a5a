"""The re-implemented original KitNET on tiny cases checked by hand."""

from __future__ import annotations

import math

import numpy as np

from tapetum.kitsune.reference import DA, CorClust, ReferenceKitNET, quantile_threshold


def sig(a: float) -> float:
    return 1.0 / (1.0 + math.exp(-a))


def test_autoencoder_step_by_hand() -> None:
    ae = DA(2, lr=0.1, hidden_ratio=0.75)  # 2 visible, ceil(1.5) = 2 hidden
    assert ae.W.shape == (2, 2)
    w = np.random.RandomState(1234).uniform(-0.5, 0.5, size=(2, 2))
    np.testing.assert_array_equal(ae.W, w)  # the original seeds every autoencoder with 1234
    # First sample: min = max = x, so normalised x = 0 (division by 1e-16).
    r0 = ae.train(np.array([3.0, 5.0]))
    y = [sig(0.0), sig(0.0)]  # x = 0, biases 0
    z = [sig(y[0] * w[i, 0] + y[1] * w[i, 1]) for i in range(2)]
    assert math.isclose(r0, math.sqrt(((0 - z[0]) ** 2 + (0 - z[1]) ** 2) / 2), rel_tol=1e-12)
    # The update, by hand: L_h2 = x - z; L_h1 = (L_h2 W) y (1-y); W += lr (x L_h1 + L_h2 y).
    lh2 = [-z[0], -z[1]]
    lh1 = [(lh2[0] * w[0, j] + lh2[1] * w[1, j]) * y[j] * (1 - y[j]) for j in range(2)]
    w1 = np.array(
        [[w[i, j] + 0.1 * (0.0 * lh1[j] + lh2[i] * y[j]) for j in range(2)] for i in range(2)]
    )
    np.testing.assert_allclose(ae.W, w1, rtol=1e-12)
    np.testing.assert_allclose(ae.W_prime, w1.T)  # tied weights
    # hbias moves by the mean of L_h1 over hidden units (the original's axis-0 mean of a vector).
    np.testing.assert_allclose(ae.hbias, [0.1 * (lh1[0] + lh1[1]) / 2] * 2, rtol=1e-12)
    np.testing.assert_allclose(ae.vbias, [0.1 * (lh2[0] + lh2[1]) / 2] * 2, rtol=1e-12)
    # Execute uses the running min/max: [1, 9] after a second sample.
    ae.train(np.array([1.0, 9.0]))
    x = np.array([2.0, 7.0])
    u = (x - [1.0, 5.0]) / (np.array([2.0, 4.0]) + 1e-16)
    h = [sig(u @ ae.W[:, j] + ae.hbias[j]) for j in range(2)]
    zz = [sig(h[0] * ae.W[i, 0] + h[1] * ae.W[i, 1] + ae.vbias[i]) for i in range(2)]
    expect = math.sqrt(((u[0] - zz[0]) ** 2 + (u[1] - zz[1]) ** 2) / 2)
    assert math.isclose(ae.execute(x), expect, rel_tol=1e-12)


def test_correlation_clustering() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=200), rng.normal(size=200)
    fm = CorClust(4)
    for i in range(200):
        fm.update(np.array([a[i], b[i], 2 * a[i] + 1, -3 * b[i] + 0.001 * a[i]]))
    assert sorted(sorted(g) for g in fm.cluster(2)) == [[0, 2], [1, 3]] or sorted(
        sorted(g) for g in fm.cluster(2)
    ) == [[0, 2], [1], [3]]
    d = fm.corr_dist()
    assert d[0, 2] < 1e-9 and d[1, 3] > 1.9  # correlated: 0; anti-correlated: ~2
    assert all(len(g) == 1 for g in fm.cluster(1))


def test_grace_periods_and_scores() -> None:
    rng = np.random.default_rng(1)
    k = ReferenceKitNET(6, max_autoencoder_size=3, FM_grace_period=50, AD_grace_period=100)
    base = rng.normal(size=(300, 2))
    x = np.repeat(base, 3, axis=1) + rng.normal(0, 0.01, size=(300, 6))
    out = [k.process(row) for row in x]
    assert k.training_samples == 151
    assert out[:151] == [0.0] * 151 and all(s > 0 for s in out[151:])
    assert k.n_trained == 151 and k.n_executed == 149
    assert sorted(sorted(g) for g in k.v or []) == [[0, 1, 2], [3, 4, 5]]
    normal = np.mean(out[151:])
    odd = k.process(np.array([3.0, -3.0, 3.0, -3.0, 3.0, -3.0]))  # breaks both correlations
    assert odd > 3 * normal
    assert math.isclose(quantile_threshold(np.arange(1001.0), 0.01), 990.0)
    assert math.isnan(quantile_threshold(np.array([np.nan]), 0.01))
