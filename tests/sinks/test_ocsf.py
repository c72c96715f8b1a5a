"""OCSF export of the demo capture: every event valid against the schema of its class, and the
values the same as the EVE export of the same run."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tapetum.cli import demo_capture
from tapetum.config import Config
from tapetum.pipeline import Pipeline, Summary
from tapetum.sinks.jsonl import JsonlSink
from tapetum.sinks.ocsf import OcsfSink

SCHEMAS = Path(__file__).resolve().parents[2] / "src" / "tapetum" / "schema"

Run = tuple[Summary, list[dict[str, Any]], list[dict[str, Any]]]


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"ocsf.{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("ocsf") / "ocsf.jsonl"
    eve = io.BytesIO()
    sink = OcsfSink(out)
    summary = Pipeline(Config(), [sink, JsonlSink(eve)]).run([str(demo_capture())])
    sink.close()
    ocsf = [json.loads(line) for line in out.read_text().splitlines()]
    return summary, ocsf, [json.loads(line) for line in eve.getvalue().splitlines()]


def test_every_event_is_valid(run: Run) -> None:
    summary, ocsf, _ = run
    findings = validator("detection_finding")
    activity = validator("network_activity")
    for ev in ocsf:
        v = findings if ev["class_uid"] == 2004 else activity
        errors = list(v.iter_errors(ev))
        assert not errors, (ev, [e.message for e in errors])
    n_find = sum(e["class_uid"] == 2004 for e in ocsf)
    assert n_find == len(summary.alerts) + len(summary.incidents) > 0
    assert sum(e["class_uid"] == 4001 for e in ocsf) == summary.flows > 1000


def test_schema_rejects_what_ocsf_requires(run: Run) -> None:
    """The schemas are not vacuous: dropping a required attribute or a wrong type fails."""
    _, ocsf, _ = run
    finding = next(e for e in ocsf if e["class_uid"] == 2004)
    flow = next(e for e in ocsf if e["class_uid"] == 4001)
    v_find, v_act = validator("detection_finding"), validator("network_activity")
    for path in (("finding_info", "uid"), ("metadata", "product"), ("time",), ("severity_id",)):
        bad = copy.deepcopy(finding)
        target = bad
        for p in path[:-1]:
            target = target[p]
        del target[path[-1]]
        assert not v_find.is_valid(bad), path
    bad = copy.deepcopy(flow)
    bad["src_endpoint"]["port"] = 70000
    assert not v_act.is_valid(bad)
    bad = copy.deepcopy(flow)
    bad["time"] = "2026-03-02"
    assert not v_act.is_valid(bad)
    bad = copy.deepcopy(flow)
    bad["src_endpoint"]["ip"] = "not-an-ip"
    assert not v_act.is_valid(bad)


def test_alerts_map_to_detection_findings(run: Run) -> None:
    summary, ocsf, _ = run
    by_uid = {e["finding_info"]["uid"]: e for e in ocsf if e["class_uid"] == 2004}
    for a in summary.alerts:
        ev = by_uid[a.alert_id]
        assert ev["type_uid"] == 200401
        assert ev["time"] == a.ts_ns // 1_000_000
        assert ev["severity_id"] == {1: 4, 2: 3, 3: 2}[a.severity]
        assert ev["message"] == ev["finding_info"]["desc"] == a.explanation
        assert ev["finding_info"]["analytic"]["name"] == a.signature
        assert ev["finding_info"]["types"] == [a.category]
        assert ev["confidence_score"] == round(a.score * 100)
        techs = [x["technique"]["uid"] for x in ev["finding_info"]["attacks"]]
        assert techs == list(a.mitre_technique_id)
        evidence = ev["evidences"][0]
        assert evidence["data"]["observed"] == a.observed
        assert evidence["data"]["baseline"] == a.baseline
        assert evidence["src_endpoint"]["ip"] == a.src_ip
    scan = by_uid[next(a.alert_id for a in summary.alerts if a.signature == "scan.vertical")]
    assert scan["finding_info"]["attacks"][0]["tactic"] == {"uid": "TA0007", "name": "Discovery"}
    # 198.51.100.0/24 (TEST-NET-2, the demo's "internet") counts as internal: lateral.
    cert = next(a for a in summary.alerts if a.signature == "protocol.expired_cert")
    conn = by_uid[cert.alert_id]["evidences"][0]["connection_info"]
    assert (cert.dest_ip, conn["direction_id"], conn["protocol_num"]) == ("198.51.100.77", 3, 6)


def test_direction_relative_to_internal_networks() -> None:
    from tapetum.sinks.ocsf import direction_id

    assert direction_id("10.0.0.5", "8.8.8.8") == 2
    assert direction_id("8.8.8.8", "10.0.0.5") == 1
    assert direction_id("10.0.0.5", "192.168.1.1") == 3
    assert direction_id("8.8.8.8", "1.1.1.1") == 0
    assert direction_id("8.8.8.8", "1.1.1.1", internal=lambda ip: ip == "8.8.8.8") == 2


def test_incidents_relate_their_alerts(run: Run) -> None:
    summary, ocsf, _ = run
    by_uid = {e["finding_info"]["uid"]: e for e in ocsf if e["class_uid"] == 2004}
    for inc in summary.incidents:
        ev = by_uid[inc.incident_id]
        related = [r["uid"] for r in ev["finding_info"]["related_events"]]
        assert related == list(inc.alert_ids)
        assert all(uid in by_uid for uid in related)
        assert ev["count"] == inc.alert_count
        assert ev["start_time"] == inc.first_ts_ns // 1_000_000
        assert ev["finding_info"]["title"] == inc.title


def test_flows_match_the_eve_export(run: Run) -> None:
    _, ocsf, eve = run
    flows = {e["flow_id"]: e for e in eve if e["event_type"] == "flow"}
    acts = [e for e in ocsf if e["class_uid"] == 4001]
    assert len(acts) == len(flows)
    for ev in acts:
        f = flows[int(ev["metadata"]["uid"])]
        t = ev["traffic"]
        assert (t["bytes_out"], t["bytes_in"]) == (
            f["flow"]["bytes_toserver"],
            f["flow"]["bytes_toclient"],
        )
        assert (t["packets_out"], t["packets_in"]) == (
            f["flow"]["pkts_toserver"],
            f["flow"]["pkts_toclient"],
        )
        assert ev["src_endpoint"] == {"ip": f["src_ip"], "port": f["src_port"]}
        assert ev["dst_endpoint"] == {"ip": f["dest_ip"], "port": f["dest_port"]}
        assert ev["connection_info"]["protocol_name"] == f["proto"].lower()
        assert ev["connection_info"]["uid"] == f["community_id"]
        assert ev.get("app_name") == f["flow"].get("service")
    assert {e["connection_info"]["direction"] for e in acts} == {"Lateral"}


def test_cli_export(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tapetum.cli import main

    out = tmp_path / "o.jsonl"
    res = CliRunner().invoke(
        main, ["analyze", "--demo", "--no-store", "--no-progress", "--export", f"ocsf:{out}"]
    )
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert {e["class_uid"] for e in lines} == {2004, 4001}
    bad = CliRunner().invoke(main, ["analyze", "--demo", "--no-store", "--export", "nope:x"])
    assert bad.exit_code == 5 and "KIND:TARGET" in bad.output
