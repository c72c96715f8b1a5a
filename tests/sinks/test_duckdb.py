"""The DuckDB store holds exactly what the JSON lines say, table by table."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tapetum.cli import demo_capture
from tapetum.config import Config
from tapetum.pipeline import Pipeline
from tapetum.sinks.duckdb import DuckDBSink
from tapetum.sinks.jsonl import JsonlSink


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    path = tmp_path_factory.mktemp("store") / "t.duckdb"
    buf = io.BytesIO()
    db = DuckDBSink(path, "run1")
    jl = JsonlSink(buf)
    Pipeline(Config(), [db, jl]).run([str(demo_capture())])
    db.close()
    jl.flush()
    return path, [json.loads(line) for line in buf.getvalue().splitlines()]


TABLE_OF = {"flow": "flows", "dns": "dns", "tls": "tls", "http": "http", "ssh": "ssh",
            "alert": "alerts", "incident": "incidents"}  # fmt: skip


def test_row_counts_match_events(stored: tuple[Path, list[dict[str, Any]]]) -> None:
    path, events = stored
    con = duckdb.connect(str(path), read_only=True)
    for kind, table in TABLE_OF.items():
        n = sum(e["event_type"] == kind for e in events)
        assert n > 0, kind
        rows = con.execute(f"SELECT count(*) FROM {table} WHERE run_id = 'run1'").fetchone()
        assert rows is not None and rows[0] == n, (table, rows, n)


def test_flow_rows_equal_flow_events(stored: tuple[Path, list[dict[str, Any]]]) -> None:
    path, events = stored
    con = duckdb.connect(str(path), read_only=True)
    rows = con.execute(
        "SELECT flow_id, community_id, src_ip, src_port, dest_ip, dest_port, proto,"
        " pkts_toserver, pkts_toclient, bytes_toserver, bytes_toclient, conn_state, history,"
        " len(first_sizes), epoch_us(start) FROM flows"
    ).fetchall()
    by_id = {r[0]: r for r in rows}
    for e in events:
        if e["event_type"] != "flow":
            continue
        r = by_id[e["flow_id"]]
        f = e["flow"]
        assert r[1:7] == (e["community_id"], e["src_ip"], e["src_port"], e["dest_ip"],
                          e["dest_port"], e["proto"])  # fmt: skip
        assert r[7:13] == (f["pkts_toserver"], f["pkts_toclient"], f["bytes_toserver"],
                           f["bytes_toclient"], f["conn_state"], f["history"])  # fmt: skip
        assert r[13] == min(32, f["pkts_toserver"] + f["pkts_toclient"])
    assert len(by_id) == sum(e["event_type"] == "flow" for e in events)


def test_dns_answers_and_alert_json(stored: tuple[Path, list[dict[str, Any]]]) -> None:
    path, events = stored
    con = duckdb.connect(str(path), read_only=True)
    answered = [e for e in events if e["event_type"] == "dns" and e["dns"].get("answers")]
    e = answered[0]
    row = con.execute(
        "SELECT query, answers, ttls FROM dns WHERE flow_id = ? AND id = ?",
        [e["flow_id"], e["dns"]["id"]],
    ).fetchone()
    assert row is not None
    assert row[0] == e["dns"]["rrname"]
    assert row[1] == [a["rdata"] for a in e["dns"]["answers"]]
    assert row[2] == [a["ttl"] for a in e["dns"]["answers"]]
    obs = con.execute(
        "SELECT observed->>'$.distinct_ports' FROM alerts WHERE signature = 'scan.vertical'"
    ).fetchone()
    assert obs is not None and float(obs[0]) >= 1000
