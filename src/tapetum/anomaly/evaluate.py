"""Benign-only evaluation of every registered anomaly model on a labelled feature table.

Each model learns from the benign rows of TRAIN only (its threshold is calibrated on a held-out
part of them), then scores all of TEST. Reported per model: ROC-AUC, PR-AUC (average
precision), recall at 1% FPR (threshold read off TEST's benign scores, the ROC point), and,
operationally, recall and FPR at the threshold calibrated on TRAIN; overall and for each label
value of TEST (that class against TEST's benign rows); rows/s for training and scoring (wall
time of one call each, after a one-row warm-up call that compiles the numba kernels).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tapetum.anomaly import ANOMALY_MODELS
from tapetum.anomaly.metrics import average_precision, recall_at_fpr, roc_auc
from tapetum.anomaly.table import FeatureTable

Progress = Callable[[str, str], None]


def _metrics(
    neg: np.ndarray, pos: np.ndarray, thr_neg: np.ndarray, thr_pos: np.ndarray
) -> dict[str, float]:
    return {
        "roc_auc": roc_auc(neg, pos),
        "pr_auc": average_precision(neg, pos),
        "recall_at_1pct_fpr": recall_at_fpr(neg, pos, 0.01),
        "recall_at_threshold": float(np.mean(thr_pos)) if thr_pos.size else float("nan"),
        "fpr_at_threshold": float(np.mean(thr_neg)) if thr_neg.size else float("nan"),
    }


def evaluate(
    train: FeatureTable,
    test: FeatureTable,
    benign_label: str = "BENIGN",
    *,
    models: Sequence[str] | None = None,
    seed: int = 0,
    target_fpr: float = 0.01,
    progress: Progress | None = None,
) -> dict[str, Any]:
    benign = np.array([lab == benign_label for lab in train.labels], dtype=bool)
    if not benign.any():
        raise ValueError(f"no rows labelled {benign_label!r} in the training data")
    xb = train.x[benign]
    labels = np.array(test.labels, dtype=object)
    test_benign = labels == benign_label
    classes = sorted({str(v) for v in labels.tolist()} - {benign_label})
    out: dict[str, Any] = {
        "train_rows": len(train),
        "train_benign_rows": int(benign.sum()),
        "test_rows": len(test),
        "test_benign_rows": int(test_benign.sum()),
        "features": list(train.names),
        "excluded_columns": dict(train.excluded),
        "warnings": list(train.warnings) + list(test.warnings),
        "benign_label": benign_label,
        "seed": seed,
        "target_fpr": target_fpr,
        "models": {},
    }
    for name in models or list(ANOMALY_MODELS):
        if progress is not None:
            progress(name, "train")
        model = ANOMALY_MODELS[name](seed=seed, target_fpr=target_fpr)
        ANOMALY_MODELS[name](seed=seed).fit(xb[:2], train.names).score(xb[:1])  # compile
        t0 = time.perf_counter()
        model.fit(xb, train.names)
        t_train = time.perf_counter() - t0
        if progress is not None:
            progress(name, "score")
        t0 = time.perf_counter()
        raw = model.raw(test.x)
        t_score = time.perf_counter() - t0
        alarm = raw >= model.thresholds(raw.shape[0])
        neg, a_neg = raw[test_benign], alarm[test_benign]
        res: dict[str, Any] = {
            "train_s": t_train,
            "train_rows_per_s": xb.shape[0] / t_train if t_train > 0 else float("inf"),
            "score_s": t_score,
            "score_rows_per_s": raw.shape[0] / t_score if t_score > 0 else float("inf"),
            "threshold": float(model.thresholds(1)[0]),
            "overall": _metrics(neg, raw[~test_benign], a_neg, alarm[~test_benign]),
            "per_label": {},
        }
        for c in classes:
            m = labels == c
            res["per_label"][c] = {"rows": int(m.sum()),
                                   **_metrics(neg, raw[m], a_neg, alarm[m])}  # fmt: skip
        aucs = [v["roc_auc"] for v in res["per_label"].values()]
        res["mean_roc_auc"] = float(np.mean(aucs)) if aucs else float("nan")
        out["models"][name] = res
    return out
