"""Read side of incidents for the web UI and API: lists with filters, one incident with its
timeline and evidence, overview statistics.

Every user value reaches SQL as a `?` parameter; sort columns come from a whitelist. Functions take
an open DuckDB connection so the caller decides how long the file stays open.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import duckdb

#: Sortable incident columns (API name -> SQL expression). Anything else is refused.
INCIDENT_SORTS = {
    "ts": "ts",
    "first_seen": "first_seen",
    "last_seen": "last_seen",
    "severity": "severity",
    "confidence": "confidence",
    "alert_count": "alert_count",
    "entity": "entity",
}
MAX_LIMIT = 1000
#: Evidence rows of each kind returned with one incident (the rest are counted, not sent).
EVIDENCE_ROWS = 200
_JSON_COLUMNS = frozenset({"observed", "baseline", "summary_json"})
_EPOCH = dt.datetime(1970, 1, 1)


def parse_time(value: str | None) -> int | None:
    """A time filter: integer nanoseconds since the epoch or ISO 8601 (UTC when no zone)."""
    if value is None or value == "":
        return None
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time (ns since epoch or ISO 8601): {value!r}") from None
    if t.tzinfo is not None:
        t = t.astimezone(dt.UTC).replace(tzinfo=None)
    return (t - _EPOCH) // dt.timedelta(microseconds=1) * 1000


def ts_ns(value: dt.datetime) -> int:
    return (value - _EPOCH) // dt.timedelta(microseconds=1) * 1000


def _plain(name: str, value: Any) -> Any:
    if isinstance(value, dt.datetime):
        # Stored timestamps are naive UTC.
        return value.isoformat(timespec="microseconds") + "Z"
    if name in _JSON_COLUMNS and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def rows_as_dicts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in (cur.description or [])]
    return [{n: _plain(n, v) for n, v in zip(names, row, strict=True)} for row in cur.fetchall()]


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
    ).fetchone()
    return bool(row and row[0])


class Where:
    """Conditions joined by AND, with their parameters kept beside them."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.params: list[Any] = []

    def add(self, sql: str, *params: Any) -> None:
        self.parts.append(sql)
        self.params.extend(params)

    def contains(self, column: str, needle: str | None) -> None:
        """Case-insensitive substring; strpos, not LIKE, so % and _ in input are literal."""
        if needle:
            self.add(f"strpos(lower(CAST({column} AS VARCHAR)), lower(?)) > 0", needle)

    def equals(self, column: str, value: Any) -> None:
        if value is not None and value != "":
            self.add(f"{column} = ?", value)

    def time_range(self, column: str, since_ns: int | None, until_ns: int | None) -> None:
        if since_ns is not None:
            self.add(f"epoch_ns({column}) >= ?", since_ns)
        if until_ns is not None:
            self.add(f"epoch_ns({column}) < ?", until_ns)

    def sql(self) -> str:
        return (" WHERE " + " AND ".join(self.parts)) if self.parts else ""


def order_by(sort: str, order: str, allowed: dict[str, str]) -> str:
    if sort not in allowed:
        raise ValueError(f"cannot sort by {sort!r}; one of: {', '.join(sorted(allowed))}")
    if order not in ("asc", "desc"):
        raise ValueError("order must be asc or desc")
    return f" ORDER BY {allowed[sort]} {order.upper()} NULLS LAST"


def page(limit: int, offset: int) -> tuple[str, list[int]]:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1..{MAX_LIMIT}")
    if offset < 0:
        raise ValueError("offset must be >= 0")
    return " LIMIT ? OFFSET ?", [limit, offset]


def list_incidents(
    con: duckdb.DuckDBPyConnection,
    *,
    severity: int | None = None,
    stage: str | None = None,
    entity: str | None = None,
    since_ns: int | None = None,
    until_ns: int | None = None,
    q: str | None = None,
    run_id: str | None = None,
    sort: str = "ts",
    order: str = "desc",
    limit: int = 50,
    offset: int = 0,
) -> dict[str, Any]:
    """Incidents matching every given filter, one page, with the total count."""
    w = Where()
    w.equals("severity", severity)
    w.equals("stage", stage)
    w.contains("entity", entity)
    w.equals("run_id", run_id)
    w.time_range("last_seen", since_ns, None)
    w.time_range("first_seen", None, until_ns)
    if q:
        w.add(
            "strpos(lower(concat_ws(' ', title, summary, entity, src_ip, "
            "array_to_string(signatures, ' '), array_to_string(mitre_technique_id, ' '))), "
            "lower(?)) > 0",
            q,
        )
    ordering = order_by(sort, order, INCIDENT_SORTS)
    paging, pparams = page(limit, offset)
    total = con.execute("SELECT count(*) FROM incidents" + w.sql(), w.params).fetchone()
    cur = con.execute(
        "SELECT run_id, incident_id, ts, first_seen, last_seen, entity, title, severity, "
        "confidence, stage, alert_count, signatures, categories, mitre_technique_id, "
        "mitre_tactic, src_ip, dest_ips, users FROM incidents"
        + w.sql()
        + ordering
        + ", incident_id"
        + paging,
        [*w.params, *pparams],
    )
    return {"total": int(total[0]) if total else 0, "items": rows_as_dicts(cur)}


