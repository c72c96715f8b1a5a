"""Search flows, DNS and TLS records in the store (web UI and API): filters as `?` parameters,
sort columns from a whitelist, one page at a time with the total count."""

from __future__ import annotations

from typing import Any

import duckdb

from tapetum.store.incidents import Where, order_by, page, rows_as_dicts

FLOW_SORTS = {
    "start": "start",
    "end": '"end"',
    "duration_s": "duration_s",
    "bytes": "(bytes_toserver + bytes_toclient)",
    "bytes_toserver": "bytes_toserver",
    "bytes_toclient": "bytes_toclient",
    "pkts": "(pkts_toserver + pkts_toclient)",
}
DNS_SORTS = {"ts": "ts", "query": "query", "rtt_ms": "rtt_ms"}
TLS_SORTS = {"ts": "ts", "sni": "sni"}


def _common(
    w: Where,
    time_col: str,
    *,
    ip: str | None,
    src_ip: str | None,
    dest_ip: str | None,
    port: int | None,
    flow_id: int | None,
    community_id: str | None,
    since_ns: int | None,
    until_ns: int | None,
) -> None:
    if ip:
        w.add("(src_ip = ? OR dest_ip = ?)", ip, ip)
    w.equals("src_ip", src_ip)
    w.equals("dest_ip", dest_ip)
    if port is not None:
        w.add("(src_port = ? OR dest_port = ?)", port, port)
    w.equals("flow_id", flow_id)
    w.equals("community_id", community_id)
    w.time_range(time_col, since_ns, until_ns)


def _run(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: str,
    w: Where,
    ordering: str,
    limit: int,
    offset: int,
) -> dict[str, Any]:
    paging, pparams = page(limit, offset)
    total = con.execute(f"SELECT count(*) FROM {table}" + w.sql(), w.params).fetchone()
    cur = con.execute(
        f"SELECT {columns} FROM {table}" + w.sql() + ordering + paging, [*w.params, *pparams]
    )
    return {"total": int(total[0]) if total else 0, "items": rows_as_dicts(cur)}


def search_flows(
    con: duckdb.DuckDBPyConnection,
    *,
    ip: str | None = None,
    src_ip: str | None = None,
    dest_ip: str | None = None,
    port: int | None = None,
    proto: str | None = None,
    service: str | None = None,
    conn_state: str | None = None,
    flow_id: int | None = None,
    community_id: str | None = None,
    since_ns: int | None = None,
    until_ns: int | None = None,
    sort: str = "start",
    order: str = "desc",
    limit: int = 100,
    offset: int = 0,
) -> dict[str, Any]:
    w = Where()
    _common(
        w, "start", ip=ip, src_ip=src_ip, dest_ip=dest_ip, port=port, flow_id=flow_id,
        community_id=community_id, since_ns=since_ns, until_ns=until_ns,
    )  # fmt: skip
    w.equals("proto", proto)
    w.equals("service", service)
    w.equals("conn_state", conn_state)
    cols = (
        'run_id, flow_id, community_id, start, "end", duration_s, src_ip, src_port, dest_ip, '
        "dest_port, proto, service, pkts_toserver, pkts_toclient, bytes_toserver, "
        "bytes_toclient, conn_state, history, reason"
    )
    return _run(con, "flows", cols, w, order_by(sort, order, FLOW_SORTS), limit, offset)


def search_dns(
    con: duckdb.DuckDBPyConnection,
    *,
    query: str | None = None,
    qtype: str | None = None,
    rcode: str | None = None,
    ip: str | None = None,
    src_ip: str | None = None,
    dest_ip: str | None = None,
    port: int | None = None,
    flow_id: int | None = None,
    community_id: str | None = None,
    since_ns: int | None = None,
    until_ns: int | None = None,
    sort: str = "ts",
    order: str = "desc",
    limit: int = 100,
    offset: int = 0,
) -> dict[str, Any]:
    w = Where()
    _common(
        w, "ts", ip=ip, src_ip=src_ip, dest_ip=dest_ip, port=port, flow_id=flow_id,
        community_id=community_id, since_ns=since_ns, until_ns=until_ns,
    )  # fmt: skip
    w.contains("query", query)
    w.equals("qtype", qtype)
    w.equals("rcode", rcode)
    cols = (
        "run_id, ts, flow_id, community_id, src_ip, src_port, dest_ip, dest_port, proto, type, "
        "query, qtype, rcode, rtt_ms, answers"
    )
    return _run(con, "dns", cols, w, order_by(sort, order, DNS_SORTS), limit, offset)


def search_tls(
    con: duckdb.DuckDBPyConnection,
    *,
    sni: str | None = None,
    ja3: str | None = None,
    ja4: str | None = None,
    subject: str | None = None,
    self_signed: bool | None = None,
    ip: str | None = None,
    src_ip: str | None = None,
    dest_ip: str | None = None,
    port: int | None = None,
    flow_id: int | None = None,
    community_id: str | None = None,
    since_ns: int | None = None,
    until_ns: int | None = None,
    sort: str = "ts",
    order: str = "desc",
    limit: int = 100,
    offset: int = 0,
) -> dict[str, Any]:
    w = Where()
    _common(
        w, "ts", ip=ip, src_ip=src_ip, dest_ip=dest_ip, port=port, flow_id=flow_id,
        community_id=community_id, since_ns=since_ns, until_ns=until_ns,
    )  # fmt: skip
    w.contains("sni", sni)
    w.equals("ja3", ja3)
    w.equals("ja4", ja4)
    w.contains("subject", subject)
    w.equals("self_signed", self_signed)
    cols = (
        "run_id, ts, flow_id, community_id, src_ip, src_port, dest_ip, dest_port, transport, "
        "sni, version, cipher_suite, ja3, ja4, subject, issuerdn, notbefore, notafter, "
        "self_signed"
    )
    return _run(con, "tls", cols, w, order_by(sort, order, TLS_SORTS), limit, offset)
