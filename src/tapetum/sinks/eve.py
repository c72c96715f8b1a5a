"""EVE-shaped JSON objects: a shared envelope plus one nested object named after the event type.

The envelope follows Suricata's EVE JSON (timestamp, flow_id, community_id, event_type, src_ip,
src_port, dest_ip, dest_port, proto, vlan). For ICMP the ports carry the ICMP type and the
counterpart type/code (Zeek's convention). The schema is `tapetum/schema/eve.schema.json`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tapetum.flows.meter import FlowBatch
from tapetum.records import (
    Alert,
    AuthEvent,
    DnsEvent,
    FlowRef,
    HttpEvent,
    Incident,
    SshEvent,
    TlsEvent,
)

EventDict = dict[str, Any]


def ts_text(ns: int) -> str:
    """Suricata's timestamp format, UTC: 2026-03-02T10:00:00.123456+0000."""
    return str(np.datetime64(int(ns) // 1000, "us")) + "+0000"


def ts_text_array(ns: np.ndarray) -> list[str]:
    texts = np.datetime_as_string((ns // 1000).astype("datetime64[us]"), unit="us")
    return [t + "+0000" for t in texts.tolist()]


def vlan_list(vlan: int) -> list[int]:
    outer, inner = divmod(int(vlan), 4096)
    if outer == 0 and inner == 0:
        return []
    return [outer, inner] if inner else [outer]


def _envelope(ts_ns: int, event_type: str, flow: FlowRef | None) -> EventDict:
    ev: EventDict = {"timestamp": ts_text(ts_ns), "event_type": event_type}
    if flow is not None:
        ev["flow_id"] = flow.flow_id
        ev["community_id"] = flow.community_id
        ev["src_ip"] = flow.src_ip
        ev["src_port"] = flow.src_port
        ev["dest_ip"] = flow.dest_ip
        ev["dest_port"] = flow.dest_port
        ev["proto"] = flow.proto
        if flow.vlan:
            ev["vlan"] = list(flow.vlan)
    return ev


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != () and v != []}


def _attack(techniques: tuple[str, ...], tactics: tuple[str, ...]) -> dict[str, Any]:
    """Suricata-style metadata: lists of ATT&CK technique ids and tactic names."""
    return _drop_none({"mitre_technique_id": list(techniques), "mitre_tactic_name": list(tactics)})


def flow_events(
    fb: FlowBatch, services: list[str], with_sequences: bool = False
) -> list[EventDict]:
    """One `flow` event per flow, Suricata naming plus Tapetum's Zeek-style extras."""
    n = len(fb)
    if n == 0:
        return []
    num = fb.num
    starts = ts_text_array(num["start_ns"])
    ends = ts_text_array(num["end_ns"])
    protos = fb.proto_names()
    states = fb.flow_state()
    reasons = fb.reason_names()
    cols = {k: v.tolist() for k, v in num.items()}
    dur = fb.duration_s.tolist()
    flags = fb.tcp_flags.tolist()
    out: list[EventDict] = []
    for k in range(n):
        flow: EventDict = {
            "pkts_toserver": cols["pkts_toserver"][k],
            "pkts_toclient": cols["pkts_toclient"][k],
            "bytes_toserver": cols["bytes_toserver"][k],
            "bytes_toclient": cols["bytes_toclient"][k],
            "start": starts[k],
            "end": ends[k],
            "age": int(dur[k]),
            "state": states[k],
            "reason": reasons[k],
            "duration_s": round(dur[k], 6),
            "conn_state": fb.conn_state[k],
            "history": fb.history[k],
            "ip_bytes_toserver": cols["ip_bytes_toserver"][k],
            "ip_bytes_toclient": cols["ip_bytes_toclient"][k],
            "payload_bytes_toserver": cols["payload_bytes_toserver"][k],
            "payload_bytes_toclient": cols["payload_bytes_toclient"][k],
        }
        if services[k]:
            flow["service"] = services[k]
        ev: EventDict = {
            "timestamp": starts[k],
            "event_type": "flow",
            "flow_id": cols["flow_id"][k],
            "community_id": fb.community_id[k],
            "src_ip": fb.src_ip[k],
            "src_port": cols["src_port"][k],
            "dest_ip": fb.dest_ip[k],
            "dest_port": cols["dest_port"][k],
            "proto": protos[k],
        }
        vl = vlan_list(cols["vlan"][k])
        if vl:
            ev["vlan"] = vl
        if cols["proto"][k] == 6:
            f = flags[k]
            ts_bits = sum(1 << b for b in range(8) if f[b])
            tc_bits = sum(1 << b for b in range(8) if f[8 + b])
            ev["tcp"] = {
                "tcp_flags": f"{ts_bits | tc_bits:02x}",
                "tcp_flags_ts": f"{ts_bits:02x}",
                "tcp_flags_tc": f"{tc_bits:02x}",
                "syn": bool(f[1] or f[9]),
                "fin": bool(f[0] or f[8]),
                "rst": bool(f[2] or f[10]),
                "psh": bool(f[3] or f[11]),
                "ack": bool(f[4] or f[12]),
                "urg": bool(f[5] or f[13]),
            }
        if with_sequences:
            m = int(fb.seq_n[k])
            t = fb.seq_ts[k, :m]
            flow["first_packets"] = {
                "size": fb.seq_size[k, :m].tolist(),
                "direction": fb.seq_dir[k, :m].tolist(),
                "iat_ms": (np.diff(t, prepend=t[:1]) / 1e6).tolist(),
            }
        ev["flow"] = flow
        out.append(ev)
    return out


def dns_event(e: DnsEvent) -> EventDict:
    ev = _envelope(e.ts_ns, "dns", e.flow)
    ev["dns"] = _drop_none(
        {
            "type": e.type,
            "id": e.id,
            "rrname": e.rrname,
            "rrtype": e.rrtype,
            "rcode": e.rcode,
            "flags": list(e.flags) or None,
            "rtt_ms": e.rtt_ms,
            "answers": [
                {"rrname": a.rrname, "rrtype": a.rrtype, "ttl": a.ttl, "rdata": a.rdata}
                for a in e.answers
            ]
            or None,
        }
    )
    return ev


def tls_event(e: TlsEvent) -> EventDict:
    ev = _envelope(e.ts_ns, "tls", e.flow)
    tls: dict[str, Any] = {
        "sni": e.sni,
        "version": e.version,
        "client_versions": list(e.client_versions) or None,
        "cipher_suite": e.cipher_suite,
        "client_alpns": list(e.client_alpns) or None,
        "server_alpns": list(e.server_alpns) or None,
        "subject": e.subject,
        "issuerdn": e.issuerdn,
        "serial": e.serial,
        "fingerprint": e.fingerprint,
        "notbefore": e.notbefore,
        "notafter": e.notafter,
        "self_signed": e.self_signed,
        "san": list(e.san) or None,
        "ja4": e.ja4,
        "transport": e.transport,
    }
    if e.ja3_hash:
        tls["ja3"] = {"hash": e.ja3_hash, "string": e.ja3_string}
    if e.ja3s_hash:
        tls["ja3s"] = {"hash": e.ja3s_hash, "string": e.ja3s_string}
    ev["tls"] = _drop_none(tls)
    return ev


def http_event(e: HttpEvent) -> EventDict:
    ev = _envelope(e.ts_ns, "http", e.flow)
    ev["http"] = _drop_none(
        {
            "hostname": e.hostname,
            "url": e.url,
            "http_method": e.http_method,
            "protocol": e.protocol,
            "http_user_agent": e.http_user_agent,
            "status": e.status,
            "length": e.length,
            "http_content_type": e.http_content_type,
            "http_refer": e.http_refer,
            "authorization_basic": e.authorization_basic or None,
        }
    )
    return ev


def ssh_event(e: SshEvent) -> EventDict:
    ev = _envelope(e.ts_ns, "ssh", e.flow)
    ssh: dict[str, Any] = {}
    for side, ep in (("client", e.client), ("server", e.server)):
        if ep is not None:
            ssh[side] = _drop_none(
                {
                    "proto_version": ep.proto_version,
                    "software_version": ep.software_version,
                    "comments": ep.comments,
                }
            )
    ev["ssh"] = ssh
    return ev


def alert_event(a: Alert) -> EventDict:
    ev: EventDict = {"timestamp": ts_text(a.ts_ns), "event_type": "alert"}
    for k in ("flow_id", "community_id", "src_ip", "src_port", "dest_ip", "dest_port", "proto"):
        v = getattr(a, k)
        if v is not None:
            ev[k] = v
    ev["alert"] = _drop_none(
        {
            "action": "allowed",
            "gid": 1,
            "signature_id": a.signature_id,
            "rev": 1,
            "signature": a.signature,
            "category": a.category,
            "severity": a.severity,
            "score": round(a.score, 6),
            "explanation": a.explanation,
            "entity": a.entity,
            "alert_id": a.alert_id,
            "first_seen": ts_text(a.first_ts_ns) if a.first_ts_ns is not None else None,
            "last_seen": ts_text(a.last_ts_ns) if a.last_ts_ns is not None else None,
            "observed": a.observed or None,
            "baseline": a.baseline or None,
            "metadata": _attack(a.mitre_technique_id, a.mitre_tactic),
        }
    )
    return ev


def incident_event(i: Incident) -> EventDict:
    ev: EventDict = {"timestamp": ts_text(i.ts_ns), "event_type": "incident"}
    if i.src_ip is not None:
        ev["src_ip"] = i.src_ip
    ev["incident"] = _drop_none(
        {
            "incident_id": i.incident_id,
            "title": i.title,
            "summary": i.summary,
            "entity": i.entity,
            "severity": i.severity,
            "confidence": round(i.confidence, 6),
            "stage": i.stage,
            "first_seen": ts_text(i.first_ts_ns),
            "last_seen": ts_text(i.last_ts_ns),
            "alert_count": i.alert_count,
            "alert_ids": list(i.alert_ids),
            "signatures": list(i.signatures),
            "categories": list(i.categories),
            "dest_ips": list(i.dest_ips) or None,
            "users": list(i.users) or None,
            "metadata": _attack(i.mitre_technique_id, i.mitre_tactic),
        }
    )
    return ev


def auth_event(a: AuthEvent) -> EventDict:
    """An authentication attempt from a log (Tapetum's own event type `auth`)."""
    ev: EventDict = {"timestamp": ts_text(a.ts_ns), "event_type": "auth"}
    if a.src_ip is not None:
        ev["src_ip"] = a.src_ip
    if a.src_port is not None:
        ev["src_port"] = a.src_port
    if a.dest_ip is not None:
        ev["dest_ip"] = a.dest_ip
    ev["auth"] = _drop_none(
        {
            "outcome": a.outcome,
            "service": a.service,
            "source": a.source,
            "user": a.user,
            "host": a.host,
            "method": a.method,
            "event_id": a.event_id,
            "logon_type": a.logon_type,
            "reason": a.reason,
        }
    )
    return ev


def record_event(
    r: DnsEvent | TlsEvent | HttpEvent | SshEvent | AuthEvent | Alert | Incident,
) -> EventDict:
    if isinstance(r, DnsEvent):
        return dns_event(r)
    if isinstance(r, TlsEvent):
        return tls_event(r)
    if isinstance(r, HttpEvent):
        return http_event(r)
    if isinstance(r, SshEvent):
        return ssh_event(r)
    if isinstance(r, AuthEvent):
        return auth_event(r)
    if isinstance(r, Alert):
        return alert_event(r)
    return incident_event(r)
