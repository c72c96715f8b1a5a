"""Shared checks every registered detector passes (river's check_estimator idea).

Empty input, a single row, persistence round trip through JSON, determinism, and a ranking
better than chance on a small labelled set (attack rows vs benign rows from synthetic captures).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from tapetum.config import Config
from tapetum.flows.meter import FlowBatch
from tapetum.registry import DETECTORS, build_detectors
from tapetum.testing import (
    CaptureBuilder,
    Host,
    dns_lookup,
    horizontal_scan,
    http_session,
    tcp_failed,
    tls_session,
    vertical_scan,
)
from tests.detectors.helpers import flows_of


def _labelled_flows(tmp_path: Path) -> tuple[list[FlowBatch], set[str]]:
    """Benign office traffic plus scans by 10.9.9.9; returns flows and the attacker set."""
    b = CaptureBuilder(seed=11)
    rng = random.Random(11)
    clients = [Host(f"10.1.0.{k}") for k in range(10, 30)]
    web = [Host(f"192.0.2.{k}") for k in range(1, 40)]
    dns = Host("10.1.0.2")
    for k in range(400):
        c, s = rng.choice(clients), rng.choice(web)
        t = rng.uniform(0, 200)
        kind = k % 3
        if kind == 0:
            b.add(t, http_session, c, s, host=f"site{rng.randint(1, 30)}.example")
        elif kind == 1:
            b.add(t, tls_session, c, s, sni=f"app{rng.randint(1, 30)}.example")
        else:
            b.add(t, dns_lookup, c, dns, f"name{rng.randint(1, 99)}.example")
    # Benign failures too (a dead service, retries), so benign hosts get non-zero scores.
    for _ in range(120):
        c, s = rng.choice(clients), rng.choice(web)
        kind = rng.choice(["unanswered", "refused", "syn-reset"])
        b.add(rng.uniform(0, 200), tcp_failed, c, s, rng.choice([81, 8443, 5222]), kind=kind)
    attacker = Host("10.9.9.9")
    b.add(20.0, vertical_scan, attacker, Host("10.1.0.10"), rng.sample(range(1, 5000), 200))
    targets = [f"198.51.100.{k}" for k in range(1, 80)]
    b.add(
        100.0, horizontal_scan, attacker, targets, 445, live={}, local=False,
        router=Host("10.1.0.1"),
    )  # fmt: skip
    path = tmp_path / "labelled.pcap"
    b.write(path)
    return flows_of(path), {attacker.ip}


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[FlowBatch], set[str]]:
    return _labelled_flows(tmp_path_factory.mktemp("contract"))


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_empty_and_single_row(name: str, labelled: tuple[list[FlowBatch], set[str]]) -> None:
    flows, _ = labelled
    (det,) = build_detectors(Config(), [name])
    empty = det.features(flows[0].take(np.zeros(0, dtype=np.int64)))
    assert det.score(empty).shape == (0,)
    assert det.explain(empty, np.zeros(0, dtype=np.int64)) == []
    det.observe(flows[0].take(np.zeros(0, dtype=np.int64)))
    assert det.flush() == []
    rows = det.features(flows[0].take(np.array([0])))
    scores = det.score(rows)
    assert scores.shape == (len(rows),) and np.isfinite(scores).all()


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_persistence_round_trip(name: str, labelled: tuple[list[FlowBatch], set[str]]) -> None:
    flows, _ = labelled
    (det,) = build_detectors(Config(), [name])
    rows = [det.features(fb) for fb in flows]
    for r in rows[: len(rows) // 2]:
        det.learn(r)
    state = json.loads(json.dumps(det.state()))  # must be plain JSON: no pickle anywhere
    restored = type(det).from_state(state)  # type: ignore[attr-defined]
    for r in rows:
        np.testing.assert_array_equal(det.score(r), restored.score(r))


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_deterministic(name: str, labelled: tuple[list[FlowBatch], set[str]]) -> None:
    flows, _ = labelled
    runs = []
    for _ in range(2):
        (det,) = build_detectors(Config(), [name])
        for fb in flows:
            det.observe(fb)
        runs.append(det.poll(None) + det.flush())
    assert runs[0] == runs[1]
    assert runs[0], "the labelled set contains attacks: expected alerts"


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_ranks_attacks_above_benign(name: str, labelled: tuple[list[FlowBatch], set[str]]) -> None:
    """ROC-AUC over entity-level maximum scores: attackers vs benign hosts."""
    flows, attackers = labelled
    (det,) = build_detectors(Config(), [name])
    best: dict[str, float] = {}
    for fb in flows:
        rows = det.features(fb)
        scores = det.score(rows)
        for ent, s in zip(det.entities(rows), scores.tolist(), strict=True):
            best[ent] = max(best.get(ent, 0.0), s)
    pos = [s for e, s in best.items() if e in attackers]
    neg = [s for e, s in best.items() if e not in attackers]
    assert pos and len(neg) >= 10
    auc = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auc > 0.9, auc
