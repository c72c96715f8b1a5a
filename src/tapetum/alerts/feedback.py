"""Analyst feedback: verdicts on incidents, scoped suppressions, and what detectors learn from them.

Three things happen when an analyst judges an incident:

1. A `Verdict` row goes into the store (table `verdicts`); the latest verdict of an incident is
   the one that counts.
2. With `suppress`, a `Suppression` row (table `suppressions`) is created: alerts about the same
   entity whose signature starts with the given prefix (and, if set, go to the given destination)
   are dropped by the `Suppressor` until the suppression expires (default 30 days).
3. `feedback.json` is (re)written beside the store (`<store>.feedback.json`): the active
   suppressions, and per detector and entity what was judged normal — the observed values of
   the incident's alerts for every fp/benign verdict. `tapetum analyze` and `tapetum watch` load
   it: detectors with an `accept_feedback(entity, observed, *, signature, dest)` method raise
   that entity's learnt level to the judged-normal value (so only clearly larger activity
   alerts again), and the suppressions are applied to alerts.

Suppressed alerts are not stored, not written to any sink and not correlated into incidents;
they are counted in the run summary (`suppressed_alerts`, per suppression id), so the analyst
sees how much was hidden. Expiry is judged against the time the analysis starts (the caller's
`now_ns`, by default the wall clock when the feedback file is loaded), not against the data's
time: a suppression made today must also hold when last week's capture is replayed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import duckdb
import msgspec

from tapetum.errors import NotFound, StoreError
from tapetum.records import Alert

VERDICTS = ("tp", "benign", "fp")
NS_PER_DAY = 86_400 * 1_000_000_000
DEFAULT_SUPPRESS_DAYS = 30.0
FEEDBACK_VERSION = 1
#: Bound on the judged-normal entries in feedback.json (oldest verdicts are dropped first).
MAX_ACCEPTED = 20_000
#: Bound on the alerts of one incident read to collect judged-normal values.
MAX_ALERTS_PER_INCIDENT = 5_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    verdict_id VARCHAR PRIMARY KEY, incident_id VARCHAR, verdict VARCHAR, note VARCHAR,
    analyst VARCHAR, ts_ns BIGINT, suppression_id VARCHAR
);
CREATE TABLE IF NOT EXISTS suppressions (
    suppression_id VARCHAR PRIMARY KEY, entity VARCHAR, signature VARCHAR, dest VARCHAR,
    expires_ns BIGINT, created_ns BIGINT, reason VARCHAR
);
"""


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    verdict_id: str
    incident_id: str
    verdict: str
    note: str
    analyst: str
    ts_ns: int
    suppression_id: str | None = None


class Suppression(msgspec.Struct, frozen=True, kw_only=True):
    suppression_id: str
    entity: str
    #: Prefix of the alert signature ("beacon." or "beacon.periodic"); None: every signature.
    signature: str | None
    #: Destination address the alert must name; None: any destination.
    dest: str | None
    expires_ns: int | None
    created_ns: int
    reason: str

    def matches(self, alert: Alert) -> bool:
        if alert.entity != self.entity:
            return False
        if self.signature is not None and not alert.signature.startswith(self.signature):
            return False
        return self.dest is None or alert.dest_ip == self.dest

    def active(self, now_ns: int) -> bool:
        return self.expires_ns is None or now_ns < self.expires_ns


class Accepted(msgspec.Struct, frozen=True, kw_only=True):
    """What an analyst judged normal for one (detector, entity, signature, destination)."""

    detector: str
    entity: str
    signature: str
    dest: str | None
    #: Per feature, the largest value seen in the judged alerts (units in the names).
    observed: dict[str, float]
    incident_id: str
    ts_ns: int


class FeedbackFile(msgspec.Struct, kw_only=True):
    version: int = FEEDBACK_VERSION
    suppressions: list[Suppression] = msgspec.field(default_factory=list)
    accepted: list[Accepted] = msgspec.field(default_factory=list)


Store = str | Path | duckdb.DuckDBPyConnection


