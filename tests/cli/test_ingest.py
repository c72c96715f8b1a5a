"""`tapetum analyze FOLDER` and `tapetum ingest zeek|eve [--follow]` as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from tapetum.cli import main
from tests.conftest import data_path
from tests.sources.test_zeek import conn_head, conn_line, data_lines


def test_analyze_a_zeek_folder_runs_the_detectors() -> None:
    d = data_path("slips", "port-scans", "vertical")
    res = CliRunner().invoke(main, ["analyze", str(d), "--no-store", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["flows"] == len(data_lines(d / "conn.log"))
    assert out["files"][0]["format"] == "zeek"
    # nmap's vertical scan of 45.33.32.156 in Zeek's conn.log, caught by Tapetum's scan detector
    sigs = {(a["alert"]["signature"], a["src_ip"]) for a in out["alerts"]}
    assert ("scan.vertical", "192.168.1.9") in sigs


def test_analyze_zeek_notices_and_eve_alerts_become_incidents() -> None:
    d = data_path("slips", "test10-mixed-zeek-dir")
    res = CliRunner().invoke(main, ["analyze", str(d), "--no-store", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    notices = [a for a in out["alerts"] if a["alert"]["signature"].startswith("zeek.")]
    assert len(notices) == 12 and {a["alert"]["entity"] for a in notices} == {"147.32.83.156"}
    assert any(i["incident"]["entity"] == "147.32.83.156" for i in out["incidents"])
    assert "line 21" in " ".join(out["files"][0]["warnings"])


def test_ingest_eve_file(tmp_path: Path) -> None:
    path = data_path("slips", "test6-malicious.suricata.json")
    store = tmp_path / "t.duckdb"
    res = CliRunner().invoke(main, ["ingest", "eve", str(path), "--store", str(store), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    counters = out["files"][0]["counters"]
    assert counters["alerts"] == 745 and counters["flows"] == 3512
    assert counters["skipped.anomaly"] == 3 and counters["skipped.fileinfo"] == 3
    import duckdb

    con = duckdb.connect(str(store), read_only=True)
    n = con.execute("SELECT count(*) FROM alerts WHERE signature LIKE 'ET %'").fetchone()
    assert n is not None and n[0] == 745


def _start(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tapetum", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _wait_for(path: Path, text: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never reached {path}")


def test_follow_zeek_folder_through_rotation_then_sigterm(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    out = tmp_path / "out.jsonl"
    conn = logs / "conn.log"
    with conn.open("w") as fh:
        fh.write(conn_head())
        for k in range(5):
            fh.write(conn_line(k))
    proc = _start(
        [
            "ingest",
            "zeek",
            str(logs),
            "--follow",
            "--no-store",
            "--json",
            "--jsonl",
            str(out),
            "--max-seconds",
            "60",
        ]
    )
    try:
        _wait_for(out, '"10.0.0.5"', 60)  # the 5th flow reached the sink
        with conn.open("a") as fh:  # a line written in two parts: held until complete
            line = conn_line(5)
            fh.write(line[:25])
            fh.flush()
            time.sleep(0.6)
            fh.write(line[25:])
            fh.write(conn_line(6))
        _wait_for(out, '"10.0.0.7"')
        # Zeek's rotation: the current file is renamed away with a timestamp, a new one created;
        # a line appended to the renamed file before the writer let go is read too.
        rotated = logs / "conn.2023-11-14-22-00-00.log"
        conn.rename(rotated)
        with rotated.open("a") as fh:
            fh.write(conn_line(7))
        with conn.open("w") as fh:
            fh.write(conn_head())
            for k in range(8, 12):
                fh.write(conn_line(k))
        _wait_for(out, '"10.0.0.12"')
        _wait_for(out, '"10.0.0.8"')
        with conn.open("a") as fh:
            fh.write(conn_line(12))
            fh.write(conn_line(13)[:20])  # the writer dies mid-line
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr.decode()
    summary = json.loads(stdout)
    assert summary["flows"] == 13  # lines 0..12, each once: nothing re-read, nothing lost
    flows = [json.loads(ln) for ln in out.read_text().splitlines()]
    flows = [f for f in flows if f["event_type"] == "flow"]
    assert sorted(f["src_ip"] for f in flows) == sorted(f"10.0.0.{k + 1}" for k in range(13))
    counters = summary["files"][0]["counters"]
    assert counters["follow.rotations"] >= 1
    assert counters["truncated_records"] == 1  # the cut last line, reported at shutdown
    assert "last line cut short" in stderr.decode()


def test_follow_eve_file_max_seconds(tmp_path: Path) -> None:
    src = data_path("slips", "test6-malicious.suricata.json").read_text().splitlines(True)
    eve = tmp_path / "eve.json"
    eve.write_text("".join(src[:1000]))
    proc = _start(
        ["ingest", "eve", str(eve), "--follow", "--no-store", "--json", "--max-seconds", "6"]
    )
    time.sleep(2.0)
    with eve.open("a") as fh:
        fh.write("".join(src[1000:]))
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()
    summary = json.loads(stdout)
    assert summary["files"][0]["counters"]["records"] == len(src)
    assert summary["files"][0]["counters"]["alerts"] == 745
    assert "alert" in stderr.decode()  # alerts printed as they happened
