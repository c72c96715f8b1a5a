"""The anomaly detector: warm-up, alerts with explanations, poisoning resistance, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tapetum.config import AnomalySection, Config
from tapetum.detectors.anomaly import SID_FLOW, SID_HOST, AnomalyDetector
from tapetum.errors import ModelError
from tapetum.features.flowstats import FLOW_FEATURES, flow_features
from tapetum.registry import build_detectors
from tests.detectors.helpers import Step, replay, stream_of
from tests.detectors.scenarios import anomaly as scenario


@pytest.fixture(scope="module")
def steps(tmp_path_factory: pytest.TempPathFactory) -> list[Step]:
    path, _ = scenario.build(tmp_path_factory.mktemp("anomaly"))
    return stream_of(path)


def _detector(**kw: object) -> AnomalyDetector:
    (det,) = build_detectors(Config(), ["anomaly"])
    assert isinstance(det, AnomalyDetector)
    if kw:
        det = AnomalyDetector(AnomalySection(**kw), lag_s=det.lag_ns / 1e9)  # type: ignore[arg-type]
    return det


def test_flow_features_are_finite_and_named(steps: list[Step]) -> None:
    fb = next(s.flows for s in steps if s.flows is not None)
    x = flow_features(fb)
    assert x.shape == (len(fb), len(FLOW_FEATURES)) and np.isfinite(x).all()
    onehot = [k for k, n in enumerate(FLOW_FEATURES) if n.startswith("conn_state_")]
    np.testing.assert_array_equal(x[:, onehot].sum(axis=1), 1.0)


def test_upload_raises_flow_and_host_alerts_with_explanations(steps: list[Step]) -> None:
    alerts = replay(_detector(), steps)
    assert {a.entity for a in alerts} == {scenario.ATTACKER}
    by_sig = {a.signature_id: a for a in alerts}
    assert set(by_sig) == {SID_FLOW, SID_HOST}
    host = by_sig[SID_HOST]
    assert host.category == "anomaly" and host.dest_ip == "203.0.113.50"
    assert host.observed["bytes_out"] > 20e6 and host.baseline["bytes_out"] < 1e6
    assert "MB" in host.explanation and "usual" in host.explanation
    flow = by_sig[SID_FLOW]
    assert "typical" in flow.explanation and "z +" in flow.explanation
    assert flow.observed and set(flow.baseline) <= set(flow.observed)


def test_warm_up_learns_only(steps: list[Step]) -> None:
    """With a warm-up longer than the capture nothing alerts, everything is learnt."""
    det = _detector(warmup_s=10 * scenario.SPAN_S)
    assert replay(det, steps) == []
    assert det.flow_model_ is None and det.flows_learnt_ > 1000
    assert det.baselines_[scenario.ATTACKER][-1][0] > 0


def test_alerting_rows_are_not_learnt_and_a_burst_cannot_rewrite_the_baseline(
    steps: list[Step],
) -> None:
    det = _detector()
    replay(det, steps)
    before = det.baselines_[scenario.ATTACKER][-1][1][0]  # log1p(bytes out) mean
    # The host's 25 MB window alerted and was not learnt: its baseline stays at office volumes.
    assert np.expm1(before) < 1e5
    # Force-learning the same burst many times moves the baseline by a bounded step each time.
    b = [100, [before, 1.0, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5]]
    det._update(b, np.log1p(np.array([25e6, 40.0, 1.0, 2.0])))
    step = b[1][0] - before
    assert 0 < step <= det.config.alpha * 3 * 0.5 * 1.2533 + 1e-9


def test_state_round_trip_and_loaded_model_scores_at_once(steps: list[Step]) -> None:
    det = _detector(warmup_s=10 * scenario.SPAN_S)
    half = len(steps) // 2
    for s in steps[:half]:
        if s.flows is not None:
            det.learn(det.features(s.flows))
    state = json.loads(json.dumps(det.state()))
    loaded = AnomalyDetector.from_state(state)
    assert loaded.flow_model_ is not None
    for s in steps[half:]:
        if s.flows is not None:
            rows = det.features(s.flows)
            np.testing.assert_array_equal(det.score(rows), loaded.score(rows))
    # A loaded model skips the warm-up only if it was warm; a learnt state from `learn` is.
    loaded.warm_ = True
    alerts = replay(loaded, steps[half:])
    assert alerts and {a.entity for a in alerts} == {scenario.ATTACKER}


def test_mismatched_state_is_refused(steps: list[Step]) -> None:
    det = _detector()
    fb = next(s.flows for s in steps if s.flows is not None)
    det.learn(det.features(fb))
    state = det.state()
    with pytest.raises(ModelError, match="version"):
        AnomalyDetector.from_state({**state, "version": 99})
    with pytest.raises(ModelError, match="features"):
        AnomalyDetector.from_state({**state, "features": FLOW_FEATURES[::-1]})
    with pytest.raises(ModelError, match="window"):
        AnomalyDetector.from_state(state, AnomalySection(window_s=60.0))


def test_bounded_memory(tmp_path: Path, steps: list[Step]) -> None:
    det = _detector(reservoir_flows=100, max_hosts=5)
    replay(det, steps)
    assert det.reservoir_.shape[0] == 100 and det.flows_learnt_ > 1000
    assert len(det.baselines_) <= 7 and det.hosts_dropped_ > 0  # 5 hosts + peers ("*")
