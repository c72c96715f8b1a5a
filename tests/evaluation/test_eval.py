"""`tapetum eval`: metrics with known values, labels checking, and end-to-end evaluations of small
labelled captures whose right answers are known (including a right answer of zero)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import msgspec
import numpy as np
import pytest
from click.testing import CliRunner

from tapetum.cli import main
from tapetum.errors import InputError
from tapetum.evaluation.labels import Attack, Labels, load_labels
from tapetum.evaluation.metrics import at_fpr, average_precision, roc_auc
from tapetum.evaluation.runner import evaluate, run_capture
from tapetum.testing import CaptureBuilder, Host, vertical_scan
from tests.conftest import DATA
from tests.detectors.scenarios.scan import office

ATTACKER = "10.9.9.9"
SCAN_AT_S = 120.0


def test_metrics_known_values() -> None:
    y = np.array([1, 1, 0, 0, 0], dtype=bool)
    assert roc_auc(np.array([0.9, 0.8, 0.1, 0.2, 0.3]), y) == 1.0
    assert roc_auc(np.array([0.1, 0.2, 0.9, 0.8, 0.7]), y) == 0.0
    assert roc_auc(np.array([0.5] * 5), y) == 0.5  # ties count half
    assert roc_auc(np.array([0.9, 0.2, 0.5, 0.1, 0.3]), y) == pytest.approx(4 / 6)
    assert roc_auc(np.array([0.1, 0.2]), np.array([True, True])) is None
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True])) == (
        pytest.approx((1 + 2 / 3) / 2)
    )
    neg = np.linspace(0, 1, 200)
    r = at_fpr(np.r_[neg, [2.0, 0.5]], np.r_[np.zeros(200, bool), [True, True]], 0.01)
    assert r is not None and r["recall"] == 0.5 and r["fpr"] <= 0.01


def _capture(tmp: Path, *, attack: bool) -> tuple[Path, float]:
    b = CaptureBuilder(seed=3)
    office(b, random.Random(3), sessions=150, span_s=300.0)
    if attack:
        ports = random.Random(4).sample(range(1, 5000), 150)
        b.add(SCAN_AT_S, vertical_scan, Host(ATTACKER), Host("10.1.0.12"), ports)
    path = tmp / ("attack.pcap" if attack else "benign.pcap")
    b.write(path)
    return path, b.start_ns / 1e9


def _labels(path: Path, t0: float, attacker: str = ATTACKER, attacks: bool = True) -> Labels:
    scan = Attack(
        id="scan-1", category="scan", attacker=[attacker], victims=["10.1.0.12"],
        start_ts=t0 + SCAN_AT_S, end_ts=t0 + SCAN_AT_S + 30, technique="T1046",
    )  # fmt: skip
    return Labels(scenario=path.stem, capture=path.name, attacks=[scan] if attacks else [])


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, float]]:
    tmp = tmp_path_factory.mktemp("eval")
    return {"attack": _capture(tmp, attack=True), "benign": _capture(tmp, attack=False)}


def test_detected_attack_and_quiet_benign(captures: dict[str, tuple[Path, float]]) -> None:
    path, t0 = captures["attack"]
    bpath, bt0 = captures["benign"]
    runs = [
        run_capture(path, _labels(path, t0)),
        run_capture(bpath, _labels(bpath, bt0, attacks=False)),
    ]
    res = evaluate(runs)
    scan = res["categories"]["scan"]
    assert scan["attacks"] == 1 and scan["detected"] == 1 and scan["recall"] == 1.0
    assert scan["precision"] == 1.0
    # The scan ends by ~SCAN_AT_S + a few s; it is reported once its window closes.
    assert 0 <= scan["median_time_to_detect_s"] < 300 + 300 + 60
    assert res["false_incidents"] == 0
    assert res["benign_hours"] > 0
    assert res["detectors"]["scan"]["roc_auc"] == 1.0
    assert runs[1].alerts == []  # the right answer for benign traffic is zero detections


def test_wrong_labels_give_no_credit(captures: dict[str, tuple[Path, float]]) -> None:
    """Labels naming an innocent host: the scan alert is false and the attack is missed."""
    path, t0 = captures["attack"]
    res = evaluate([run_capture(path, _labels(path, t0, attacker="10.1.0.15"))])
    scan = res["categories"]["scan"]
    assert scan["detected"] == 0 and scan["recall"] == 0.0 and scan["precision"] == 0.0
    assert res["false_incidents"] == 1
    # Outside the window: shift the labelled attack a day later.
    late = _labels(path, t0 + 86_400)
    res = evaluate([run_capture(path, late)])
    assert res["categories"]["scan"]["detected"] == 0


def test_labels_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.labels.json"
    bad.write_text('{"scenario": "x"')
    with pytest.raises(InputError, match=r"bad\.labels\.json"):
        load_labels(bad)
    wrong = tmp_path / "wrong.labels.json"
    wrong.write_text(json.dumps({"format": "other/9", "scenario": "x", "capture": "x.pcap"}))
    with pytest.raises(InputError, match="labels format"):
        load_labels(wrong)
    backwards = tmp_path / "back.labels.json"
    attack = {"id": "a", "category": "scan", "attacker": ["1.2.3.4"], "start_ts": 5, "end_ts": 1}
    backwards.write_text(json.dumps({"scenario": "x", "capture": "x.pcap", "attacks": [attack]}))
    with pytest.raises(InputError, match="ends before it starts"):
        load_labels(backwards)


def test_cli_json_report_and_benign_capture(
    captures: dict[str, tuple[Path, float]], tmp_path: Path
) -> None:
    path, t0 = captures["attack"]
    labels = tmp_path / "attack.labels.json"
    labels.write_bytes(msgspec.json.encode(_labels(path, t0)))
    runner = CliRunner()
    res = runner.invoke(main, ["eval", str(path), "--labels", str(labels), "--json",
                               "--report", str(tmp_path / "rep")])  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["categories"]["scan"]["recall"] == 1.0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| scan | 1 | 1 | 1.000 |" in md
    for png in ("roc.png", "scores.png", "timeline.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 5000
    # An unlabelled capture is taken as benign: the scan becomes a false incident.
    res = runner.invoke(main, ["eval", str(path), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "false incident" in res.stdout and ATTACKER in res.stdout


def test_cli_usage_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["eval"]).exit_code == 2
    res = runner.invoke(main, ["eval", "--dataset", "nope", "--data-dir", str(tmp_path)])
    assert res.exit_code != 0 and "unknown dataset" in str(res.exception or res.output)


@pytest.mark.skipif(not (DATA / "slips").is_dir(), reason="public data not present")
def test_slips_dataset_scans() -> None:
    """The Slips captures with scans: all three found on the right hosts."""
    res = CliRunner().invoke(
        main, ["eval", "--dataset", "slips", "--data-dir", str(DATA), "--json"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["categories"]["scan"]["recall"] == 1.0
    assert out["categories"]["scan"]["precision"] == 1.0


@pytest.mark.skipif(not (DATA / "dga").is_dir(), reason="public data not present")
def test_dga_dataset_held_out_split() -> None:
    """The shipped DGA model on the labels its training held out (never trained on)."""
    res = CliRunner().invoke(main, ["eval", "--dataset", "dga", "--data-dir", str(DATA), "--json"])
    assert res.exit_code == 0, res.output
    dga = json.loads(res.stdout)["datasets"]["dga"]
    assert dga["pooled"]["roc_auc"] > 0.98 and dga["pooled"]["benign_fpr"] < 0.01
    assert set(dga["families"]) == {"conficker", "cryptolocker", "goz", "pushdo", "tinba", "zeus"}


@pytest.mark.skipif(not (DATA / "cicids2017").is_dir(), reason="public data not present")
def test_cicids_dataset_benign_only_time_split() -> None:
    res = CliRunner().invoke(
        main, ["eval", "--dataset", "cicids2017", "--data-dir", str(DATA), "--json"]
    )
    assert res.exit_code == 0, res.output
    c = json.loads(res.stdout)["datasets"]["cicids2017"]
    assert c["split"]["train"] == "first 60%" and len(c["split"]["attack_files"]) == 10
    best = max(m["mean_roc_auc"] for m in c["models"].values())
    assert best > 0.95