@runtime_checkable
class AcceptsFeedback(Protocol):
    name: str

    def accept_feedback(
        self,
        entity: str,
        observed: Mapping[str, float],
        *,
        signature: str = "",
        dest: str | None = None,
    ) -> bool: ...


# -- store access ------------------------------------------------------------------------------


class _Con:
    """A connection to the store: borrowed (not closed) or opened here (closed on exit)."""

    def __init__(self, store: Store, *, read_only: bool = False) -> None:
        self.own = not isinstance(store, duckdb.DuckDBPyConnection)
        if isinstance(store, duckdb.DuckDBPyConnection):
            self.con = store
        else:
            if not Path(store).exists():
                raise StoreError(f"{store}: no such store; run `tapetum analyze` first")
            try:
                self.con = duckdb.connect(str(store), read_only=read_only)
            except (duckdb.Error, OSError) as exc:
                raise StoreError(f"{store}: cannot open the store: {exc}") from None

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        return self.con

    def __exit__(self, *exc: object) -> None:
        if self.own:
            self.con.close()


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
    ).fetchone()
    return bool(row and row[0])


def store_path(store: Store) -> str | None:
    if isinstance(store, duckdb.DuckDBPyConnection):
        row = store.execute(
            "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
        ).fetchone()
        return str(row[0]) if row and row[0] else None
    return str(store)


def feedback_path(store: str | Path) -> Path:
    """Where the feedback of a store lives: `<store>.feedback.json`."""
    return Path(f"{store}.feedback.json")


INCIDENT_COLUMNS = (
    "run_id", "incident_id", "entity", "title", "summary", "severity", "confidence", "stage",
    "alert_count", "alert_ids", "signatures", "categories", "mitre_technique_id", "mitre_tactic",
    "src_ip", "dest_ips", "users",
)  # fmt: skip
_INCIDENT_SELECT = (
    ", ".join(f'i."{c}"' for c in INCIDENT_COLUMNS)
    + ", epoch_ns(i.first_seen) AS first_ts_ns, epoch_ns(i.last_seen) AS last_ts_ns"
)


def _incident_rows(
    con: duckdb.DuckDBPyConnection, where: str, params: list[Any]
) -> list[dict[str, Any]]:
    """Incidents (the newest run's copy when several runs hold the same id), as dicts."""
    sql = (
        f"SELECT {_INCIDENT_SELECT} FROM incidents i LEFT JOIN runs r USING (run_id) "
        f"WHERE {where} "
        "QUALIFY row_number() OVER (PARTITION BY i.incident_id "
        "ORDER BY r.started_at DESC NULLS LAST, i.run_id DESC) = 1 "
        "ORDER BY i.severity, i.first_seen, i.incident_id"
    )
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description or []]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def get_incident(store: Store, incident_id: str) -> dict[str, Any]:
    """One incident with its latest verdict; NotFound if no run holds it."""
    with _Con(store, read_only=True) as con:
        rows = _incident_rows(con, "i.incident_id = ?", [incident_id])
        if not rows:
            raise NotFound(f"no incident {incident_id!r} in the store")
        inc = rows[0]
        inc["verdicts"] = [msgspec.to_builtins(v) for v in _verdicts(con, incident_id)]
    return inc


