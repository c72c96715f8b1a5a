"""`tapetum analyze` runs the playbooks (dry-run by default); `tapetum respond` manages actions."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tapetum.cli import main


def test_analyze_dry_run_then_respond_commands(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    r = CliRunner().invoke(main, ["analyze", "--demo", "--store", str(store), "--no-progress"])
    assert r.exit_code == 0, r.output
    # The bundled demo's scanner (a medium-severity, confident incident) meets the default playbook.
    assert "would have blocked 10.20.0.66 for 1 h (dry-run)" in r.output
    r = CliRunner().invoke(main, ["respond", "list", "--store", str(store), "--json"])
    assert r.exit_code == 0, r.output
    (a,) = json.loads(r.output)
    assert (a["kind"], a["target"], a["state"], a["mode"]) == (
        "block_ip",
        "10.20.0.66",
        "planned",
        "dry-run",
    )
    # A dry-run action cannot be approved or reverted; unknown ids are usage errors.
    for cmd in (["approve", a["action_id"]], ["revert", a["action_id"]], ["revert", "act-x"]):
        r = CliRunner().invoke(main, ["respond", *cmd, "--store", str(store)])
        assert r.exit_code == 2 and "error" in r.output
    r = CliRunner().invoke(main, ["respond", "list", "--audit", "--json", "--store", str(store)])
    assert [e["event"] for e in json.loads(r.output)] == ["dry-run"]
    r = CliRunner().invoke(main, ["respond", "expire", "--store", str(store)])
    assert r.exit_code == 0 and "0 action(s) expired" in r.output
