"""The CIC-IDS2017 sample (../shared/data/cicids2017: one CSV per class) as an anomaly-detection
benchmark: benign rows split by time (the first 60% by Timestamp train, the last 40% test), every
attack CSV a test class, every registered anomaly model trained on benign rows only."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path
from typing import Any


def split_by_time(benign: Path, out: Path, train_fraction: float = 0.6) -> tuple[Path, Path]:
    """Write the benign CSV's first `train_fraction` by Timestamp and the rest as two CSVs."""
    with open(benign, newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    ts = header.index("Timestamp")
    body.sort(key=lambda r: r[ts])  # ISO-like "2017-07-03 11:57:41.826651" sorts as text
    k = int(train_fraction * len(body))
    paths = (out / "train" / "BENIGN_first60.csv", out / "test" / "BENIGN_last40.csv")
    for path, part in zip(paths, (body[:k], body[k:]), strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(part)
    return paths


def attack_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.glob("*.csv") if not p.name.startswith(("BENIGN", "data_header"))
    )


def evaluate_cicids(folder: Path) -> dict[str, Any]:
    """Every anomaly model's ROC-AUC, PR-AUC and recall at 1% FPR per attack class."""
    from tapetum.anomaly.evaluate import evaluate
    from tapetum.anomaly.table import read_table

    attacks = attack_files(folder)
    with tempfile.TemporaryDirectory() as tmp:
        train, test_benign = split_by_time(folder / "BENIGN_2500.csv", Path(tmp))
        tr = read_table([train], "Label")
        te = read_table([test_benign, *attacks], "Label", features=tr.names)
    res = evaluate(tr, te, "BENIGN")
    res["split"] = {"benign_file": "BENIGN_2500.csv", "order": "Timestamp",
                    "train": "first 60%", "test": "last 40%",
                    "attack_files": [p.name for p in attacks]}  # fmt: skip
    return res
