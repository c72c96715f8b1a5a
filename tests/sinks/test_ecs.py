"""ECS export of the demo capture: ECS field types and values equal to the EVE export."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pytest

from tapetum.cli import demo_capture
from tapetum.config import Config
from tapetum.pipeline import Pipeline, Summary
from tapetum.sinks.ecs import EcsSink
from tapetum.sinks.jsonl import JsonlSink

Run = tuple[Summary, list[dict[str, Any]], list[dict[str, Any]]]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("ecs") / "ecs.ndjson"
    eve = io.BytesIO()
    sink = EcsSink(out)
    summary = Pipeline(Config(), [sink, JsonlSink(eve)]).run([str(demo_capture())])
    sink.close()
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    return summary, docs, [json.loads(line) for line in eve.getvalue().splitlines()]


def ns_of(ts: str) -> int:
    """ECS timestamp (ISO 8601, nanoseconds, Z) back to ns since the epoch."""
    assert ts.endswith("Z")
    whole, frac = ts[:-1].split(".")
    base = dt.datetime.fromisoformat(whole).replace(tzinfo=dt.UTC)
    return int(base.timestamp()) * 1_000_000_000 + int(frac.ljust(9, "0"))


def test_documents_have_ecs_shape(run: Run) -> None:
    summary, docs, _ = run
    assert len(docs) == summary.flows + len(summary.alerts) + len(summary.incidents)
    for d in docs:
        assert d["ecs"]["version"].startswith("8.")
        assert d["event"]["kind"] in ("alert", "event")
        assert isinstance(d["event"]["category"], list) and "network" in d["event"]["category"]
        assert isinstance(d["event"]["type"], list)
        ns_of(d["@timestamp"])
        for side in ("source", "destination"):
            if side in d:
                assert isinstance(d[side]["ip"], str)
                assert isinstance(d[side].get("port", 0), int)
        if d["event"]["kind"] == "alert":
            assert d["event"]["type"] == ["info"]
            assert d["event"]["severity"] in (21, 47, 73)
            assert isinstance(d["message"], str) and d["message"]


def test_alerts(run: Run) -> None:
    summary, docs, _ = run
    by_id = {d["event"]["id"]: d for d in docs if d["event"]["dataset"] == "tapetum.alert"}
    assert len(by_id) == len(summary.alerts)
    for a in summary.alerts:
        d = by_id[a.alert_id]
        assert ns_of(d["@timestamp"]) == a.ts_ns
        assert d["rule"]["name"] == a.signature and d["rule"]["id"] == str(a.signature_id)
        assert d["rule"]["category"] == a.category
        assert d["threat"]["technique"]["id"] == list(a.mitre_technique_id)
        assert d["threat"]["tactic"]["name"] == list(a.mitre_tactic)
        assert d["message"] == a.explanation
        assert d["source"]["ip"] == a.src_ip
        assert d["tapetum"]["observed"] == a.observed
        assert d["event"]["risk_score"] == round(a.score * 100, 2)
    incs = [d for d in docs if d["event"]["dataset"] == "tapetum.incident"]
    assert sorted(d["tapetum"]["alert_ids"] for d in incs) == sorted(
        list(i.alert_ids) for i in summary.incidents
    )


def test_flows_match_eve(run: Run) -> None:
    _, docs, eve = run
    flows = {e["flow_id"]: e for e in eve if e["event_type"] == "flow"}
    fdocs = [d for d in docs if d["event"]["dataset"] == "tapetum.flow"]
    assert len(fdocs) == len(flows)
    for d in fdocs:
        f = flows[int(d["event"]["id"])]
        assert d["source"]["bytes"] == f["flow"]["bytes_toserver"]
        assert d["destination"]["bytes"] == f["flow"]["bytes_toclient"]
        assert d["network"]["packets"] == f["flow"]["pkts_toserver"] + f["flow"]["pkts_toclient"]
        assert d["network"]["transport"] == f["proto"].lower()
        assert d["network"]["community_id"] == f["community_id"]
        assert d["network"].get("protocol") == f["flow"].get("service")
        assert d["event"]["duration"] == ns_of(d["event"]["end"]) - ns_of(d["event"]["start"])
        assert d["event"]["type"] == ["connection", "end"]


def test_cli_export(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tapetum.cli import main

    out = tmp_path / "e.ndjson"
    res = CliRunner().invoke(
        main, ["analyze", "--demo", "--no-store", "--no-progress", "--export", f"ecs:{out}"]
    )
    assert res.exit_code == 0, res.output
    kinds = {json.loads(x)["event"]["kind"] for x in out.read_text().splitlines()}
    assert kinds == {"alert", "event"}
