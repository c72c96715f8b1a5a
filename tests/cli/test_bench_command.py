"""`tapetum bench detectors` on a few hundred real CIC-IDS2017 rows, and on bad values."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from click.testing import CliRunner

from tapetum.cli import main
from tests.conftest import data_path


def _sample(src: Path, dst: Path, n: int, seed: int) -> list[list[str]]:
    with open(src, newline="") as fh:
        rows = list(csv.reader(fh))
    body = random.Random(seed).sample(rows[1:], n)
    with open(dst, "w", newline="") as fh:
        csv.writer(fh).writerows([rows[0], *body])
    return [rows[0], *body]


def test_bench_on_real_rows(tmp_path: Path) -> None:
    benign = data_path("cicids2017", "BENIGN_2500.csv")
    _sample(benign, tmp_path / "train.csv", 300, 1)
    tests = tmp_path / "test"
    tests.mkdir()
    _sample(benign, tests / "benign.csv", 150, 2)
    _sample(data_path("cicids2017", "Portscan_2500.csv"), tests / "portscan.csv", 100, 3)
    _sample(data_path("cicids2017", "DDoS_2500.csv"), tests / "ddos.csv", 100, 4)
    res = CliRunner().invoke(main, [
        "bench", "detectors", "--train", str(tmp_path / "train.csv"), "--test", str(tests),
        "--label-column", "Label", "--json", "--no-progress",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["train_benign_rows"] == 300 and out["test_benign_rows"] == 150
    assert "Src IP" in out["excluded_columns"] and "Dst Port" in out["excluded_columns"]
    assert "Flow Duration" in out["features"] and "Timestamp" not in out["features"]
    from tapetum.anomaly import ANOMALY_MODELS

    assert set(out["models"]) == set(ANOMALY_MODELS)
    for m in out["models"].values():
        assert set(m["per_label"]) == {"Portscan", "DDoS"}
        assert m["per_label"]["Portscan"]["rows"] == 100
        assert m["score_rows_per_s"] > 0 and m["train_rows_per_s"] > 0
        for v in [m["overall"], *m["per_label"].values()]:
            assert 0 <= v["roc_auc"] <= 1 and 0 <= v["recall_at_1pct_fpr"] <= 1
    # Port scans are far from benign flows for any reasonable model.
    assert out["models"]["iforest"]["per_label"]["Portscan"]["roc_auc"] > 0.9
    # The human-readable table names every model and class.
    table = CliRunner().invoke(main, [
        "bench", "detectors", "--train", str(tmp_path / "train.csv"), "--test", str(tests),
        "--label-column", "Label", "--model", "iforest", "--no-progress",
    ])  # fmt: skip
    assert table.exit_code == 0 and "Portscan" in table.stdout and "ROC-AUC" in table.stdout


def test_bad_values_are_reported_with_file_and_line(tmp_path: Path) -> None:
    head = ["Flow ID", "Src IP", "Timestamp", "Flow Duration", "Total Fwd Packet", "Proto Name",
            "Label"]  # fmt: skip
    rng = random.Random(0)
    rows = [[f"f{k}", "10.0.0.1", f"2017-07-0{k % 9 + 1}", str(rng.randint(1, 1000)),
             str(rng.randint(1, 9)), "tcp", "BENIGN"] for k in range(60)]  # fmt: skip
    rows[6][3] = "oops"  # line 8 of the file (header is line 1)
    rows[7][4] = "Infinity"
    train = tmp_path / "train.csv"
    with open(train, "w", newline="") as fh:
        csv.writer(fh).writerows([head, *rows])
    test = tmp_path / "test.csv"
    attack = [["x", "10.0.0.9", "2017-07-09", "9999999", "500", "tcp", "Flood"]] * 5
    with open(test, "w", newline="") as fh:
        csv.writer(fh).writerows([head, *rows[10:30], *attack, ["short", "row"]])
    res = CliRunner().invoke(main, [
        "bench", "detectors", "--train", str(train), "--test", str(test),
        "--label-column", "Label", "--json", "--no-progress",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["features"] == ["Flow Duration", "Total Fwd Packet"]
    assert out["excluded_columns"]["Proto Name"] == "not numeric"
    assert f"{train}:8: 'oops'" in res.stderr
    assert f"{test}:27: 2 fields" in res.stderr
    for name, m in out["models"].items():
        # Far beyond every learnt value on both columns; the forest, fitted on 45 rows, only
        # sees such a row as "at the edge" (isolation forests do not extrapolate), hence >= 0.7.
        assert m["per_label"]["Flood"]["roc_auc"] >= (0.7 if name == "iforest" else 1.0), name
    missing = CliRunner().invoke(main, [
        "bench", "detectors", "--train", str(train), "--test", str(test),
        "--label-column", "Nope", "--no-progress",
    ])  # fmt: skip
    assert missing.exit_code == 3 and "no label column" in missing.stderr
