"""DuckDB sink: the embedded store behind `tapetum sql`, the CLI and (later) the web UI.

Flows go in as numpy columns (DuckDB scans a dict of arrays directly, no per-row Python);
records are converted to columns per batch. Each `analyze` run gets a row in `runs`, and every
table carries its `run_id`, so several captures can share one store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from tapetum.errors import StoreError
from tapetum.flows.meter import FlowBatch
from tapetum.records import (
    Alert,
    AuthEvent,
    DnsEvent,
    HttpEvent,
    Incident,
    SshEvent,
    TlsEvent,
)
from tapetum.sinks.base import Record

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, started_at TIMESTAMP, inputs VARCHAR[], tapetum_version VARCHAR,
    summary JSON
);
CREATE TABLE IF NOT EXISTS flows (
    run_id VARCHAR, flow_id BIGINT, community_id VARCHAR,
    start TIMESTAMP_NS, "end" TIMESTAMP_NS, duration_s DOUBLE,
    src_ip VARCHAR, src_port INTEGER, dest_ip VARCHAR, dest_port INTEGER,
    proto VARCHAR, ip_proto UTINYINT, ip_version UTINYINT, vlan INTEGER[], service VARCHAR,
    pkts_toserver BIGINT, pkts_toclient BIGINT, bytes_toserver BIGINT, bytes_toclient BIGINT,
    ip_bytes_toserver BIGINT, ip_bytes_toclient BIGINT,
    payload_bytes_toserver BIGINT, payload_bytes_toclient BIGINT,
    conn_state VARCHAR, history VARCHAR, state VARCHAR, reason VARCHAR,
    syn_toserver INTEGER, syn_toclient INTEGER, fin_toserver INTEGER, fin_toclient INTEGER,
    rst_toserver INTEGER, rst_toclient INTEGER, psh_toserver INTEGER, psh_toclient INTEGER,
    ack_toserver INTEGER, ack_toclient INTEGER,
    first_sizes INTEGER[], first_directions UTINYINT[], first_iat_ms DOUBLE[]
);
CREATE TABLE IF NOT EXISTS dns (
    run_id VARCHAR, ts TIMESTAMP_NS, flow_id BIGINT, community_id VARCHAR,
    src_ip VARCHAR, src_port INTEGER, dest_ip VARCHAR, dest_port INTEGER, proto VARCHAR,
    type VARCHAR, id INTEGER, query VARCHAR, qtype VARCHAR, rcode VARCHAR, rtt_ms DOUBLE,
    flags VARCHAR[], answers VARCHAR[], answer_types VARCHAR[], ttls BIGINT[]
);
CREATE TABLE IF NOT EXISTS tls (
    run_id VARCHAR, ts TIMESTAMP_NS, flow_id BIGINT, community_id VARCHAR,
    src_ip VARCHAR, src_port INTEGER, dest_ip VARCHAR, dest_port INTEGER, proto VARCHAR,
    transport VARCHAR, sni VARCHAR, version VARCHAR, client_versions VARCHAR[],
    cipher_suite VARCHAR, client_alpns VARCHAR[], server_alpns VARCHAR[],
    ja3 VARCHAR, ja3_string VARCHAR, ja3s VARCHAR, ja3s_string VARCHAR, ja4 VARCHAR,
    subject VARCHAR, issuerdn VARCHAR, serial VARCHAR, fingerprint VARCHAR,
    notbefore VARCHAR, notafter VARCHAR, self_signed BOOLEAN, san VARCHAR[]
);
CREATE TABLE IF NOT EXISTS http (
    run_id VARCHAR, ts TIMESTAMP_NS, flow_id BIGINT, community_id VARCHAR,
    src_ip VARCHAR, src_port INTEGER, dest_ip VARCHAR, dest_port INTEGER, proto VARCHAR,
    method VARCHAR, hostname VARCHAR, url VARCHAR, protocol VARCHAR, user_agent VARCHAR,
    status INTEGER, length BIGINT, content_type VARCHAR, referer VARCHAR,
    authorization_basic BOOLEAN
);
CREATE TABLE IF NOT EXISTS ssh (
    run_id VARCHAR, ts TIMESTAMP_NS, flow_id BIGINT, community_id VARCHAR,
    src_ip VARCHAR, src_port INTEGER, dest_ip VARCHAR, dest_port INTEGER, proto VARCHAR,
    client_proto_version VARCHAR, client_software VARCHAR,
    server_proto_version VARCHAR, server_software VARCHAR
);
CREATE TABLE IF NOT EXISTS auth (
    run_id VARCHAR, ts TIMESTAMP_NS, outcome VARCHAR, service VARCHAR, source VARCHAR,
    "user" VARCHAR, src_ip VARCHAR, src_port INTEGER, host VARCHAR, dest_ip VARCHAR,
    method VARCHAR, event_id VARCHAR, logon_type INTEGER, reason VARCHAR
);
CREATE TABLE IF NOT EXISTS alerts (
    run_id VARCHAR, alert_id VARCHAR, ts TIMESTAMP_NS, signature VARCHAR, signature_id INTEGER,
    category VARCHAR, severity INTEGER, score DOUBLE, entity VARCHAR, explanation VARCHAR,
    mitre_technique_id VARCHAR[], mitre_tactic VARCHAR[],
    src_ip VARCHAR, src_port INTEGER, dest_ip VARCHAR, dest_port INTEGER, proto VARCHAR,
    flow_id BIGINT, community_id VARCHAR, first_seen TIMESTAMP_NS, last_seen TIMESTAMP_NS,
    observed JSON, baseline JSON
);
CREATE TABLE IF NOT EXISTS incidents (
    run_id VARCHAR, incident_id VARCHAR, ts TIMESTAMP_NS, first_seen TIMESTAMP_NS,
    last_seen TIMESTAMP_NS, entity VARCHAR, title VARCHAR, summary VARCHAR, severity INTEGER,
    confidence DOUBLE, stage VARCHAR, alert_count INTEGER, alert_ids VARCHAR[],
    signatures VARCHAR[], categories VARCHAR[], mitre_technique_id VARCHAR[],
    mitre_tactic VARCHAR[], src_ip VARCHAR, dest_ips VARCHAR[], users VARCHAR[]
);
-- Stores written before incidents named users.
ALTER TABLE incidents ADD COLUMN IF NOT EXISTS users VARCHAR[];
"""

