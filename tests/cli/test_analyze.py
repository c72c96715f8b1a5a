"""End-to-end: `tapetum analyze` and `tapetum sql` through the real console entry point."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from tests.conftest import SCHEMA


def tapetum(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tapetum", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture
def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))


def test_analyze_writes_store_jsonl_and_summary(
    tmp_path: Path, wikipedia_pcap: Path, ssh_pcap: Path, validator: jsonschema.Draft202012Validator
) -> None:
    store = tmp_path / "t.duckdb"
    out = tmp_path / "events.jsonl"
    r = tapetum(
        "analyze", str(wikipedia_pcap), str(ssh_pcap), "--store", str(store), "--jsonl", str(out),
        "--json", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    # Zeek's conn.logs list 34 + 25 connections for these two captures.
    assert summary["flows"] == 59
    assert summary["packets"] == sum(f["packets"] for f in summary["files"])
    assert summary["services"]["ssh"] == 22
    assert {d["name"] for d in summary["dns_names"]} >= {"upload.wikimedia.org"}
    events = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = {e["event_type"] for e in events}
    assert {"flow", "dns", "http", "ssh"} <= kinds
    for e in events:
        validator.validate(e)
    assert sum(e["event_type"] == "flow" for e in events) == 59

    r = tapetum("sql", "--store", str(store), "--format", "json",
                "SELECT count(*) AS n FROM flows", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [{"n": 59}]
    r = tapetum("sql", "--store", str(store), "--format", "csv",
                "SELECT client_software, server_software FROM ssh ORDER BY ts LIMIT 3",
                cwd=tmp_path)  # fmt: skip
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == ["client_software", "server_software"]
    assert len(rows) == 4 and all(row[0].startswith("OpenSSH") for row in rows[1:])


def test_rerun_replaces_run_instead_of_duplicating(tmp_path: Path, ssh_pcap: Path) -> None:
    store = tmp_path / "t.duckdb"
    for _ in range(2):
        r = tapetum("analyze", str(ssh_pcap), "--store", str(store), "--no-progress", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    r = tapetum("sql", "--store", str(store), "--format", "json",
                "SELECT (SELECT count(*) FROM runs) AS runs, count(*) AS flows FROM flows",
                cwd=tmp_path)  # fmt: skip
    assert json.loads(r.stdout) == [{"runs": 1, "flows": 25}]


def test_same_capture_gives_identical_output(tmp_path: Path, wikipedia_pcap: Path) -> None:
    outs = []
    for k in range(2):
        out = tmp_path / f"run{k}.jsonl"
        r = tapetum("analyze", str(wikipedia_pcap), "--no-store", "--jsonl", str(out), cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert len(outs[0]) > 10_000


def test_unreadable_inputs_exit_codes(tmp_path: Path, ssh_pcap: Path) -> None:
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture file at all")
    r = tapetum("analyze", str(junk), "--no-store", cwd=tmp_path)
    assert r.returncode == 3
    assert "junk.pcap at byte 0" in r.stderr and "Traceback" not in r.stderr
    # One bad file among good ones: the good ones are analysed, exit code 1.
    r = tapetum("analyze", str(junk), str(ssh_pcap), "--no-store", "--json", cwd=tmp_path)
    assert r.returncode == 1
    assert json.loads(r.stdout)["flows"] == 25
    missing = tmp_path / "missing.pcap"
    r = tapetum("analyze", str(missing), "--no-store", cwd=tmp_path)
    assert r.returncode == 3 and "missing.pcap" in r.stderr and "Traceback" not in r.stderr


def test_bad_config_and_sql(tmp_path: Path, ssh_pcap: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[meter]\ntcp_idle_seconds = 5\n")
    r = tapetum("analyze", str(ssh_pcap), "--config", str(cfg), "--no-store", cwd=tmp_path)
    assert r.returncode == 5
    assert "tcp_idle_seconds" in r.stderr and "Traceback" not in r.stderr
    r = tapetum("sql", "--store", str(tmp_path / "none.duckdb"), "SELECT 1", cwd=tmp_path)
    assert r.returncode == 4 and "no such store" in r.stderr
    store = tmp_path / "t.duckdb"
    assert tapetum("analyze", str(ssh_pcap), "--store", str(store), cwd=tmp_path).returncode == 0
    r = tapetum("sql", "--store", str(store), "SELECT nope FROM flows", cwd=tmp_path)
    assert r.returncode == 4 and "nope" in r.stderr and "Traceback" not in r.stderr


def test_config_changes_flow_expiry(tmp_path: Path, ssh_pcap: Path) -> None:
    """A 1 ms idle timeout splits every connection: the config really reaches the meter."""
    cfg = tmp_path / "short.toml"
    cfg.write_text("[meter]\ntcp_idle_s = 0.001\nudp_idle_s = 0.001\n")
    r = tapetum("analyze", str(ssh_pcap), "--config", str(cfg), "--no-store", "--json",
                cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["flows"] > 100