def get_incident(con: duckdb.DuckDBPyConnection, incident_id: str) -> dict[str, Any] | None:
    """One incident (its latest run), its alerts as a timeline and the evidence around it:
    the alerts' own flows (by flow_id / community_id) and the entity's flows, DNS and TLS records
    within the incident's time span."""
    cur = con.execute(
        "SELECT * FROM incidents WHERE incident_id = ? ORDER BY ts DESC LIMIT 1", [incident_id]
    )
    found = rows_as_dicts(cur)
    if not found:
        return None
    inc = found[0]
    run_id = inc["run_id"]
    alerts = rows_as_dicts(
        con.execute(
            "SELECT alert_id, ts, first_seen, last_seen, signature, signature_id, category, "
            "severity, score, entity, explanation, mitre_technique_id, mitre_tactic, src_ip, "
            "src_port, dest_ip, dest_port, proto, flow_id, community_id, observed, baseline "
            "FROM alerts WHERE run_id = ? AND list_contains(?, alert_id) "
            "ORDER BY first_seen, ts, alert_id",
            [run_id, list(inc["alert_ids"] or [])],
        )
    )
    flow_ids = [a["flow_id"] for a in alerts if a["flow_id"] is not None]
    cids = [a["community_id"] for a in alerts if a["community_id"]]
    entity = inc["entity"]
    row = con.execute(
        "SELECT epoch_ns(first_seen), epoch_ns(last_seen) FROM incidents "
        "WHERE run_id = ? AND incident_id = ?",
        [run_id, incident_id],
    ).fetchone()
    lo, hi = (row[0], row[1]) if row else (0, 0)
    evidence: dict[str, Any] = {}
    counts: dict[str, int] = {}
    # The alerts' own flows first, then the entity's other traffic in the span.
    link = "(list_contains(?, flow_id) OR list_contains(?, community_id))"
    near = '((src_ip = ? OR dest_ip = ?) AND epoch_ns("{col}") BETWEEN ? AND ?)'
    for table, col, cols in (
        ("flows", "start", _FLOW_COLUMNS),
        ("dns", "ts", _DNS_COLUMNS),
        ("tls", "ts", _TLS_COLUMNS),
    ):
        cond = f"run_id = ? AND ({link} OR {near.format(col=col)})"
        params: list[Any] = [run_id, flow_ids, cids, entity, entity, lo, hi]
        n = con.execute(f"SELECT count(*) FROM {table} WHERE {cond}", params).fetchone()
        counts[table] = int(n[0]) if n else 0
        evidence[table] = rows_as_dicts(
            con.execute(
                f"SELECT {cols}, {link} AS linked FROM {table} WHERE {cond} "
                f'ORDER BY linked DESC, "{col}" LIMIT ?',
                [flow_ids, cids, *params, EVIDENCE_ROWS],
            )
        )
    inc["alerts"] = alerts
    inc["evidence"] = evidence
    inc["evidence_counts"] = counts
    return inc


_FLOW_COLUMNS = (
    'flow_id, community_id, start, "end", duration_s, src_ip, src_port, dest_ip, dest_port, '
    "proto, service, pkts_toserver, pkts_toclient, bytes_toserver, bytes_toclient, conn_state"
)
_DNS_COLUMNS = (
    "ts, flow_id, community_id, src_ip, src_port, dest_ip, dest_port, proto, type, query, qtype, "
    "rcode, answers"
)
_TLS_COLUMNS = (
    "ts, flow_id, community_id, src_ip, src_port, dest_ip, dest_port, sni, version, ja3, ja4, "
    "subject, issuerdn, notafter, self_signed"
)


def incident_exists(con: duckdb.DuckDBPyConnection, incident_id: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM incidents WHERE incident_id = ?", [incident_id]
    ).fetchone()
    return bool(row and row[0])


