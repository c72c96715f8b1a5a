from __future__ import annotations

import math

import numpy as np
import pytest

from tapetum.anomaly.scaling import CategoryEncoder
from tapetum.anomaly.threshold import Thresholds, calibrate, to_unit


def test_empirical_quantile_when_data_suffices() -> None:
    s = np.random.default_rng(0).exponential(size=100_000)
    t = calibrate(s, 0.01)
    assert abs(t - math.log(100)) < 0.1
    held_out = np.random.default_rng(1).exponential(size=100_000)
    assert 0.009 < np.mean(held_out > t) < 0.011


def test_tail_extrapolation_beyond_the_largest_score() -> None:
    """1 in 10,000 from 2,000 rows: the peaks-over-threshold fit goes past the sample maximum."""
    errs = []
    for seed in range(20):
        s = np.random.default_rng(seed).exponential(size=2000)
        t = calibrate(s, 1e-4)
        errs.append(t / math.log(1e4) - 1)
    assert abs(float(np.median(errs))) < 0.1
    assert max(abs(e) for e in errs) < 0.35


def test_edge_cases() -> None:
    assert calibrate(np.array([]), 0.01) == math.inf
    assert calibrate(np.array([np.nan, np.inf, 2.0]), 0.01) == 2.0
    assert calibrate(np.full(100, 3.0), 0.001) == 3.0
    with pytest.raises(ValueError):
        calibrate(np.ones(5), 0.0)
    u = to_unit(np.array([0.0, 1.0, 2.0, np.nan]), 1.0)
    np.testing.assert_allclose(u, [0.0, 0.5, 2 / 3, 0.0])
    assert to_unit(np.array([5.0]), math.inf)[0] == 0.0


def test_per_class_thresholds() -> None:
    rng = np.random.default_rng(0)
    quiet = rng.exponential(1.0, 5000)
    busy = rng.exponential(10.0, 5000)
    classes = ["quiet"] * 5000 + ["busy"] * 5000 + ["rare"] * 10
    t = Thresholds.fit(np.r_[quiet, busy, np.ones(10)], 0.01, classes)
    assert set(t.by_class) == {"quiet", "busy"}  # "rare" has too few rows: global threshold
    thr = t.of(3, ["quiet", "busy", "rare"])
    assert thr[0] < thr[2] < thr[1]
    back = Thresholds.from_json(t.to_json())
    np.testing.assert_array_equal(back.of(3, ["quiet", "busy", "rare"]), thr)


def test_unseen_category_goes_to_other() -> None:
    enc = CategoryEncoder("conn_state", ["SF", "S0"])
    out = enc.encode(["SF", "S0", "XYZ", ""])
    assert enc.columns == ["conn_state_SF", "conn_state_S0", "conn_state_other"]
    np.testing.assert_array_equal(out, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]])
    assert enc.encode([]).shape == (0, 3)
