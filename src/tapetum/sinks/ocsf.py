"""OCSF 1.1 JSON lines: alerts and incidents as Detection Finding (2004), flows as Network
Activity (4001).

Field names follow the OCSF 1.1.0 schema (schema.ocsf.io). Times are milliseconds since the epoch
(`timestamp_t`). Tapetum's own extras (entity, category, observed/baseline) travel in
`unmapped.tapetum` or inside `evidences[].data`, where OCSF allows free JSON. Application events
(DNS, TLS, HTTP, SSH, auth) are not exported here; they are counted in `skipped`.
`tapetum/schema/ocsf.detection_finding.schema.json` and `ocsf.network_activity.schema.json`
cover the required attributes and the types of everything emitted.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import msgspec

from tapetum import __version__
from tapetum.detectors.common import is_internal
from tapetum.flows.meter import FlowBatch
from tapetum.records import Alert, Incident
from tapetum.sinks.base import Record

OCSF_VERSION = "1.1.0"
EventDict = dict[str, Any]

PRODUCT = {"name": "Tapetum", "vendor_name": "Tapetum", "version": __version__}

#: Tapetum severity (1 high .. 3 low) -> OCSF severity_id and its caption.
SEVERITY = {1: (4, "High"), 2: (3, "Medium"), 3: (2, "Low")}

#: ATT&CK enterprise tactic ids by the lower-case-hyphenated names used in alerts.
TACTICS = {
    "reconnaissance": "TA0043",
    "resource-development": "TA0042",
    "initial-access": "TA0001",
    "execution": "TA0002",
    "persistence": "TA0003",
    "privilege-escalation": "TA0004",
    "defense-evasion": "TA0005",
    "credential-access": "TA0006",
    "discovery": "TA0007",
    "lateral-movement": "TA0008",
    "collection": "TA0009",
    "command-and-control": "TA0011",
    "exfiltration": "TA0010",
    "impact": "TA0040",
}
ATTACK_VERSION = "14"

#: How each detector decides, as OCSF analytic type_id (1 Rule, 2 Behavioral, 3 Statistical,
#: 4 Learning (ML/DL)); unknown detectors are Statistical.
ANALYTIC_TYPES = {
    "intel": 1,
    "protocol": 1,
    "uba": 2,
    "lateral": 2,
    "anomaly": 4,
    "kitsune": 4,
    "dga": 4,
}
ANALYTIC_NAMES = {1: "Rule", 2: "Behavioral", 3: "Statistical", 4: "Learning (ML/DL)"}

#: Network direction relative to the monitored (internal) networks: OCSF direction_id.
DIRECTIONS = {0: "Unknown", 1: "Inbound", 2: "Outbound", 3: "Lateral"}

PROTO_NUMS = {"TCP": 6, "UDP": 17, "ICMP": 1, "IPV6-ICMP": 58, "ICMPV6": 58, "SCTP": 132}


def ms(ns: int) -> int:
    return int(ns) // 1_000_000


def direction_id(
    src: str | None, dst: str | None, internal: Callable[[str], bool] = is_internal
) -> int:
    """OCSF direction relative to the monitored networks; `internal` tells which addresses are
    inside (a pseudonymising wrapper passes one that knows the originals)."""
    if not src or not dst:
        return 0
    si, di = internal(src), internal(dst)
    if si and di:
        return 3
    if si:
        return 2
    return 1 if di else 0


def _tactic_obj(name: str) -> dict[str, str]:
    caption = " ".join(w.capitalize() for w in name.split("-")).replace(" And ", " and ")
    return {"uid": TACTICS.get(name, ""), "name": caption}


def attacks(techniques: tuple[str, ...], tactics: tuple[str, ...]) -> list[EventDict]:
    """One OCSF attack object per technique, carrying the alert's tactics."""
    tacts = [_tactic_obj(t) for t in tactics]
    out: list[EventDict] = []
    for tech in techniques:
        att: EventDict = {"technique": {"uid": tech}, "version": ATTACK_VERSION}
        if tacts:
            att["tactic"] = tacts[0]
            att["tactics"] = tacts
        out.append(att)
    if not techniques and tacts:
        out.append({"tactic": tacts[0], "tactics": tacts, "version": ATTACK_VERSION})
    return out


def _endpoint(ip: str | None, port: int | None) -> EventDict | None:
    if ip is None:
        return None
    ep: EventDict = {"ip": ip}
    if port is not None:
        ep["port"] = int(port)
    return ep


def _confidence(score: float) -> EventDict:
    cid = 3 if score >= 0.9 else 2 if score >= 0.6 else 1
    return {
        "confidence_id": cid,
        "confidence": {1: "Low", 2: "Medium", 3: "High"}[cid],
        "confidence_score": round(max(0.0, min(1.0, score)) * 100),
    }