def timeline(
    con: duckdb.DuckDBPyConnection,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    buckets: int = 60,
) -> dict[str, Any]:
    """Flows, bytes and alerts per time bucket; the bucket width fits `buckets` over the span."""
    if not 1 <= buckets <= 1000:
        raise ValueError("buckets must be 1..1000")
    row = con.execute("SELECT min(epoch_ns(start)), max(epoch_ns(start)) FROM flows").fetchone()
    lo = since_ns if since_ns is not None else (row[0] if row and row[0] is not None else 0)
    hi = until_ns if until_ns is not None else (row[1] if row and row[1] is not None else lo)
    arow = con.execute("SELECT min(epoch_ns(ts)), max(epoch_ns(ts)) FROM alerts").fetchone()
    if since_ns is None and arow and arow[0] is not None:
        lo = min(lo, arow[0])
    if until_ns is None and arow and arow[1] is not None:
        hi = max(hi, arow[1])
    width = max(1_000_000_000, -(-(hi - lo + 1) // buckets))
    starts = [lo + i * width for i in range(buckets)]
    flows = [0] * buckets
    nbytes = [0] * buckets
    alerts = [0] * buckets
    for b, n, s in con.execute(
        "SELECT (epoch_ns(start) - ?) // ? AS b, count(*), "
        "sum(bytes_toserver + bytes_toclient) FROM flows "
        "WHERE epoch_ns(start) >= ? AND epoch_ns(start) <= ? GROUP BY b",
        [lo, width, lo, hi],
    ).fetchall():
        if 0 <= b < buckets:
            flows[b], nbytes[b] = int(n), int(s or 0)
    for b, n in con.execute(
        "SELECT (epoch_ns(ts) - ?) // ? AS b, count(*) FROM alerts "
        "WHERE epoch_ns(ts) >= ? AND epoch_ns(ts) <= ? GROUP BY b",
        [lo, width, lo, hi],
    ).fetchall():
        if 0 <= b < buckets:
            alerts[b] = int(n)
    return {
        "bucket_s": width / 1e9,
        "start_ns": starts,
        "flows": flows,
        "bytes": nbytes,
        "alerts": alerts,
    }


def overview(con: duckdb.DuckDBPyConnection, top: int = 10) -> dict[str, Any]:
    """Counts for the dashboard's front page: incidents by stage and severity, top entities."""
    by_stage = dict(
        con.execute(
            "SELECT stage, count(*) FROM incidents GROUP BY stage ORDER BY count(*) DESC"
        ).fetchall()
    )
    by_severity = {
        str(k): v
        for k, v in con.execute(
            "SELECT severity, count(*) FROM incidents GROUP BY severity ORDER BY severity"
        ).fetchall()
    }
    top_entities = rows_as_dicts(
        con.execute(
            "SELECT entity, count(*) AS incidents, sum(alert_count) AS alerts, "
            "min(severity) AS worst_severity, max(last_seen) AS last_seen FROM incidents "
            "GROUP BY entity ORDER BY min(severity), count(*) DESC, entity LIMIT ?",
            [top],
        )
    )
    totals: dict[str, int] = {}
    for table in ("flows", "dns", "tls", "alerts", "incidents"):
        row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
        totals[table] = int(row[0]) if row else 0
    return {
        "incidents_by_stage": by_stage,
        "incidents_by_severity": by_severity,
        "top_entities": top_entities,
        "totals": totals,
    }


def entity_summary(con: duckdb.DuckDBPyConnection, entity: str) -> dict[str, Any]:
    """What the store knows about one entity: its incidents, alerts and traffic totals, with the
    observed-vs-baseline values of its alerts."""
    incidents = rows_as_dicts(
        con.execute(
            "SELECT incident_id, ts, title, severity, stage, alert_count FROM incidents "
            "WHERE entity = ? OR src_ip = ? OR list_contains(users, ?) ORDER BY ts DESC LIMIT 100",
            [entity, entity, entity],
        )
    )
    alerts = rows_as_dicts(
        con.execute(
            "SELECT alert_id, ts, signature, severity, score, explanation, observed, baseline "
            "FROM alerts WHERE entity = ? ORDER BY ts DESC LIMIT 100",
            [entity],
        )
    )
    traffic = rows_as_dicts(
        con.execute(
            "SELECT count(*) AS flows, "
            "coalesce(sum(CASE WHEN src_ip = ? THEN bytes_toserver ELSE bytes_toclient END), 0) "
            "AS bytes_out, "
            "coalesce(sum(CASE WHEN src_ip = ? THEN bytes_toclient ELSE bytes_toserver END), 0) "
            "AS bytes_in, count(DISTINCT CASE WHEN src_ip = ? THEN dest_ip ELSE src_ip END) "
            'AS peers, min(start) AS first_seen, max("end") AS last_seen '
            "FROM flows WHERE src_ip = ? OR dest_ip = ?",
            [entity, entity, entity, entity, entity],
        )
    )[0]
    users: list[str] = []
    if has_table(con, "auth"):
        users = [
            r[0]
            for r in con.execute(
                'SELECT DISTINCT "user" FROM auth WHERE (src_ip = ? OR dest_ip = ?) '
                'AND "user" IS NOT NULL ORDER BY 1 LIMIT 50',
                [entity, entity],
            ).fetchall()
        ]
    return {
        "entity": entity,
        "incidents": incidents,
        "alerts": alerts,
        "traffic": traffic,
        "users": users,
    }
