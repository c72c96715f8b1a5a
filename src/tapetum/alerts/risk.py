"""A decaying risk score per entity (host address or user) and the likely next kill-chain stage.

Every incident about the entity (its `entity`, or a user named in its `users`) adds

    weight = SEVERITY_POINTS[severity] × confidence × stage factor × verdict factor

decayed by half every `half_life_s` (default 24 h) from the incident's last alert to `now`.
The stage factor grows along the kill chain (1.0 for reconnaissance up to 2.0 for impact):
a host already exfiltrating is riskier than one that was scanned. A false-positive or benign
verdict removes the incident (factor 0), a true-positive verdict raises it (×1.5). The sum
saturates into 0..100: score = 100 × (1 − exp(−sum / 100)). Levels: low < 25 ≤ medium < 50 ≤
high < 75 ≤ critical. `now` defaults to the latest incident time in the store (data time), so
the same store gives the same report. The transition table for `likely_next` is in docs/risk.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import msgspec

from tapetum.alerts.correlate import STAGES
from tapetum.alerts.feedback import _Con, _has_table, _incident_rows, _latest_verdicts
from tapetum.errors import NotFound

DEFAULT_HALF_LIFE_S = 86_400.0
SEVERITY_POINTS = {1: 60.0, 2: 30.0, 3: 10.0}
VERDICT_FACTOR = {"tp": 1.5, "fp": 0.0, "benign": 0.0}
LEVELS = ((75.0, "critical"), (50.0, "high"), (25.0, "medium"), (0.0, "low"))
SATURATION = 100.0

#: Stage seen -> (next stage, typical technique, why). Kept small and explained in docs/risk.md.
TRANSITIONS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "reconnaissance": (
        ("initial-access", "T1190", "scanned services are next probed for exploitable flaws"),
        ("credential-access", "T1110", "exposed login services found by a scan invite guessing"),
    ),
    "initial-access": (
        ("execution", "T1059", "an initial foothold is followed by running commands"),
        ("command-and-control", "T1071", "a compromised host calls home"),
    ),
    "execution": (("command-and-control", "T1071", "a payload that runs calls home"),),
    "credential-access": (
        ("lateral-movement", "T1021", "valid credentials open remote services on other hosts"),
        ("discovery", "T1046", "a new account is used to map what it can reach"),
    ),
    "discovery": (
        ("lateral-movement", "T1021", "discovered services are used to move to other hosts"),
        ("credential-access", "T1110", "discovered login services are targeted for passwords"),
    ),
    "lateral-movement": (
        ("collection", "T1039", "data is gathered from the newly reached hosts"),
        ("command-and-control", "T1071", "new hosts get their own C2 channel"),
    ),
    "collection": (("exfiltration", "T1041", "gathered data is sent out over the C2 channel"),),
    "command-and-control": (
        ("exfiltration", "T1041", "data is sent out over the C2 channel"),
        ("discovery", "T1046", "operators map the network from the controlled host"),
    ),
    "exfiltration": (("impact", "T1486", "after data theft, extortion by encryption is common"),),
    "impact": (),
}


class NextStage(msgspec.Struct, frozen=True, kw_only=True):
    stage: str
    technique: str
    why: str


class RiskReport(msgspec.Struct, frozen=True, kw_only=True):
    entity: str
    score: float
    level: str
    reasons: list[str]
    techniques: list[str]
    stages: list[str]
    likely_next: list[NextStage]
    history: list[tuple[int, float]]
    now_ns: int
    half_life_s: float
    incidents: int


def level_of(score: float) -> str:
    return next(name for bar, name in LEVELS if score >= bar)


def stage_factor(stage: str) -> float:
    if stage not in STAGES:
        return 1.0
    return 1.0 + STAGES.index(stage) / (len(STAGES) - 1)


def incident_weight(inc: Mapping[str, Any], verdict: str | None) -> float:
    base = SEVERITY_POINTS.get(int(inc["severity"]), 10.0)
    conf = min(max(float(inc["confidence"] or 0.0), 0.0), 1.0)
    return base * conf * stage_factor(str(inc["stage"])) * VERDICT_FACTOR.get(verdict or "", 1.0)


def _score_at(items: Sequence[tuple[int, float]], t_ns: int, half_life_s: float) -> float:
    raw = 0.0
    for ts, w in items:
        if ts <= t_ns:
            raw += w * 0.5 ** ((t_ns - ts) / 1e9 / half_life_s)
    return round(100.0 * (1.0 - math.exp(-raw / SATURATION)), 2)


def likely_next(stages: Sequence[str], seen_techniques: Sequence[str]) -> list[NextStage]:
    """Next stages after the furthest stage seen (then earlier ones), not already reached."""
    reached = set(stages)
    ordered = sorted(reached, key=lambda s: STAGES.index(s) if s in STAGES else -1, reverse=True)
    out: list[NextStage] = []
    for st in ordered:
        for nxt, tech, why in TRANSITIONS.get(st, ()):
            if nxt in reached or tech in seen_techniques or any(n.stage == nxt for n in out):
                continue
            out.append(NextStage(stage=nxt, technique=tech, why=f"after {st}: {why}"))
    return out[:4]


def risk_report(
    store: str | Path | duckdb.DuckDBPyConnection,
    entity: str,
    now_ns: int | None = None,
    *,
    half_life_s: float = DEFAULT_HALF_LIFE_S,
) -> RiskReport:
    """The entity's risk from every incident in the store. An entity without incidents scores 0
    ("low", no reasons): a policy engine asking about a clean host gets an answer, not an error.
    NotFound only when the store has no incidents table (nothing was ever analysed)."""
    if half_life_s <= 0:
        raise ValueError("half_life_s must be positive")
    with _Con(store, read_only=True) as con:
        if not _has_table(con, "incidents"):
            raise NotFound("the store has no incidents table; run `tapetum analyze` first")
        incs = _incident_rows(con, "(i.entity = ? OR list_contains(i.users, ?))", [entity, entity])
        verdicts = _latest_verdicts(con)
        row = con.execute("SELECT epoch_ns(max(last_seen)) FROM incidents").fetchone()
        store_now = int(row[0]) if row and row[0] is not None else 0
    if not incs:
        return RiskReport(
            entity=entity, score=0.0, level="low", reasons=[], techniques=[], stages=[],
            likely_next=[], history=[], now_ns=now_ns or store_now, half_life_s=half_life_s,
            incidents=0,
        )  # fmt: skip
    incs.sort(key=lambda i: (i["last_ts_ns"], i["incident_id"]))
    now = max(store_now, *(i["last_ts_ns"] for i in incs)) if now_ns is None else now_ns
    items: list[tuple[int, float]] = []
    contrib: list[tuple[float, str]] = []
    techniques: set[str] = set()
    stages: set[str] = set()
    for inc in incs:
        v = verdicts.get(inc["incident_id"])
        verdict = v.verdict if v else None
        w = incident_weight(inc, verdict)
        items.append((int(inc["last_ts_ns"]), w))
        if w <= 0:
            continue  # judged false or benign: contributes nothing, predicts nothing
        techniques.update(inc["mitre_technique_id"] or ())
        stages.update(t for t in inc["mitre_tactic"] or () if t in STAGES)
        age_h = max(0, now - int(inc["last_ts_ns"])) / 3.6e12
        decayed = w * 0.5 ** (age_h * 3600.0 / half_life_s)
        sev = {1: "high", 2: "medium", 3: "low"}.get(int(inc["severity"]), "?")
        mark = " (confirmed true positive)" if verdict == "tp" else ""
        contrib.append(
            (
                decayed,
                f"{inc['title']} — {sev} severity, confidence {float(inc['confidence']):.2f}, "
                f"{age_h:.1f} h ago: +{decayed:.1f} points{mark} [incident {inc['incident_id']}]",
            )
        )
    score = _score_at(items, now, half_life_s)
    times = sorted({t for t, _ in items if t <= now} | {now})
    history = [(t, _score_at(items, t, half_life_s)) for t in times]
    ignored = sum(1 for _, w in items if w <= 0)
    reasons = [text for _, text in sorted(contrib, key=lambda c: -c[0])[:10]]
    if ignored:
        reasons.append(f"{ignored} incident(s) judged false positive or benign: not counted")
    stage_list = [s for s in STAGES if s in stages]
    return RiskReport(
        entity=entity,
        score=score,
        level=level_of(score),
        reasons=reasons,
        techniques=sorted(techniques),
        stages=stage_list,
        likely_next=likely_next(stage_list, sorted(techniques)),
        history=history,
        now_ns=int(now),
        half_life_s=half_life_s,
        incidents=len(incs),
    )