def _finding_base(uid: str, ts_ns: int, severity: int, message: str) -> EventDict:
    sev_id, sev = SEVERITY.get(severity, (0, "Unknown"))
    return {
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": 1,
        "activity_name": "Create",
        "type_uid": 200401,
        "type_name": "Detection Finding: Create",
        "severity_id": sev_id,
        "severity": sev,
        "status_id": 1,
        "status": "New",
        "is_alert": True,
        "time": ms(ts_ns),
        "message": message,
        "metadata": {
            "version": OCSF_VERSION,
            "product": PRODUCT,
            "uid": uid,
            "log_name": "tapetum",
        },
    }


def alert_finding(a: Alert, internal: Callable[[str], bool] = is_internal) -> EventDict:
    """One alert as a Detection Finding."""
    ev = _finding_base(a.alert_id, a.ts_ns, a.severity, a.explanation)
    detector = a.signature.split(".", 1)[0]
    atype = ANALYTIC_TYPES.get(detector, 3)
    from tapetum.alerts.correlate import TITLES

    info: EventDict = {
        "uid": a.alert_id,
        "title": TITLES.get(a.signature, a.signature),
        "desc": a.explanation,
        "types": [a.category],
        "analytic": {
            "uid": str(a.signature_id),
            "name": a.signature,
            "type_id": atype,
            "type": ANALYTIC_NAMES[atype],
        },
    }
    att = attacks(a.mitre_technique_id, a.mitre_tactic)
    if att:
        info["attacks"] = att
    if a.first_ts_ns is not None:
        info["first_seen_time"] = ms(a.first_ts_ns)
        ev["start_time"] = ms(a.first_ts_ns)
    if a.last_ts_ns is not None:
        info["last_seen_time"] = ms(a.last_ts_ns)
        ev["end_time"] = ms(a.last_ts_ns)
    ev["finding_info"] = info
    ev.update(_confidence(a.score))
    evidence: EventDict = {
        "data": {"entity": a.entity, "observed": a.observed, "baseline": a.baseline}
    }
    src, dst = _endpoint(a.src_ip, a.src_port), _endpoint(a.dest_ip, a.dest_port)
    if src is not None:
        evidence["src_endpoint"] = src
    if dst is not None:
        evidence["dst_endpoint"] = dst
    if a.proto is not None or src is not None:
        conn: EventDict = {"direction_id": direction_id(a.src_ip, a.dest_ip, internal)}
        conn["direction"] = DIRECTIONS[conn["direction_id"]]
        if a.proto is not None:
            conn["protocol_name"] = a.proto.lower()
            if a.proto.upper() in PROTO_NUMS:
                conn["protocol_num"] = PROTO_NUMS[a.proto.upper()]
        if a.community_id:
            conn["uid"] = a.community_id
        evidence["connection_info"] = conn
    ev["evidences"] = [evidence]
    ev["unmapped"] = {
        "tapetum": {
            "entity": a.entity,
            "category": a.category,
            "score": round(a.score, 6),
            "signature_id": a.signature_id,
        }
    }
    if a.flow_id is not None:
        ev["unmapped"]["tapetum"]["flow_id"] = a.flow_id
    return ev


def incident_finding(i: Incident) -> EventDict:
    """An incident as a Detection Finding whose related events are its alerts."""
    ev = _finding_base(i.incident_id, i.ts_ns, i.severity, i.summary)
    info: EventDict = {
        "uid": i.incident_id,
        "title": i.title,
        "desc": i.summary,
        "types": ["incident", *i.categories],
        "analytic": {
            "uid": "tapetum.correlator",
            "name": "tapetum.correlator",
            "type_id": 2,
            "type": ANALYTIC_NAMES[2],
        },
        "first_seen_time": ms(i.first_ts_ns),
        "last_seen_time": ms(i.last_ts_ns),
        "related_events": [{"uid": aid, "type_uid": 200401} for aid in i.alert_ids],
        "related_events_count": i.alert_count,
    }
    att = attacks(i.mitre_technique_id, i.mitre_tactic)
    if att:
        info["attacks"] = att
    ev["finding_info"] = info
    ev["start_time"] = ms(i.first_ts_ns)
    ev["end_time"] = ms(i.last_ts_ns)
    ev["count"] = i.alert_count
    ev.update(_confidence(i.confidence))
    evidences: list[EventDict] = []
    for dst in i.dest_ips or (None,):
        e: EventDict = {"data": {"entity": i.entity, "stage": i.stage}}
        if i.src_ip is not None:
            e["src_endpoint"] = {"ip": i.src_ip}
        if dst is not None:
            e["dst_endpoint"] = {"ip": dst}
        evidences.append(e)
    ev["evidences"] = evidences
    ev["unmapped"] = {
        "tapetum": {
            "entity": i.entity,
            "stage": i.stage,
            "signatures": list(i.signatures),
            "users": list(i.users),
        }
    }
    return ev


