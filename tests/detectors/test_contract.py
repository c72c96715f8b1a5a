"""Shared checks every registered detector passes (river's check_estimator idea).

Empty input, a single row, persistence round trip through JSON, determinism, and a ranking
better than chance on a small labelled set. Each detector brings its labelled set as
`tests/detectors/scenarios/<name>.py` (benign traffic plus the attack it is for); a registered
detector without one fails here.

A packet-level detector (class attribute `level = "packet"`, e.g. kitsune) reads packet batches,
not flows: its `features(flows)` rows are empty, so the same checks run on its packet rows, from
`packet_features(batch)` (stateful over the stream; rows support `len`, `take(idx)` and
`type(rows).concat(parts)`), and its alerts come from the pipeline's `observe_packets` calls.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tapetum.config import Config
from tapetum.pipeline import Pipeline
from tapetum.registry import DETECTORS, build_detectors
from tapetum.sources.pcap import CaptureReader, PacketBatch
from tests.detectors.helpers import Step, no_flows, replay, stream_of

Labelled = tuple[list[Step], set[str]]
_cache: dict[str, Labelled] = {}
_paths: dict[str, Path] = {}


@pytest.fixture
def labelled(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Labelled:
    name = request.node.callspec.params["name"]
    if name not in _cache:
        try:
            scenario = importlib.import_module(f"tests.detectors.scenarios.{name}")
        except ModuleNotFoundError:
            pytest.fail(f"detector {name!r} has no labelled scenario in tests/detectors/scenarios")
        path, attackers = scenario.build(tmp_path_factory.mktemp(f"contract-{name}"))
        _cache[name] = (stream_of(path), attackers)
        _paths[name] = path
    return _cache[name]


def _config(name: str) -> Config:
    """A scenario may bring its own config as `config() -> Config` (e.g. indicators to load)."""
    make = getattr(importlib.import_module(f"tests.detectors.scenarios.{name}"), "config", None)
    return make() if make is not None else Config()


def _rows(det: object, steps: list[Step]) -> list[object]:
    """Feature rows per step; a scenario may be an auth log (steps of auth events, no flows)."""
    return [
        det.features(s.flows if s.flows is not None else no_flows(), s.events + s.auth)  # type: ignore[attr-defined]
        for s in steps
        if s.flows is not None or s.auth
    ]


def _packet_level(det: object) -> bool:
    return getattr(det, "level", "flow") == "packet"


def _packet_rows(det: Any, name: str) -> Any:
    """All packet rows of the scenario, in capture order, as one row set."""
    with CaptureReader(_paths[name]) as reader:
        parts = [det.packet_features(b) for b in reader]
    return type(parts[0]).concat(parts)


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_empty_and_single_row(name: str, labelled: Labelled) -> None:
    steps, _ = labelled
    (det,) = build_detectors(_config(name), [name])
    fb = next((s.flows for s in steps if s.flows is not None), None) or no_flows()
    none = np.zeros(0, dtype=np.int64)
    empty = det.features(fb.take(none), [])
    assert det.score(empty).shape == (0,)
    assert det.explain(empty, none) == []
    det.observe_events([])
    det.observe(fb.take(none))
    assert det.poll(None) == [] and det.flush() == []
    events = next((s.events + s.auth for s in steps if s.events or s.auth), [])
    rows = det.features(fb.take(np.array([0])) if len(fb) else fb, events[:1])
    scores = det.score(rows)
    assert scores.shape == (len(det.entities(rows)),) and np.isfinite(scores).all()
    if _packet_level(det):
        packets = _packet_rows(det, name)
        det.learn(packets.take(np.arange(len(packets) // 2)))
        empty = packets.take(none)
        assert det.score(empty).shape == (0,) and det.explain(empty, none) == []
        with CaptureReader(_paths[name]) as reader:
            b = next(iter(reader))
            det.observe_packets(PacketBatch(b.buf, b.cols[:0], b.addr[:0], 0, b.path))
        assert det.poll(None) == [] and det.flush() == []
        one = packets.take(np.array([len(packets) - 1]))
        scores = det.score(one)
        assert scores.shape == (len(det.entities(one)),) == (1,) and np.isfinite(scores).all()
        assert len(det.explain(one, np.array([0]))) == 1


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_persistence_round_trip(name: str, labelled: Labelled) -> None:
    steps, _ = labelled
    (det,) = build_detectors(_config(name), [name])
    rows = _rows(det, steps)
    for r in rows[: len(rows) // 2]:
        det.learn(r)
    if _packet_level(det):
        packets = _packet_rows(det, name)
        det.learn(packets.take(np.arange(len(packets) // 2)))
        rows = [packets]
    state = json.loads(json.dumps(det.state()))  # must be plain JSON: no pickle anywhere
    restored = type(det).from_state(state)  # type: ignore[attr-defined]
    for r in rows:
        np.testing.assert_array_equal(det.score(r), restored.score(r))


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_deterministic_and_detects(name: str, labelled: Labelled) -> None:
    steps, attackers = labelled
    runs = []
    for _ in range(2):
        (det,) = build_detectors(_config(name), [name])
        if _packet_level(det):  # the pipeline hands it every packet batch
            runs.append(Pipeline(_config(name), detectors=[det]).run([str(_paths[name])]).alerts)
        else:
            runs.append(replay(det, steps))
    assert runs[0] == runs[1]
    assert runs[0], "the labelled set contains attacks: expected alerts"
    assert {a.entity for a in runs[0]} <= attackers, "alerts on benign entities"
    ids = [a.alert_id for a in runs[0]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_ranks_attacks_above_benign(name: str, labelled: Labelled) -> None:
    """ROC-AUC over entity-level maximum scores: attackers vs benign entities."""
    steps, attackers = labelled
    (det,) = build_detectors(_config(name), [name])
    best: dict[str, float] = {}
    scored = _rows(det, steps)
    if _packet_level(det):  # learn the first half of the packets, score the second
        packets = _packet_rows(det, name)
        half = len(packets) // 2
        det.learn(packets.take(np.arange(half)))
        scored = [packets.take(np.arange(half, len(packets)))]
    for rows in scored:
        scores = det.score(rows)
        for ent, s in zip(det.entities(rows), scores.tolist(), strict=True):
            best[ent] = max(best.get(ent, 0.0), s)
    pos = [s for e, s in best.items() if e in attackers]
    neg = [s for e, s in best.items() if e not in attackers]
    assert pos and len(neg) >= 5, (len(pos), len(neg))
    auc = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auc > 0.9, auc