FLOW_INSERT_ROWS = 100_000
RECORD_INSERT_ROWS = 50_000
TABLES = ("runs", "flows", "dns", "tls", "http", "ssh", "auth", "alerts", "incidents")


def connect(path: str | Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except (duckdb.Error, OSError) as exc:
        raise StoreError(f"{path}: cannot open the store: {exc}") from None
    return con


_TS_COLUMNS = frozenset({"ts", "first_seen", "last_seen"})


def _obj(values: list[Any]) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


class DuckDBSink:
    def __init__(self, path: str | Path, run_id: str) -> None:
        self.path = str(path)
        self.run_id = run_id
        self.con = connect(self.path)
        self.con.execute(SCHEMA)
        self._pending: dict[type, list[Record]] = {}
        self._flow_stage: list[dict[str, np.ndarray]] = []
        self._flow_staged = 0
        self._flow_sql = ""
        self.rows: dict[str, int] = dict.fromkeys(TABLES, 0)

    def begin_run(self, started_at: Any, inputs: list[str], version: str) -> None:
        self.con.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, NULL)", [self.run_id, started_at, inputs, version]
        )

    def end_run(self, summary: dict[str, Any]) -> None:
        self.con.execute(
            "UPDATE runs SET summary = ? WHERE run_id = ?", [json.dumps(summary), self.run_id]
        )

    def _insert(self, table: str, cols: dict[str, Any]) -> None:
        n = len(next(iter(cols.values())))
        if n == 0:
            return
        cols = {"run_id": _obj([self.run_id] * n), **cols}
        frame: dict[str, np.ndarray] = {}
        for k, v in cols.items():
            if isinstance(v, np.ndarray):
                frame[k] = v
            elif k in _TS_COLUMNS:
                # NaT becomes NULL; an object array of datetimes would arrive as integers.
                nat = np.iinfo(np.int64).min
                ints = np.array([nat if x is None else x for x in v], dtype=np.int64)
                frame[k] = ints.view("datetime64[ns]")
            else:
                frame[k] = _obj(list(v))
        names = ", ".join(f'"{k}"' for k in frame)
        self.con.register("_tapetum_batch", frame)
        try:
            self.con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM _tapetum_batch")
        finally:
            self.con.unregister("_tapetum_batch")
        self.rows[table] += n

    def write_flows(self, flows: FlowBatch, services: list[str]) -> None:
        n = len(flows)
        if n == 0:
            return
        num = flows.num
        f = flows.tcp_flags.astype(np.int32)
        cols: dict[str, Any] = {
            "flow_id": num["flow_id"],
            "community_id": _obj(flows.community_id),
            "start": num["start_ns"].view("datetime64[ns]"),
            "end": num["end_ns"].view("datetime64[ns]"),
            "duration_s": flows.duration_s,
            "src_ip": _obj(flows.src_ip),
            "src_port": num["src_port"],
            "dest_ip": _obj(flows.dest_ip),
            "dest_port": num["dest_port"],
            "proto": _obj(flows.proto_names()),
            "ip_proto": num["proto"],
            "ip_version": num["ip_version"],
            "service": _obj([s or None for s in services]),
            "conn_state": _obj(flows.conn_state),
            "history": _obj(flows.history),
            "state": _obj(flows.flow_state()),
            "reason": _obj(flows.reason_names()),
        }
        for name in (
            "pkts_toserver", "pkts_toclient", "bytes_toserver", "bytes_toclient",
            "ip_bytes_toserver", "ip_bytes_toclient", "payload_bytes_toserver",
            "payload_bytes_toclient",
        ):  # fmt: skip
            cols[name] = num[name]
        for b, flag in enumerate(("fin", "syn", "rst", "psh", "ack")):
            cols[f"{flag}_toserver"] = f[:, b]
            cols[f"{flag}_toclient"] = f[:, 8 + b]
        # Lists are built inside DuckDB from plain numeric columns: converting Python lists
        # row by row costs far more than the rest of the insert.
        staged: dict[str, np.ndarray] = {"run_id": _obj([self.run_id] * n), **cols}
        staged["_vlan"] = num["vlan"]
        staged["_seq_n"] = flows.seq_n
        iat = np.diff(flows.seq_ts, axis=1, prepend=flows.seq_ts[:, :1]) / 1e6
        width = flows.seq_size.shape[1]
        for k in range(width):
            staged[f"_s{k}"] = np.ascontiguousarray(flows.seq_size[:, k])
            staged[f"_d{k}"] = np.ascontiguousarray(flows.seq_dir[:, k])
            staged[f"_t{k}"] = np.ascontiguousarray(iat[:, k])
        names = ["run_id", *cols]
        select = [f'"{c}"' for c in names]
        select.append(
            "CASE WHEN _vlan = 0 THEN NULL WHEN _vlan % 4096 = 0 THEN [_vlan // 4096] "
            "ELSE [_vlan // 4096, _vlan % 4096] END"
        )
        for prefix in ("_s", "_d", "_t"):
            items = ", ".join(f"{prefix}{k}" for k in range(width))
            select.append(f"list_slice([{items}], 1, _seq_n)")
        target = [*(f'"{c}"' for c in names), "vlan", "first_sizes", "first_directions",
                  "first_iat_ms"]  # fmt: skip
        self._flow_sql = (
            f"INSERT INTO flows ({', '.join(target)}) "
            f"SELECT {', '.join(select)} FROM _tapetum_flows"
        )
        # Each INSERT costs milliseconds whatever its size: stage flows and insert in bulk.
        self._flow_stage.append(staged)
        self._flow_staged += n
        if self._flow_staged >= FLOW_INSERT_ROWS:
            self._insert_flows()

    def _insert_flows(self) -> None:
        if not self._flow_stage:
            return
        parts, self._flow_stage = self._flow_stage, []
        frame = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        self.con.register("_tapetum_flows", frame)
        try:
            self.con.execute(self._flow_sql)
        finally:
            self.con.unregister("_tapetum_flows")
        self.rows["flows"] += self._flow_staged
        self._flow_staged = 0

    def write(self, records: list[Record]) -> None:
        for r in records:
            self._pending.setdefault(type(r), []).append(r)
        if sum(len(v) for v in self._pending.values()) >= RECORD_INSERT_ROWS:
            self._insert_records()

    def flush(self) -> None:
        self._insert_flows()
        self._insert_records()

    def _insert_records(self) -> None:
        pending, self._pending = self._pending, {}
        for recs in pending.values():
            if recs:
                self._insert(*record_columns(recs))

    def close(self) -> None:
        self.flush()
        self.con.close()