def flow_activities(
    fb: FlowBatch, services: list[str], internal: Callable[[str], bool] = is_internal
) -> list[EventDict]:
    """One Network Activity (activity Traffic) per finished flow."""
    n = len(fb)
    if n == 0:
        return []
    cols = {
        k: fb.num[k].tolist()
        for k in (
            "flow_id", "start_ns", "end_ns", "proto", "src_port", "dest_port",
            "pkts_toserver", "pkts_toclient", "bytes_toserver", "bytes_toclient",
        )
    }  # fmt: skip
    protos = fb.proto_names()
    out: list[EventDict] = []
    for k in range(n):
        src, dst = fb.src_ip[k], fb.dest_ip[k]
        did = direction_id(src, dst, internal)
        b_out, b_in = cols["bytes_toserver"][k], cols["bytes_toclient"][k]
        p_out, p_in = cols["pkts_toserver"][k], cols["pkts_toclient"][k]
        conn: EventDict = {
            "protocol_name": protos[k].lower(),
            "protocol_num": cols["proto"][k],
            "protocol_ver_id": 6 if ":" in src else 4,
            "direction_id": did,
            "direction": DIRECTIONS[did],
        }
        if fb.community_id:
            conn["uid"] = fb.community_id[k]
        ev: EventDict = {
            "class_uid": 4001,
            "class_name": "Network Activity",
            "category_uid": 4,
            "category_name": "Network Activity",
            "activity_id": 6,
            "activity_name": "Traffic",
            "type_uid": 400106,
            "type_name": "Network Activity: Traffic",
            "severity_id": 1,
            "severity": "Informational",
            "time": ms(cols["end_ns"][k]),
            "start_time": ms(cols["start_ns"][k]),
            "end_time": ms(cols["end_ns"][k]),
            "metadata": {
                "version": OCSF_VERSION,
                "product": PRODUCT,
                "uid": str(cols["flow_id"][k]),
                "log_name": "tapetum",
            },
            "src_endpoint": {"ip": src, "port": cols["src_port"][k]},
            "dst_endpoint": {"ip": dst, "port": cols["dest_port"][k]},
            "connection_info": conn,
            "traffic": {
                "bytes_out": b_out,
                "bytes_in": b_in,
                "bytes": b_out + b_in,
                "packets_out": p_out,
                "packets_in": p_in,
                "packets": p_out + p_in,
            },
        }
        if services[k]:
            ev["app_name"] = services[k]
        if fb.conn_state:
            ev["unmapped"] = {"tapetum": {"conn_state": fb.conn_state[k]}}
        out.append(ev)
    return out


class LineWriter:
    """JSON lines to a file path or an open binary stream (shared by the OCSF and ECS sinks)."""

    def __init__(self, target: str | Path | IO[bytes]) -> None:
        if isinstance(target, str | Path):
            self._fh: IO[bytes] = open(target, "wb")  # noqa: SIM115 - closed in close()
            self._own = True
        else:
            self._fh = target
            self._own = False
        self._enc = msgspec.json.Encoder()
        #: Which addresses are inside the monitored networks (replaced when pseudonymised).
        self.internal: Callable[[str], bool] = is_internal
        self.events = 0
        #: Records this format has no mapping for, by type name.
        self.skipped: dict[str, int] = {}

    def emit(self, events: list[EventDict]) -> None:
        if events:
            self._fh.write(b"\n".join(self._enc.encode(e) for e in events) + b"\n")
            self.events += len(events)

    def skip(self, r: Record) -> None:
        name = type(r).__name__
        self.skipped[name] = self.skipped.get(name, 0) + 1

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self.flush()
        if self._own:
            self._fh.close()


class OcsfSink(LineWriter):
    def __init__(self, target: str | Path | IO[bytes], *, flows: bool = True) -> None:
        super().__init__(target)
        self._flows = flows

    def write_flows(self, flows: FlowBatch, services: list[str]) -> None:
        if self._flows:
            self.emit(flow_activities(flows, services, self.internal))

    def write(self, records: list[Record]) -> None:
        out: list[EventDict] = []
        for r in records:
            if isinstance(r, Alert):
                out.append(alert_finding(r, self.internal))
            elif isinstance(r, Incident):
                out.append(incident_finding(r))
            else:
                self.skip(r)
        self.emit(out)
