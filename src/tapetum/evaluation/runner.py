"""Run captures through the full pipeline and measure detection against labelled attacks.

Each capture is analysed on its own, from a fresh pipeline (nothing learnt on one capture is used
on another, so no row is both trained on and evaluated). Detectors learn only online, on the
capture's earlier rows, as they would live. Besides the alerts, every detector's score of every
row it sees is kept as the entity's maximum, so rankings (ROC-AUC) exist even below thresholds.

Matching: an alert matches an attack when its entity (or source) is one of the attack's
attackers — or, for denial of service, one of its victims — and its time span overlaps the
attack window widened by `tolerance_s` after the end (flows are reported when they end, up to an
idle timeout later). Time to detect is the data time at which the alert came out minus the
attack's start.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tapetum.config import Config
from tapetum.detectors.base import StreamingDetector
from tapetum.evaluation.labels import Attack, Labels
from tapetum.evaluation.metrics import at_fpr, average_precision, roc_auc
from tapetum.flows.meter import FlowBatch
from tapetum.pipeline import Pipeline
from tapetum.records import Alert, AppEvent, Incident
from tapetum.registry import build_detectors

NS = 1_000_000_000


class ScoringTap:
    """Wraps a streaming detector: passes everything through, and keeps each entity's highest
    score over the rows the detector saw."""

    def __init__(self, inner: StreamingDetector, track_time: bool = False) -> None:
        self.inner = inner
        self.name = inner.name
        self.best: dict[str, float] = {}
        self._pending: list[AppEvent] = []
        #: Minutes of data time in which some flow started or ended (when tracking time).
        self.active_minutes: set[int] | None = set() if track_time else None

    def __getattr__(self, attr: str) -> Any:  # the rest of the contract, and observe_arp
        return getattr(self.inner, attr)

    def observe_events(self, events: Sequence[AppEvent]) -> None:
        self._pending.extend(events)
        self.inner.observe_events(events)

    def observe(self, flows: FlowBatch) -> None:
        if self.active_minutes is not None and len(flows):
            for col in ("start_ns", "end_ns"):
                self.active_minutes.update(np.unique(flows.num[col] // (60 * NS)).tolist())
        rows = self.inner.features(flows, self._pending)
        self._pending = []
        scores = self.inner.score(rows)
        best = self.best
        for ent, s in zip(self.inner.entities(rows), scores.tolist(), strict=True):
            if s == s and s > best.get(ent, -np.inf):  # NaN never ranks
                best[ent] = float(s)
        self.inner.observe(flows)

    def poll(self, watermark_ns: int | None) -> list[Alert]:
        return self.inner.poll(watermark_ns)

    def flush(self) -> list[Alert]:
        return self.inner.flush()


@dataclass
class CaptureRun:
    name: str
    path: str
    labels: Labels
    alerts: list[Alert]
    incidents: list[Incident]
    emitted_ns: dict[str, int]
    scores: dict[str, dict[str, float]]
    first_ns: int | None
    last_ns: int | None
    packets: int
    #: Data time with traffic: minutes in which a flow started or ended (a capture stitched
    #: from traces years apart is not years of traffic).
    active_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        if self.first_ns is None or self.last_ns is None:
            return 0.0
        return (self.last_ns - self.first_ns) / NS


def run_capture(
    path: str | Path,
    labels: Labels,
    config: Config | None = None,
    name: str | None = None,
    detectors: Sequence[StreamingDetector] | None = None,
) -> CaptureRun:
    """`detectors`: fresh detectors to run (e.g. restored from a model), else the config's."""
    cfg = config or Config()
    dets = build_detectors(cfg) if detectors is None else detectors
    taps = [ScoringTap(d, track_time=k == 0) for k, d in enumerate(dets)]
    pipe = Pipeline(cfg, detectors=taps)  # type: ignore[arg-type]
    summary = pipe.run([str(path)])
    return CaptureRun(
        name=name or labels.scenario,
        path=str(path),
        labels=labels,
        alerts=list(summary.alerts),
        incidents=list(summary.incidents),
        emitted_ns=dict(pipe.alert_emitted_ns),
        scores={t.name: dict(t.best) for t in taps},
        first_ns=summary.first_ns,
        last_ns=summary.last_ns,
        packets=summary.packets,
        active_s=min(
            len(taps[0].active_minutes or ()) * 60.0,
            (summary.last_ns or 0) / NS - (summary.first_ns or 0) / NS,
        )
        if taps
        else 0.0,
        errors=[f.error for f in summary.files if f.error],
    )


