"""`tapetum dga`: names as arguments, from files and stdin, bad lines, JSON output."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tapetum.cli import main
from tapetum.features.dga import load_model

DGA_NAME = "1jjcgb11mmtru8r7xsa1xqk8zh.biz"  # zeus-like: 26 random letters and digits


def test_scores_names_given_as_arguments() -> None:
    r = CliRunner().invoke(main, ["dga", "--json", "www.bbc.co.uk", DGA_NAME])
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["name"] for x in recs] == ["www.bbc.co.uk", DGA_NAME]
    bbc, dga = recs
    assert bbc["registered_domain"] == "bbc.co.uk" and bbc["label"] == "bbc"
    assert bbc["verdict"] == "benign" and bbc["score"] < 0.1
    assert dga["score"] > bbc["score"]
    assert dga["threshold"] == round(load_model().threshold, 6)


def test_table_output() -> None:
    r = CliRunner().invoke(main, ["dga", "www.google.com", "printer.corp.lan"])
    assert r.exit_code == 0, r.output
    assert "google.com" in r.stdout and "benign" in r.stdout
    assert "not scored" in r.stdout  # a local name has no public suffix


def test_file_with_comments_blank_and_bad_lines(tmp_path: Path) -> None:
    f = tmp_path / "names.txt"
    f.write_text(
        "# resolver log excerpt\n\ngoogle.com\nbad_name!.com\n"
        + "a" * 70 + ".com\nwww.xn--mnchen-3ya.de\nxn--zzzzzzzzz-99999.com\n",
        encoding="utf-8",
    )  # fmt: skip
    r = CliRunner().invoke(main, ["dga", "--file", str(f), "--json"])
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["name"] for x in recs] == ["google.com", "www.xn--mnchen-3ya.de"]
    assert recs[1]["verdict"] == "not_scored" and recs[1]["label"] == "münchen"
    assert f"{f}:4:" in r.stderr and "bad_name!.com" in r.stderr
    assert f"{f}:5:" in r.stderr and "limit 63" in r.stderr
    assert f"{f}:7:" in r.stderr and "punycode" in r.stderr
    assert "Traceback" not in r.output


def test_stdin_and_threshold_override() -> None:
    r = CliRunner().invoke(
        main, ["dga", "--file", "-", "--json", "--threshold", "0"], input="example.org\n"
    )
    assert r.exit_code == 0, r.output
    (rec,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert rec["verdict"] == "dga" and rec["threshold"] == 0.0


def test_no_names_and_missing_file_are_errors(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["dga"])
    assert r.exit_code == 3 and "no names" in r.stderr
    r = CliRunner().invoke(main, ["dga", "--file", str(tmp_path / "missing.txt"), "google.com"])
    assert r.exit_code == 3 and "cannot read" in r.stderr
    assert "google.com" in r.stdout  # the names that could be read are still scored