def list_incidents(
    store: Store,
    *,
    severity: int | None = None,
    entity: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Incidents of every run in the store, newest run's copy, with their latest verdict."""
    where: list[str] = ["TRUE"]
    params: list[Any] = []
    if severity is not None:
        where.append("i.severity <= ?")
        params.append(severity)
    if entity is not None:
        where.append("(i.entity = ? OR list_contains(i.users, ?))")
        params += [entity, entity]
    with _Con(store, read_only=True) as con:
        if not _has_table(con, "incidents"):
            return []
        rows = _incident_rows(con, " AND ".join(where), params)[: max(0, limit)]
        latest = _latest_verdicts(con)
    for r in rows:
        v = latest.get(r["incident_id"])
        r["verdict"] = v.verdict if v else None
    return rows


def incident_alerts(
    store: Store, incident: Mapping[str, Any], limit: int = MAX_ALERTS_PER_INCIDENT
) -> list[dict[str, Any]]:
    """The alerts of an incident (same run), with observed/baseline decoded."""
    ids = list(incident["alert_ids"] or [])[:limit]
    if not ids:
        return []
    with _Con(store, read_only=True) as con:
        cur = con.execute(
            "SELECT alert_id, signature, category, severity, score, entity, explanation, "
            "src_ip, dest_ip, dest_port, proto, epoch_ns(first_seen) AS first_ts_ns, "
            "epoch_ns(last_seen) AS last_ts_ns, epoch_ns(ts) AS ts_ns, observed, baseline, "
            "mitre_technique_id, mitre_tactic "
            "FROM alerts WHERE run_id = ? AND list_contains(?, alert_id) ORDER BY ts, alert_id",
            [incident["run_id"], ids],
        )
        names = [d[0] for d in cur.description or []]
        out = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    for a in out:
        for k in ("observed", "baseline"):
            a[k] = json.loads(a[k]) if isinstance(a[k], str) else (a[k] or {})
    return out


# -- verdicts and suppressions ----------------------------------------------------------------


def _verdicts(con: duckdb.DuckDBPyConnection, incident_id: str | None) -> list[Verdict]:
    if not _has_table(con, "verdicts"):
        return []
    sql = "SELECT * FROM verdicts"
    params: list[Any] = []
    if incident_id is not None:
        sql += " WHERE incident_id = ?"
        params.append(incident_id)
    cur = con.execute(sql + " ORDER BY ts_ns, rowid", params)  # rowid: insertion order
    names = [d[0] for d in cur.description or []]
    return [msgspec.convert(dict(zip(names, r, strict=True)), Verdict) for r in cur.fetchall()]


def _latest_verdicts(con: duckdb.DuckDBPyConnection) -> dict[str, Verdict]:
    return {v.incident_id: v for v in _verdicts(con, None)}  # ordered by time: last wins


def list_verdicts(store: Store, incident_id: str | None = None) -> list[Verdict]:
    with _Con(store, read_only=True) as con:
        return _verdicts(con, incident_id)


def _suppressions(con: duckdb.DuckDBPyConnection) -> list[Suppression]:
    if not _has_table(con, "suppressions"):
        return []
    cur = con.execute("SELECT * FROM suppressions ORDER BY created_ns, suppression_id")
    names = [d[0] for d in cur.description or []]
    return [msgspec.convert(dict(zip(names, r, strict=True)), Suppression) for r in cur.fetchall()]


def list_suppressions(store: Store) -> list[Suppression]:
    """Every suppression, expired or not."""
    with _Con(store, read_only=True) as con:
        return _suppressions(con)


def active_suppressions(store: Store, now_ns: int | None = None) -> list[Suppression]:
    now = time.time_ns() if now_ns is None else now_ns
    with _Con(store, read_only=True) as con:
        return [s for s in _suppressions(con) if s.active(now)]


def _common_prefix(signatures: Sequence[str]) -> str | None:
    """The narrowest signature prefix covering them all: "scan.vertical", "scan." or None."""
    sigs = sorted(set(signatures))
    if not sigs:
        return None
    if len(sigs) == 1:
        return sigs[0]
    detectors = {s.split(".", 1)[0] for s in sigs}
    return f"{detectors.pop()}." if len(detectors) == 1 else None


def record_verdict(
    store: Store,
    incident_id: str,
    verdict: str,
    *,
    note: str = "",
    analyst: str = "cli",
    suppress: bool | Mapping[str, Any] = False,
    now_ns: int | None = None,
) -> Verdict:
    """Record a verdict (tp, benign, fp) on an incident; optionally create a suppression.

    `suppress` may be True (the incident's entity; its signatures' common prefix; its one
    destination if it has exactly one; 30 days) or a dict overriding any of "signature",
    "dest", "days" (None or <= 0: never expires), "entity". Raises NotFound for an unknown
    incident, ValueError for a bad verdict or a suppression on a true positive. Rewrites
    `<store>.feedback.json` when the store is a file."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
    if suppress and verdict == "tp":
        raise ValueError("a true positive cannot create a suppression")
    now = time.time_ns() if now_ns is None else now_ns
    with _Con(store) as con:
        if not _has_table(con, "incidents"):
            raise NotFound(f"no incident {incident_id!r} in the store (no incidents table)")
        rows = _incident_rows(con, "i.incident_id = ?", [incident_id])
        if not rows:
            raise NotFound(f"no incident {incident_id!r} in the store")
        inc = rows[0]
        con.execute(SCHEMA)
        sup: Suppression | None = None
        if suppress:
            opts: Mapping[str, Any] = suppress if isinstance(suppress, Mapping) else {}
            # A destination narrows the suppression only if every alert of the incident names it.
            dests = {a["dest_ip"] for a in incident_alerts(con, inc)}
            dests = dests if len(dests) == 1 and None not in dests else set()
            days = opts.get("days", DEFAULT_SUPPRESS_DAYS)
            sup = Suppression(
                suppression_id=_id("s", incident_id, now),
                entity=str(opts.get("entity", inc["entity"])),
                signature=opts.get("signature", _common_prefix(inc["signatures"] or [])),
                dest=opts.get("dest", dests.pop() if dests else None),
                expires_ns=None if days is None or days <= 0 else now + int(days * NS_PER_DAY),
                created_ns=now,
                reason=f"{verdict} verdict on incident {incident_id}"
                + (f": {note}" if note else ""),
            )
            con.execute(
                "INSERT INTO suppressions VALUES (?, ?, ?, ?, ?, ?, ?)",
                [sup.suppression_id, sup.entity, sup.signature, sup.dest, sup.expires_ns,
                 sup.created_ns, sup.reason],
            )  # fmt: skip
        v = Verdict(
            verdict_id=_id("v", incident_id, now),
            incident_id=incident_id,
            verdict=verdict,
            note=note,
            analyst=analyst,
            ts_ns=now,
            suppression_id=sup.suppression_id if sup else None,
        )
        con.execute(
            "INSERT INTO verdicts VALUES (?, ?, ?, ?, ?, ?, ?)",
            [v.verdict_id, v.incident_id, v.verdict, v.note, v.analyst, v.ts_ns,
             v.suppression_id],
        )  # fmt: skip
        path = store_path(store)
        if path and path != ":memory:":
            write_feedback(con, feedback_path(path), now)
    return v


def _id(kind: str, incident_id: str, now_ns: int) -> str:
    return kind + hashlib.sha1(f"{kind}|{incident_id}|{now_ns}".encode()).hexdigest()[:15]


# -- feedback.json ------------------------------------------------------------------------------


def build_feedback(con: duckdb.DuckDBPyConnection, now_ns: int) -> FeedbackFile:
    """Active suppressions, and judged-normal values of every incident whose latest verdict is
    fp or benign (maximum per feature over its alerts, per detector/entity/signature/dest)."""
    fb = FeedbackFile(suppressions=[s for s in _suppressions(con) if s.active(now_ns)])
    judged = [v for v in _latest_verdicts(con).values() if v.verdict in ("fp", "benign")]
    judged.sort(key=lambda v: v.ts_ns, reverse=True)  # newest first: kept within the cap
    merged: dict[tuple[str, str, str | None], Accepted] = {}
    for v in judged:
        rows = _incident_rows(con, "i.incident_id = ?", [v.incident_id])
        if not rows:
            continue
        for a in incident_alerts(con, rows[0]):
            sig = str(a["signature"])
            key = (sig, str(a["entity"]), a["dest_ip"])
            obs = {k: float(x) for k, x in a["observed"].items() if isinstance(x, int | float)}
            old = merged.get(key)
            if old is not None:
                obs = {k: max(obs.get(k, x), x) for k, x in old.observed.items()} | {
                    k: x for k, x in obs.items() if k not in old.observed
                }
            elif len(merged) >= MAX_ACCEPTED:
                continue
            merged[key] = Accepted(
                detector=sig.split(".", 1)[0],
                entity=key[1],
                signature=sig,
                dest=key[2],
                observed=obs,
                incident_id=v.incident_id if old is None else old.incident_id,
                ts_ns=v.ts_ns if old is None else old.ts_ns,
            )
    fb.accepted = sorted(merged.values(), key=lambda a: (a.detector, a.entity, a.signature))
    return fb


def write_feedback(con: duckdb.DuckDBPyConnection, path: Path, now_ns: int) -> FeedbackFile:
    fb = build_feedback(con, now_ns)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(fb), indent=1))
    os.replace(tmp, path)  # readers never see half a file
    return fb


def export_feedback(store: str | Path, now_ns: int | None = None) -> Path:
    """(Re)write `<store>.feedback.json` from the store's verdicts and suppressions."""
    now = time.time_ns() if now_ns is None else now_ns
    path = feedback_path(store)
    with _Con(store) as con:
        write_feedback(con, path, now)
    return path


# -- applying feedback ----------------------------------------------------------------------------


class Suppressor:
    """Drops alerts that match an active suppression; counts them per suppression id."""

    def __init__(self, suppressions: Iterable[Suppression], now_ns: int | None = None) -> None:
        now = time.time_ns() if now_ns is None else now_ns
        self.by_entity: dict[str, list[Suppression]] = {}
        for s in suppressions:
            if s.active(now):
                self.by_entity.setdefault(s.entity, []).append(s)
        self.counts: dict[str, int] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_entity.values())

    def split(self, alerts: Sequence[Alert]) -> tuple[list[Alert], list[Alert]]:
        """(kept, suppressed)."""
        if not self.by_entity:
            return list(alerts), []
        kept: list[Alert] = []
        dropped: list[Alert] = []
        for a in alerts:
            hit = next((s for s in self.by_entity.get(a.entity, ()) if s.matches(a)), None)
            if hit is None:
                kept.append(a)
            else:
                dropped.append(a)
                self.counts[hit.suppression_id] = self.counts.get(hit.suppression_id, 0) + 1
        return kept, dropped


