#!/usr/bin/env python3
"""Evaluate the DGA model (never on training rows).

    python bench/eval_dga.py [--json] [--no-lofo] [--data DIR]

(a) Split by domain: the shipped model (src/tapetum/models/dga) on the 20% of labels of every list
    that `scripts/train_dga.py` holds out (seeded label-level hash split; the model never saw
    them): ROC-AUC per family against the held-out benign labels and pooled, precision/recall at
    the shipped threshold, false-positive rate on held-out benign, per benign list.
(b) Leave one family out: for each family, a model is trained exactly as the shipped one but
    without that family, and tested on all of that family's labels against the held-out benign.
Also: scoring speed (names/s, one process) for the model alone and with name preparation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import train_dga as T  # noqa: E402

from tapetum.evaluation.dga import roc_auc, split_eval  # noqa: E402
from tapetum.features.dga import DgaModel, load_model, prepare  # noqa: E402


def lofo(data: dict[str, list[str]], seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    bl = [lb for b in T.BENIGN for lb in data[b] if T.is_held_out(lb, seed)]

    def train_rows(lb: str) -> bool:
        return not T.is_held_out(lb, seed) and not T.is_calibration(lb, seed)

    calib_b = [lb for b in T.BENIGN for lb in data[b] if T.is_calibration(lb, seed)]
    for held in T.FAMILIES:
        others = tuple(f for f in T.FAMILIES if f != held)
        labels, y, weight, benign = T.training_set(data, others, train_rows, seed)
        model = T.fit(labels, y, weight, benign, seed=seed)
        calib_m = [lb for f in others for lb in data[f] if T.is_calibration(lb, seed)]
        T.calibrate(model, calib_b, calib_m)
        test = data[held]  # the whole family: none of it was trained on
        s = model.score_labels(test)
        sb = model.score_labels(bl)
        out[held] = {
            "test_labels": len(test),
            "roc_auc": round(roc_auc(s, sb), 4),
            "recall": round(float((s >= model.threshold).mean()), 4),
            "benign_fpr": round(float((sb >= model.threshold).mean()), 4),
            "threshold": round(model.threshold, 4),
        }
        print(f"lofo {held}: {out[held]}", file=sys.stderr)
    return out


def speed(model: DgaModel, names: list[str]) -> dict[str, float]:
    labels = [prepare(n).label for n in names]
    t = time.perf_counter()
    model.score_labels(labels)
    model_s = time.perf_counter() - t
    prepare.cache_clear()
    t = time.perf_counter()
    labels = [prepare(n).label for n in names]
    model.score_labels(labels)
    full_s = time.perf_counter() - t
    return {
        "names": len(names),
        "model_names_per_s": round(len(names) / model_s),
        "prepare_and_model_names_per_s": round(len(names) / full_s),
    }


def markdown(r: dict[str, Any]) -> str:
    a = r["split"]
    lines = [
        f"Threshold {a['threshold']:.4f}. Held-out benign labels: "
        + ", ".join(f"{k} {v:,}" for k, v in a["benign_test_labels"].items()),
        "",
        "| family | test labels | ROC-AUC | AUC vs top | AUC vs random | recall "
        "| precision (balanced) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for f, v in a["families"].items():
        vs = list(v["roc_auc_vs"].values())
        lines.append(
            f"| {f} | {v['test_labels']:,} | {v['roc_auc']:.4f} | {vs[0]:.4f} | {vs[1]:.4f} "
            f"| {v['recall']:.3f} | {v['precision_balanced']:.3f} |"
        )
    p = a["pooled"]
    lines += [
        f"| **pooled** | {p['dga_test_labels']:,} | **{p['roc_auc']:.4f}** | | | "
        f"{p['recall']:.3f} | {p['precision']:.3f} (as pooled) |",
        "",
        f"Macro-average AUC {p['macro_roc_auc']:.4f}; benign false-positive rate "
        f"{p['benign_fpr']:.4f} ("
        + ", ".join(f"{k} {v:.4f}" for k, v in p["benign_fpr_by_list"].items())
        + ")",
    ]
    if r.get("lofo"):
        lines += ["", "| held-out family | labels | ROC-AUC | recall | benign FPR |",
                  "|---|---:|---:|---:|---:|"]  # fmt: skip
        for f, v in r["lofo"].items():
            lines.append(
                f"| {f} | {v['test_labels']:,} | {v['roc_auc']:.4f} | {v['recall']:.3f} "
                f"| {v['benign_fpr']:.4f} |"
            )
    s = r["speed"]
    lines += ["", f"Speed: {s['model_names_per_s']:,} names/s (model), "
              f"{s['prepare_and_model_names_per_s']:,} names/s with name preparation "
              f"({s['names']:,} names, one process)."]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=T.DATA)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--no-lofo", action="store_true", help="skip leave-one-family-out (slow)")
    args = ap.parse_args(argv)
    model = load_model()
    seed = int(model.meta["training"]["seed"])
    data = T.load(args.data)
    names = [ln.strip() for f in (*T.FAMILIES, *T.BENIGN)
             for ln in (args.data / f"{f}.txt").read_text().splitlines()[:20_000]]  # fmt: skip
    result: dict[str, Any] = {
        "command": "python bench/eval_dga.py" + (" --no-lofo" if args.no_lofo else ""),
        "data": {f: str(args.data / f"{f}.txt") for f in (*T.FAMILIES, *T.BENIGN)},
        "model": {k: model.meta[k] for k in ("version", "feature_schema_hash", "model")},
        "split": split_eval(model, data, seed),
        "lofo": None if args.no_lofo else lofo(data, seed),
        "speed": speed(model, names),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
