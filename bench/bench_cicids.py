"""Benign-only anomaly detection on the CIC-IDS2017 sample (../shared/data/cicids2017).

One command:  python bench/bench_cicids.py [--data DIR] [--out docs/evaluation/anomaly-cicids.json]

Split by time: BENIGN_2500.csv sorted by Timestamp, the first 60% is TRAIN, the last 40% is the
benign part of TEST; every other CSV of the directory (one attack class each) is TEST positives.
Then `tapetum bench detectors` runs on the two halves (written to a temporary directory), and
the tree model's batch scoring speed is measured on 1,000,000 rows (TEST rows repeated).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

from tapetum.evaluation.cicids import attack_files, split_by_time

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cicids2017"


def throughput(train: Path, test: list[Path], rows: int = 1_000_000) -> dict[str, float]:
    from tapetum.anomaly import ANOMALY_MODELS
    from tapetum.anomaly.table import read_table

    tr = read_table([train], "Label")
    te = read_table(test, "Label", features=tr.names)
    x = np.resize(te.x, (rows, te.x.shape[1]))  # TEST rows repeated to a million
    model = ANOMALY_MODELS["iforest"]().fit(tr.x, tr.names)
    model.raw(x[:10])  # compile once
    best, cpu = float("inf"), float("inf")
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        model.raw(x)
        best = min(best, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    # The machine may be shared: CPU seconds (all threads) tell the cost, wall time the speed.
    return {"rows": rows, "best_of_3_s": best, "rows_per_s": rows / best,
            "cpu_s": cpu, "rows_per_cpu_s": rows / cpu, "threads": numba.get_num_threads(),
            "load_average_1min": os.getloadavg()[0]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=ROOT / "docs/evaluation/anomaly-cicids.json")
    args = ap.parse_args()
    attacks = attack_files(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        train, test_benign = split_by_time(args.data / "BENIGN_2500.csv", Path(tmp))
        tests = [a for p in [test_benign, *attacks] for a in ("--test", str(p))]
        cmd = [sys.executable, "-m", "tapetum", "bench", "detectors", "--train", str(train),
               *tests, "--label-column", "Label", "--benign-label", "BENIGN", "--json",
               "--no-progress"]  # fmt: skip
        print(" ".join(cmd[1:]).replace(tmp, "$SPLIT"), file=sys.stderr)
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        res["tree_scoring"] = throughput(train, [test_benign, *attacks])
        res["split"] = {"benign_file": "BENIGN_2500.csv", "order": "Timestamp",
                        "train": "first 60%", "test": "last 40%",
                        "attack_files": [p.name for p in attacks]}  # fmt: skip
    for key in ("train_files", "test_files"):
        res[key] = [Path(p).name for p in res[key]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    for name, m in res["models"].items():
        per = "  ".join(f"{c}={v['roc_auc']:.3f}" for c, v in m["per_label"].items())
        print(f"{name:12s} mean ROC-AUC {m['mean_roc_auc']:.3f}  {per}")
    ts = res["tree_scoring"]
    print(f"iforest scoring: {ts['rows_per_s']:,.0f} rows/s wall, "
          f"{ts['rows_per_cpu_s']:,.0f} rows per CPU second "
          f"({ts['threads']} threads, load {ts['load_average_1min']:.1f})")  # fmt: skip


if __name__ == "__main__":
    main()