class Feedback:
    """Loaded feedback: suppressions to apply and judged-normal values for the detectors."""

    def __init__(self, data: FeedbackFile, now_ns: int | None = None) -> None:
        self.data = data
        self.now_ns = time.time_ns() if now_ns is None else now_ns

    @classmethod
    def load(cls, path: str | Path, now_ns: int | None = None) -> Feedback:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise StoreError(f"{path}: cannot read feedback: {exc.strerror}") from None
        try:
            data = msgspec.json.decode(raw, type=FeedbackFile)
        except msgspec.ValidationError as exc:
            raise StoreError(f"{path}: not a Tapetum feedback file: {exc}") from None
        except msgspec.DecodeError as exc:
            raise StoreError(f"{path}: damaged feedback file: {exc}") from None
        if data.version != FEEDBACK_VERSION:
            raise StoreError(f"{path}: feedback version {data.version}, expected 1")
        return cls(data, now_ns)

    @classmethod
    def from_store(cls, store: Store, now_ns: int | None = None) -> Feedback:
        now = time.time_ns() if now_ns is None else now_ns
        with _Con(store, read_only=True) as con:
            return cls(build_feedback(con, now), now)

    def suppressor(self) -> Suppressor:
        return Suppressor(self.data.suppressions, self.now_ns)

    def apply(self, detectors: Iterable[object]) -> dict[str, int]:
        """Hand judged-normal values to detectors that accept them; per detector, how many
        entries changed its state."""
        takers = {
            d.name: d for d in detectors if isinstance(d, AcceptsFeedback) and hasattr(d, "name")
        }
        used: dict[str, int] = {}
        for acc in self.data.accepted:
            det = takers.get(acc.detector)
            if det is not None and det.accept_feedback(
                acc.entity, acc.observed, signature=acc.signature, dest=acc.dest
            ):
                used[acc.detector] = used.get(acc.detector, 0) + 1
        return used