def _get(record: Any, path: str) -> Any:
    """Dotted attribute path; None propagates; tuples become lists, dicts JSON."""
    value = record
    for part in path.split("."):
        if value is None:
            return None
        value = getattr(value, part)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return json.dumps(value)
    return value


_FLOW_REF = [
    ("ts", "ts_ns"), ("flow_id", "flow.flow_id"), ("community_id", "flow.community_id"),
    ("src_ip", "flow.src_ip"), ("src_port", "flow.src_port"), ("dest_ip", "flow.dest_ip"),
    ("dest_port", "flow.dest_port"), ("proto", "flow.proto"),
]  # fmt: skip

#: Record type -> (table, [(column, attribute path)]). Columns not listed stay NULL.
RECORD_COLUMNS: dict[type, tuple[str, list[tuple[str, str]]]] = {
    DnsEvent: ("dns", [
        *_FLOW_REF, ("type", "type"), ("id", "id"), ("query", "rrname"), ("qtype", "rrtype"),
        ("rcode", "rcode"), ("rtt_ms", "rtt_ms"), ("flags", "flags"),
    ]),
    TlsEvent: ("tls", [
        *_FLOW_REF, *((c, c) for c in (
            "transport", "sni", "version", "client_versions", "cipher_suite", "client_alpns",
            "server_alpns", "ja3_string", "ja3s_string", "ja4", "subject", "issuerdn", "serial",
            "fingerprint", "notbefore", "notafter", "self_signed", "san",
        )), ("ja3", "ja3_hash"), ("ja3s", "ja3s_hash"),
    ]),
    HttpEvent: ("http", [
        *_FLOW_REF, ("method", "http_method"), ("hostname", "hostname"), ("url", "url"),
        ("protocol", "protocol"), ("user_agent", "http_user_agent"), ("status", "status"),
        ("length", "length"), ("content_type", "http_content_type"), ("referer", "http_refer"),
        ("authorization_basic", "authorization_basic"),
    ]),
    SshEvent: ("ssh", [
        *_FLOW_REF, ("client_proto_version", "client.proto_version"),
        ("client_software", "client.software_version"),
        ("server_proto_version", "server.proto_version"),
        ("server_software", "server.software_version"),
    ]),
    AuthEvent: ("auth", [
        *((c, c) for c in (
            "outcome", "service", "source", "user", "src_ip", "src_port", "host", "dest_ip",
            "method", "event_id", "logon_type", "reason",
        )), ("ts", "ts_ns"),
    ]),
    Alert: ("alerts", [
        *((c, c) for c in (
            "alert_id", "signature", "signature_id", "category", "severity", "score", "entity",
            "explanation", "mitre_technique_id", "mitre_tactic", "src_ip", "src_port",
            "dest_ip", "dest_port", "proto", "flow_id", "community_id", "observed", "baseline",
        )), ("ts", "ts_ns"), ("first_seen", "first_ts_ns"), ("last_seen", "last_ts_ns"),
    ]),
    Incident: ("incidents", [
        *((c, c) for c in (
            "incident_id", "entity", "title", "summary", "severity", "confidence", "stage",
            "alert_count", "alert_ids", "signatures", "categories", "mitre_technique_id",
            "mitre_tactic", "src_ip", "dest_ips", "users",
        )), ("ts", "ts_ns"), ("first_seen", "first_ts_ns"), ("last_seen", "last_ts_ns"),
    ]),
}  # fmt: skip


def record_columns(recs: list[Any]) -> tuple[str, dict[str, list[Any]]]:
    """Column lists for records of one type."""
    table, spec = RECORD_COLUMNS[type(recs[0])]
    cols = {col: [_get(r, path) for r in recs] for col, path in spec}
    if table == "dns":
        # Answers are stored as parallel lists, one entry per resource record.
        cols["answers"] = [[a.rdata for a in r.answers] for r in recs]
        cols["answer_types"] = [[a.rrtype for a in r.answers] for r in recs]
        cols["ttls"] = [[a.ttl for a in r.answers] for r in recs]
    return table, cols
