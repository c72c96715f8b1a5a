"""Verdicts, suppressions and judged-normal feedback, on real captures and a real DuckDB store."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from tapetum.alerts.feedback import (
    Accepted,
    Feedback,
    FeedbackFile,
    Suppression,
    Suppressor,
    active_suppressions,
    feedback_path,
    list_incidents,
    list_verdicts,
    record_verdict,
)
from tapetum.cli import demo_capture
from tapetum.config import Config
from tapetum.errors import NotFound, StoreError
from tapetum.pipeline import Pipeline, run_id_for
from tapetum.records import Alert
from tapetum.sinks.duckdb import DuckDBSink

NOW = 1_800_000_000 * 10**9


def _store(tmp_path: Path) -> Path:
    store = tmp_path / "s.duckdb"
    paths = [str(demo_capture())]
    sink = DuckDBSink(store, run_id_for(paths, Config()))
    sink.begin_run(None, paths, "test")
    summary = Pipeline(Config(), [sink]).run(paths)
    sink.end_run({})
    sink.close()
    assert summary.incidents
    return store


def _alert(entity: str, sig: str, dest: str | None = None) -> Alert:
    return Alert(alert_id=f"{entity}{sig}{dest}", ts_ns=1, signature=sig, signature_id=1,
                 category="scan", severity=3, score=0.9, explanation="x", entity=entity,
                 dest_ip=dest)  # fmt: skip


def test_suppression_scope_and_expiry() -> None:
    s = Suppression(suppression_id="s1", entity="10.0.0.5", signature="beacon.", dest="1.2.3.4",
                    expires_ns=NOW + 10, created_ns=NOW, reason="")  # fmt: skip
    sup = Suppressor([s], now_ns=NOW)
    kept, dropped = sup.split([
        _alert("10.0.0.5", "beacon.periodic", "1.2.3.4"),
        _alert("10.0.0.5", "beacon.periodic", "9.9.9.9"),  # other destination
        _alert("10.0.0.5", "scan.vertical", "1.2.3.4"),  # other detector
        _alert("10.0.0.6", "beacon.periodic", "1.2.3.4"),  # other entity
    ])  # fmt: skip
    assert [a.signature for a in dropped] == ["beacon.periodic"]
    assert len(kept) == 3 and sup.counts == {"s1": 1}
    assert len(Suppressor([s], now_ns=NOW + 10)) == 0  # expired


def test_verdict_errors_change_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(NotFound):
        record_verdict(store, "no-such-incident", "fp")
    inc = list_incidents(store)[0]["incident_id"]
    with pytest.raises(ValueError):
        record_verdict(store, inc, "maybe")
    with pytest.raises(ValueError):
        record_verdict(store, inc, "tp", suppress=True)
    assert list_verdicts(store) == []
    assert not feedback_path(store).exists()
    with pytest.raises(StoreError):
        record_verdict(tmp_path / "missing.duckdb", inc, "fp")


def test_fp_verdict_suppresses_and_feeds_back_on_reanalysis(tmp_path: Path) -> None:
    store = _store(tmp_path)
    incs = list_incidents(store)
    scan = next(i for i in incs if any(s.startswith("scan.") for s in i["signatures"]))
    tls = next(i for i in incs if i["signatures"] == ["protocol.self_signed_cert"])
    v1 = record_verdict(store, scan["incident_id"], "fp", note="our scanner", now_ns=NOW)
    v2 = record_verdict(store, tls["incident_id"], "benign", suppress={"days": 7}, now_ns=NOW)
    assert v1.suppression_id is None and v2.suppression_id is not None
    (sup,) = active_suppressions(store, NOW)
    assert sup.entity == tls["entity"] and sup.signature == "protocol.self_signed_cert"
    assert sup.expires_ns == NOW + 7 * 86_400 * 10**9
    assert active_suppressions(store, NOW + 8 * 86_400 * 10**9) == []
    assert [v.verdict for v in list_verdicts(store)] == ["fp", "benign"]
    verdicts = {i["incident_id"]: i["verdict"] for i in list_incidents(store)}
    assert verdicts[scan["incident_id"]] == "fp"

    data = json.loads(feedback_path(store).read_text())
    scan_acc = [a for a in data["accepted"] if a["detector"] == "scan"]
    assert scan_acc and all(a["entity"] == scan["entity"] for a in scan_acc)

    fb = Feedback.load(feedback_path(store), now_ns=NOW)
    again = Pipeline(Config(), feedback=fb).run([str(demo_capture())])
    before = {i["entity"] for i in incs}
    after = {i.entity for i in again.incidents}
    # The scan's entity is now judged normal (threshold raised), the TLS alert suppressed.
    assert scan["entity"] not in after and tls["entity"] not in after
    assert after == before - {scan["entity"], tls["entity"]}
    assert again.suppressed_alerts == {v2.suppression_id: 1}
    # Expired suppression: the TLS incident is back; the scan feedback still holds.
    late = Feedback.load(feedback_path(store), now_ns=NOW + 8 * 86_400 * 10**9)
    third = Pipeline(Config(), feedback=late).run([str(demo_capture())])
    assert tls["entity"] in {i.entity for i in third.incidents}


def test_damaged_feedback_file(tmp_path: Path) -> None:
    p = tmp_path / "x.feedback.json"
    p.write_text('{"version": 1, "accepted": 3}')
    with pytest.raises(StoreError):
        Feedback.load(p)
    p.write_text("{not json")
    with pytest.raises(StoreError):
        Feedback.load(p)


def _scenario_alerts(
    name: str, tmp: Path, fb: Feedback | None = None
) -> tuple[list[Alert], set[str]]:
    scen = importlib.import_module(f"tests.detectors.scenarios.{name}")
    path, attackers = scen.build(tmp)
    summary = Pipeline(Config(), feedback=fb).run([str(path)])
    return [a for a in summary.alerts if a.signature.startswith(f"{name}.")], attackers


@pytest.mark.parametrize("name", ["scan", "beacon", "exfil"])
def test_accept_feedback_raises_the_entitys_bar(name: str, tmp_path: Path) -> None:
    """Judging a detector's alerts on an entity normal silences exactly those, and only via
    the detector's learnt state (no suppression involved); other entities are untouched."""
    alerts, _ = _scenario_alerts(name, tmp_path)
    assert alerts, f"{name} scenario raised nothing"
    judged = sorted({a.entity for a in alerts})[0]
    acc = [
        Accepted(detector=name, entity=a.entity, signature=a.signature, dest=a.dest_ip,
                 observed=dict(a.observed), incident_id="i", ts_ns=NOW)
        for a in alerts if a.entity == judged
    ]  # fmt: skip
    fb = Feedback(FeedbackFile(accepted=acc), now_ns=NOW)
    again, _ = _scenario_alerts(name, tmp_path, fb)
    assert judged not in {a.entity for a in again}
    others = {a.entity for a in alerts} - {judged}
    assert others <= {a.entity for a in again}
    assert fb.apply([]) == {}


def test_feedback_state_round_trip() -> None:
    from tapetum.detectors.beacon import BeaconDetector
    from tapetum.detectors.exfil import ExfilDetector
    from tapetum.detectors.scan import ScanDetector

    for det in (ScanDetector(), BeaconDetector(), ExfilDetector()):
        ok = det.accept_feedback("10.0.0.5", {"distinct_ports": 50.0, "bytes_out": 5e8},
                                 signature="x", dest="1.2.3.4")  # fmt: skip
        assert ok
        # The same judgement again changes nothing.
        assert not det.accept_feedback("10.0.0.5", {"distinct_ports": 50.0, "bytes_out": 5e8},
                                       signature="x", dest="1.2.3.4")  # fmt: skip
        back = type(det).from_state(json.loads(json.dumps(det.state())))
        assert back.state() == det.state()
