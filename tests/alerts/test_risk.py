"""Risk score: decay, verdicts, levels and likely next stages, on a real analysed store."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapetum.alerts.feedback import list_incidents, record_verdict
from tapetum.alerts.risk import TRANSITIONS, level_of, likely_next, risk_report
from tapetum.errors import NotFound
from tests.alerts.test_feedback import _store

H = 3600 * 10**9


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _store(tmp_path_factory.mktemp("risk"))


def test_decay_and_history(store: Path, tmp_path: Path) -> None:
    scan = next(i for i in list_incidents(store) if i["stage"] == "discovery")
    t = scan["last_ts_ns"]
    now = risk_report(store, scan["entity"], now_ns=t)
    day = risk_report(store, scan["entity"], now_ns=t + 24 * H)
    short = risk_report(store, scan["entity"], now_ns=t + 24 * H, half_life_s=12 * 3600.0)
    assert 0 < day.score < now.score and short.score < day.score
    assert now.reasons and scan["incident_id"] in now.reasons[0]
    assert now.history[-1] == (t, now.score)
    assert "discovery" in now.stages and "T1046" in now.techniques
    assert [n.stage for n in now.likely_next][:1] == ["lateral-movement"]
    assert now.level == level_of(now.score)


def test_verdicts_change_the_score(tmp_path: Path) -> None:
    store = _store(tmp_path)
    scan = next(i for i in list_incidents(store) if i["stage"] == "discovery")
    t = scan["last_ts_ns"]
    base = risk_report(store, scan["entity"], now_ns=t).score
    record_verdict(store, scan["incident_id"], "tp", now_ns=t)
    assert risk_report(store, scan["entity"], now_ns=t).score > base
    record_verdict(store, scan["incident_id"], "fp", now_ns=t + 1)
    fp = risk_report(store, scan["entity"], now_ns=t)
    assert fp.score == 0.0 and fp.likely_next == [] and "not counted" in fp.reasons[-1]


def test_unknown_entity_and_empty_store(store: Path, tmp_path: Path) -> None:
    rep = risk_report(store, "203.0.113.250")
    assert rep.score == 0.0 and rep.level == "low" and rep.incidents == 0
    import duckdb

    duckdb.connect(str(tmp_path / "empty.duckdb")).close()
    with pytest.raises(NotFound):
        risk_report(tmp_path / "empty.duckdb", "10.0.0.1")
    with pytest.raises(ValueError):
        risk_report(store, "x", half_life_s=0)


def test_levels_and_transitions() -> None:
    assert [level_of(s) for s in (0, 24.9, 25, 50, 74.9, 75, 100)] == [
        "low", "low", "medium", "high", "high", "critical", "critical"]  # fmt: skip
    nxt = likely_next(["command-and-control"], [])
    assert (nxt[0].stage, nxt[0].technique) == ("exfiltration", "T1041")
    # A stage already reached is not predicted; the furthest stage leads.
    nxt = likely_next(["credential-access", "lateral-movement"], [])
    assert "lateral-movement" not in [n.stage for n in nxt]
    assert nxt[0].why.startswith("after lateral-movement")
    assert all(s in TRANSITIONS for s in ("discovery", "credential-access"))