def _window(a: Attack, run: CaptureRun, tolerance_s: float) -> tuple[int, int]:
    start = int(a.start_ts * NS)
    end = int(a.end_ts * NS)
    if run.first_ns is not None:
        start = max(start, run.first_ns)
    if run.last_ns is not None:
        end = min(end, run.last_ns)
    return start - 5 * NS, end + int(tolerance_s * NS)


def _entities(a: Attack) -> set[str]:
    ents = set(a.attacker)
    if a.category == "dos":
        ents |= set(a.victims)
    return ents


def matches(alert: Alert, attack: Attack, run: CaptureRun, tolerance_s: float) -> bool:
    ents = _entities(attack)
    if "*" in ents:
        pass  # a known finding without one address: any entity
    elif alert.entity not in ents and (alert.src_ip is None or alert.src_ip not in ents):
        return False
    lo, hi = _window(attack, run, tolerance_s)
    first = alert.first_ts_ns if alert.first_ts_ns is not None else alert.ts_ns
    last = alert.last_ts_ns if alert.last_ts_ns is not None else alert.ts_ns
    return first <= hi and last >= lo


def detector_of(alert: Alert) -> str:
    return alert.signature.split(".", 1)[0]


#: The attack categories each detector is for (its AUC counts those attackers as positives and
#: leaves attackers of other categories out); "*": every category. Detectors not listed are
#: judged by the categories of their own alerts.
DETECTOR_CATEGORIES: dict[str, set[str]] = {
    "scan": {"scan"},
    "bruteforce": {"brute-force"},
    "beacon": {"c2-beacon"},
    "dga": {"dga"},
    "dnstunnel": {"dns-tunnel"},
    "exfil": {"exfiltration"},
    "lateral": {"lateral-movement"},
    "dos": {"dos"},
    "protocol": {"protocol-anomaly"},
    "intel": {"intel"},
    "anomaly": {"*"},
    "kitsune": {"*"},
}


def scored_entities(runs: Sequence[CaptureRun]) -> dict[str, list[tuple[float, bool]]]:
    """Per detector, (entity-level maximum score, is attacker) over all runs. Attackers of
    categories the detector is not for are left out: a scan detector is not judged on a C2 host."""
    out: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for run in runs:
        for name, best in merged_scores(run).items():
            cats = DETECTOR_CATEGORIES.get(name) or {a.category for a in run.alerts
                                                     if detector_of(a) == name}  # fmt: skip
            pos: set[str] = set()
            other: set[str] = set()
            for k in run.labels.attacks:
                ents = _entities(k)
                (pos if "*" in cats or k.category in cats else other).update(ents)
            for ent, score in best.items():
                if ent in pos or "*" in pos:
                    out[name].append((score, True))
                elif ent not in other and "*" not in other:
                    out[name].append((score, False))
    return out


def merged_scores(run: CaptureRun) -> dict[str, dict[str, float]]:
    """Entity-level maximum score per detector, counting alerts as scored rows too (windows may
    differ from flow batches, and link-layer rows such as ARP never pass through `features`)."""
    out = {name: dict(best) for name, best in run.scores.items()}
    for a in run.alerts:
        best = out.setdefault(detector_of(a), {})
        if a.score > best.get(a.entity, -np.inf):
            best[a.entity] = a.score
    return out


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def _f1(p: float | None, r: float | None) -> float | None:
    if p is None or r is None or p + r == 0:
        return None if p is None or r is None else 0.0
    return 2 * p * r / (p + r)


