"""`tapetum incidents` and `tapetum risk` on a store made by `tapetum analyze --demo`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_analyze import tapetum


@pytest.fixture
def store(tmp_path: Path) -> Path:
    r = tapetum("analyze", "--demo", "--store", "s.duckdb", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return tmp_path / "s.duckdb"


def test_list_show_verdict_and_reanalysis(store: Path) -> None:
    cwd = store.parent
    r = tapetum("incidents", "list", "--store", str(store), "--json", cwd=cwd)
    assert r.returncode == 0, r.stderr
    incs = json.loads(r.stdout)
    assert len(incs) >= 2 and all(i["verdict"] is None for i in incs)
    high = json.loads(tapetum("incidents", "list", "--store", str(store), "--json",
                              "--severity", "medium", cwd=cwd).stdout)  # fmt: skip
    assert {i["incident_id"] for i in high} < {i["incident_id"] for i in incs}
    one = incs[-1]
    r = tapetum("incidents", "show", one["incident_id"], "--store", str(store), cwd=cwd)
    assert r.returncode == 0 and one["incident_id"] in r.stdout

    r = tapetum("incidents", "verdict", one["incident_id"], "fp", "--note", "lab CA",
                "--suppress", "--days", "3", "--store", str(store), cwd=cwd)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "suppression" in r.stdout and (cwd / "s.duckdb.feedback.json").exists()
    shown = json.loads(tapetum("incidents", "show", one["incident_id"], "--store", str(store),
                               "--json", cwd=cwd).stdout)  # fmt: skip
    assert shown["verdicts"][0]["verdict"] == "fp" and shown["verdicts"][0]["note"] == "lab CA"

    r = tapetum("analyze", "--demo", "--store", "s.duckdb", "--no-progress", "--json", cwd=cwd)
    again = json.loads(r.stdout)
    assert one["entity"] not in {i["src_ip"] for i in again["incidents"]}
    assert sum(again["suppressed_alerts"].values()) >= 1


def test_errors(store: Path) -> None:
    cwd = store.parent
    r = tapetum("incidents", "verdict", "nope' OR 1=1 --", "fp", "--store", str(store), cwd=cwd)
    assert r.returncode == 4 and "no incident" in r.stderr
    r = tapetum("incidents", "show", "nope", "--store", str(store), cwd=cwd)
    assert r.returncode == 4
    r = tapetum("incidents", "verdict", "x", "maybe", "--store", str(store), cwd=cwd)
    assert r.returncode == 2
    r = tapetum("incidents", "list", "--store", str(cwd / "missing.duckdb"), cwd=cwd)
    assert r.returncode == 4 and "no such store" in r.stderr
    assert not (cwd / "s.duckdb.feedback.json").exists()


def test_risk(store: Path) -> None:
    cwd = store.parent
    incs = json.loads(tapetum("incidents", "list", "--store", str(store), "--json", cwd=cwd).stdout)
    scan = next(i for i in incs if i["stage"] == "discovery")
    r = tapetum("risk", scan["entity"], "--store", str(store), "--json", cwd=cwd)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["score"] > 0 and rep["level"] in ("low", "medium", "high", "critical")
    assert rep["likely_next"][0]["stage"] == "lateral-movement"
    r = tapetum("risk", scan["entity"], "--store", str(store), cwd=cwd)
    assert r.returncode == 0 and "Likely next" in r.stdout
