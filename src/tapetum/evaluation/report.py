"""Evaluation output: a terminal table, and a markdown report with plots (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tapetum.errors import TapetumError
from tapetum.evaluation.metrics import roc_curve
from tapetum.evaluation.runner import NS, CaptureRun, detector_of, matches, scored_entities


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def category_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, c in result["categories"].items():
        rows.append([
            name, str(c["attacks"]), str(c["detected"]), _f(c["recall"]), _f(c["recall_any"]),
            str(c["alerts"]), _f(c["precision"]), _f(c["f1"]),
            _f(c["median_time_to_detect_s"], 1),
        ])  # fmt: skip
    return rows


CATEGORY_HEADER = ["category", "attacks", "detected", "recall", "recall (any alert)", "alerts",
                   "precision", "F1", "median TTD s"]  # fmt: skip
DETECTOR_HEADER = ["detector", "alerts", "true alerts", "precision", "entities scored",
                   "attackers scored", "ROC-AUC", "PR-AUC", "recall @1% FPR", "precision @1% FPR"]  # fmt: skip  # noqa: E501


def detector_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, d in result["detectors"].items():
        at = d["at_1pct_fpr"] or {}
        rows.append([
            name, str(d["alerts"]), str(d["true_alerts"]), _f(d["precision"]),
            str(d["entities_scored"]), str(d["attacker_entities_scored"]), _f(d["roc_auc"]),
            _f(d["average_precision"]), _f(at.get("recall")), _f(at.get("precision")),
        ])  # fmt: skip
    return rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _plots(runs: Sequence[CaptureRun], result: dict[str, Any], out: Path) -> list[str]:
    try:
        import matplotlib
    except ImportError:
        raise TapetumError("plots need matplotlib: pip install 'tapetum[report]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    pooled = {
        det: ([p[0] for p in pairs], [p[1] for p in pairs])
        for det, pairs in scored_entities(runs).items()
    }
    with_both = {d: v for d, v in pooled.items() if any(v[1]) and not all(v[1])}
    if with_both:
        fig, ax = plt.subplots(figsize=(5.5, 5))
        for det, (s, y) in sorted(with_both.items()):
            fpr, tpr = roc_curve(np.array(s), np.array(y))
            auc = result["detectors"].get(det, {}).get("roc_auc")
            ax.step(fpr, tpr, where="post", label=f"{det} (AUC {_f(auc)})")
        ax.plot([0, 1], [0, 1], ls=":", c="grey")
        ax.set_xlabel("false-positive rate (benign entities)")
        ax.set_ylabel("true-positive rate (attacker entities)")
        ax.set_title("ROC per detector, entity-level maximum score")
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        fig.savefig(out / "roc.png", dpi=110)
        plt.close(fig)
        made.append("roc.png")
    if pooled:
        dets = sorted(pooled)
        fig, axes = plt.subplots(len(dets), 1, figsize=(6, 1.6 * len(dets) + 0.6), squeeze=False)
        for ax, det in zip(axes[:, 0], dets, strict=True):
            sv = np.array(pooled[det][0], dtype=np.float64)
            yv = np.array(pooled[det][1], dtype=bool)
            bins = np.linspace(0, max(1.0, float(sv.max()) if len(sv) else 1.0), 41)
            ax.hist(sv[~yv], bins=bins, alpha=0.6, label="benign", color="tab:blue")
            if yv.any():
                ax.hist(sv[yv], bins=bins, alpha=0.6, label="attacker", color="tab:red")
            ax.set_yscale("log")
            ax.set_ylabel(det, fontsize=8)
            ax.legend(fontsize=7)
        axes[-1, 0].set_xlabel("score")
        fig.suptitle("Score distributions (entity-level maximum)")
        fig.tight_layout()
        fig.savefig(out / "scores.png", dpi=110)
        plt.close(fig)
        made.append("scores.png")
    timeline = [r for r in runs if r.first_ns is not None and (r.labels.attacks or r.alerts)]
    if timeline:
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(timeline) + 1.2))
        for row, r in enumerate(timeline):
            t0 = r.first_ns or 0
            for a in r.labels.attacks:
                lo = max(a.start_ts * NS, t0)
                hi = min(a.end_ts * NS, r.last_ns or lo)
                ax.barh(row, (hi - lo) / NS, left=(lo - t0) / NS, height=0.5, color="tab:orange",
                        alpha=0.4)  # fmt: skip
            for al in r.alerts:
                t = (r.emitted_ns.get(al.alert_id, al.ts_ns) - t0) / NS
                hit = any(matches(al, a, r, 600.0) for a in r.labels.attacks)
                ax.plot(t, row, "o" if hit else "x", color="tab:green" if hit else "tab:red", ms=5)
        ax.set_yticks(range(len(timeline)), [r.name[:40] for r in timeline], fontsize=7)
        ax.set_xlabel("seconds from capture start (bar: attack; o: true alert; x: false alert)")
        ax.set_title("Detection timeline")
        fig.tight_layout()
        fig.savefig(out / "timeline.png", dpi=110)
        plt.close(fig)
        made.append("timeline.png")
    return made


def write_report(
    runs: Sequence[CaptureRun], result: dict[str, Any], out: Path, title: str, preamble: str = ""
) -> Path:
    """DIR/report.md with tables and plots; returns the markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(runs, result, out)
    lines = [f"# {title}", ""]
    if preamble:
        lines += [preamble, ""]
    lines += [
        f"Captures: {len(result['captures'])}; benign hours: {result['benign_hours']:.3f}; "
        f"false incidents: {result['false_incidents']} "
        f"({_f(result['false_incidents_per_benign_hour'], 2)} per benign hour); "
        f"match tolerance after an attack: {result['tolerance_s']:.0f} s.",
        "",
        "## Per category",
        "",
        _md_table(CATEGORY_HEADER, category_rows(result)),
        "",
        "## Per detector",
        "",
        "ROC-AUC and the 1%-FPR figures rank entities by the highest score a detector gave any "
        "row about them (attackers vs every other entity it scored).",
        "",
        _md_table(DETECTOR_HEADER, detector_rows(result)),
        "",
    ]
    for p in plots:
        lines += [f"![{p}]({p})", ""]
    lines += ["## Per capture", ""]
    rows = []
    for c in result["captures"]:
        found = (
            "; ".join(
                f"{a['id']}: {'detected' if a['detected'] else 'missed'}"
                + (
                    f" in {a['time_to_detect_s']:.1f} s"
                    if a["time_to_detect_s"] is not None
                    else ""
                )
                for a in c["attacks"]
            )
            or "benign"
        )
        sigs = ", ".join(f"{k} ×{v}" for k, v in c["alerts_by_signature"].items()) or "none"
        false = ", ".join(f"{i['entity']}" for i in c["false_incidents"]) or "none"
        rows.append([c["name"], str(c["packets"]), found, sigs, false])
    lines += [_md_table(["capture", "packets", "attacks", "alerts", "false incidents on"], rows)]
    md = out / "report.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return md


__all__ = ["category_rows", "detector_of", "detector_rows", "write_report"]