def evaluate(runs: Sequence[CaptureRun], tolerance_s: float = 600.0) -> dict[str, Any]:
    """Per category, per detector and per capture results over labelled runs (JSON-able)."""
    cat: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"attacks": 0, "detected": 0, "detected_any": 0, "alerts": 0, "true_alerts": 0,
                 "ttd_s": []}
    )  # fmt: skip
    det: dict[str, dict[str, Any]] = defaultdict(lambda: {"alerts": 0, "true_alerts": 0})
    captures = []
    benign_s = 0.0
    false_incidents = 0
    entity_scores = scored_entities(runs)
    for run in runs:
        attacks = run.labels.attacks
        true_ids: set[str] = set()
        for a in run.alerts:
            hit = [k for k in attacks if matches(a, k, run, tolerance_s)]
            c = cat[a.category]
            c["alerts"] += 1
            d = det[detector_of(a)]
            d["alerts"] += 1
            if hit:
                true_ids.add(a.alert_id)
                c["true_alerts"] += 1
                d["true_alerts"] += 1
        per_attack = []
        for k in attacks:
            c = cat[k.category]
            c["attacks"] += 1
            hits = [a for a in run.alerts if matches(a, k, run, tolerance_s)]
            expected = [a for a in hits if a.category == k.category]
            if hits:
                c["detected_any"] += 1
            ttd: float | None = None
            if expected:
                c["detected"] += 1
                start = _window(k, run, 0)[0] + 5 * NS
                first = min(run.emitted_ns.get(a.alert_id, a.ts_ns) for a in expected)
                ttd = max(first - start, 0) / NS
                c["ttd_s"].append(ttd)
            per_attack.append({
                "id": k.id, "category": k.category, "attacker": k.attacker,
                "detected": bool(expected), "detected_by_other": bool(hits) and not expected,
                "signatures": sorted({a.signature for a in hits}), "time_to_detect_s": ttd,
            })  # fmt: skip
        wrong = [
            i for i in run.incidents
            if not any(a in true_ids for a in i.alert_ids)
        ]  # fmt: skip
        false_incidents += len(wrong)
        attack_s = sum(
            max(0.0, (_window(k, run, 0)[1] - _window(k, run, 0)[0] - 5 * NS) / NS) for k in attacks
        )
        benign_s += max(run.active_s - attack_s, 0.0)
        captures.append({
            "name": run.name, "path": run.path, "packets": run.packets,
            "duration_s": round(run.duration_s, 3), "active_s": run.active_s,
            "attacks": per_attack,
            "alerts": len(run.alerts), "incidents": len(run.incidents),
            "false_incidents": [{"entity": i.entity, "title": i.title} for i in wrong],
            "alerts_by_signature": dict(sorted(_count(a.signature for a in run.alerts).items())),
            "errors": run.errors,
        })  # fmt: skip
    categories = {}
    for name, c in sorted(cat.items()):
        recall = _ratio(c["detected"], c["attacks"])
        precision = _ratio(c["true_alerts"], c["alerts"])
        ttds: list[float] = c.pop("ttd_s")
        categories[name] = {
            **c, "recall": recall, "recall_any": _ratio(c["detected_any"], c["attacks"]),
            "precision": precision, "f1": _f1(precision, recall),
            "median_time_to_detect_s": statistics.median(ttds) if ttds else None,
        }  # fmt: skip
    detectors = {}
    for name in sorted(set(det) | set(entity_scores)):
        d = det[name]
        pairs = entity_scores.get(name, [])
        sc = np.array([p[0] for p in pairs], dtype=np.float64)
        y = np.array([p[1] for p in pairs], dtype=bool)
        detectors[name] = {
            **d, "precision": _ratio(d["true_alerts"], d["alerts"]),
            "entities_scored": len(pairs), "attacker_entities_scored": int(y.sum()),
            "roc_auc": roc_auc(sc, y), "average_precision": average_precision(sc, y),
            "at_1pct_fpr": at_fpr(sc, y, 0.01),
        }  # fmt: skip
    hours = benign_s / 3600.0
    return {
        "tolerance_s": tolerance_s,
        "captures": captures,
        "categories": categories,
        "detectors": detectors,
        "false_incidents": false_incidents,
        "benign_hours": round(hours, 4),
        "false_incidents_per_benign_hour": false_incidents / hours if hours > 0 else None,
    }


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for x in items:
        out[x] += 1
    return dict(out)


ProgressFn = Callable[[str], None]
