"""The DGA lists (../shared/data/dga) as labelled data: the seeded label-level split that
`scripts/train_dga.py` trains on and holds out, and the held-out evaluation of the shipped model
(`tapetum eval --dataset dga`, `bench/eval_dga.py`). Never evaluated on training labels."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from tapetum.features.dga import OK, DgaModel, prepare

FAMILIES = ("conficker", "cryptolocker", "goz", "pushdo", "tinba", "zeus")
BENIGN = ("opendns-top-domains", "opendns-random-domains")
SEED = 7
HELD_OUT = 0.20  # fraction of every list kept for evaluation only
CALIBRATION = 0.10  # fraction of the remaining labels used to pick the threshold


def bucket(label: str, seed: int, salt: str) -> float:
    """A stable pseudo-random number in [0, 1) per label: the split is by label, not by line."""
    h = hashlib.blake2b(f"{seed}|{salt}|{label}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def is_held_out(label: str, seed: int = SEED) -> bool:
    return bucket(label, seed, "eval") < HELD_OUT


def is_calibration(label: str, seed: int = SEED) -> bool:
    return not is_held_out(label, seed) and bucket(label, seed, "calib") < CALIBRATION


def load(data: Path) -> dict[str, list[str]]:
    """List name -> sorted unique labels (registered-domain labels that can be scored)."""
    out: dict[str, list[str]] = {}
    for name in (*FAMILIES, *BENIGN):
        labels = set()
        for line in (data / f"{name}.txt").read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p = prepare(line)
            if p.status == OK:
                labels.add(p.label)
        out[name] = sorted(labels)
    benign = set(out[BENIGN[0]]) | set(out[BENIGN[1]])
    bad = benign & set().union(*(out[f] for f in FAMILIES))
    for name in out:
        out[name] = [lb for lb in out[name] if lb not in bad]
    # A label in both benign lists belongs to the first only.
    top = set(out[BENIGN[0]])
    out[BENIGN[1]] = [lb for lb in out[BENIGN[1]] if lb not in top]
    out["_conflicts"] = sorted(bad)
    return out


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney AUC with ties counted half."""
    s = np.concatenate([pos, neg])
    _, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inv]
    n_pos, n_neg = len(pos), len(neg)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def split_eval(model: DgaModel, data: dict[str, list[str]], seed: int) -> dict[str, Any]:
    thr = model.threshold
    benign = {b: [lb for lb in data[b] if is_held_out(lb, seed)] for b in BENIGN}
    sb_by = {b: model.score_labels(v) for b, v in benign.items()}
    sb = np.concatenate(list(sb_by.values()))
    fams: dict[str, Any] = {}
    all_pos = []
    for f in FAMILIES:
        labels = [lb for lb in data[f] if is_held_out(lb, seed)]
        s = model.score_labels(labels)
        all_pos.append(s)
        tp = int((s >= thr).sum())
        fp = int((sb >= thr).sum())
        fams[f] = {
            "test_labels": len(labels),
            "roc_auc": round(roc_auc(s, sb), 4),
            "roc_auc_vs": {b: round(roc_auc(s, v), 4) for b, v in sb_by.items()},
            "recall": round(tp / max(len(labels), 1), 4),
            # Precision if benign and this family were equally many (the lists are not a mix
            # anyone sees on a network; the balanced figure is comparable across families).
            "precision_balanced": round(
                (tp / len(labels)) / max(tp / len(labels) + fp / len(sb), 1e-12), 4
            ),
        }
    pos = np.concatenate(all_pos)
    tp, fp = int((pos >= thr).sum()), int((sb >= thr).sum())
    return {
        "threshold": thr,
        "benign_test_labels": {b: len(v) for b, v in benign.items()},
        "families": fams,
        "pooled": {
            "dga_test_labels": len(pos),
            "roc_auc": round(roc_auc(pos, sb), 4),
            "macro_roc_auc": round(float(np.mean([v["roc_auc"] for v in fams.values()])), 4),
            "precision": round(tp / max(tp + fp, 1), 4),
            "recall": round(tp / len(pos), 4),
            "benign_fpr": round(fp / len(sb), 4),
            "benign_fpr_by_list": {b: round(float((v >= thr).mean()), 4) for b, v in sb_by.items()},
        },
        "top_benign_false_positives": _top(benign, sb_by, thr),
    }


def _top(benign: dict[str, list[str]], scores: dict[str, np.ndarray], thr: float) -> list[Any]:
    rows = []
    for b in benign:
        for lb, s in zip(benign[b], scores[b].tolist(), strict=True):
            if s >= thr:
                rows.append((float(s), lb, b))
    rows.sort(key=lambda r: (-r[0], r[1]))
    return [{"label": lb, "list": b, "score": round(s, 4)} for s, lb, b in rows[:25]]
