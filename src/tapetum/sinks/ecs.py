"""Elastic Common Schema 8.x documents, one per line (for Filebeat/Elastic Agent or `_bulk`).

Alerts and incidents are `event.kind: alert` (categories network + intrusion_detection), flows are
`event.kind: event` (category network, types connection + end). Tapetum's own fields (entity,
observed/baseline, stage) are under `tapetum.*`, which ECS leaves to custom use. `event.severity`
and `event.risk_score` follow Elastic's detection-rule convention (low 21, medium 47, high 73).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from tapetum import __version__
from tapetum.detectors.common import is_internal
from tapetum.flows.meter import FlowBatch
from tapetum.records import Alert, Incident
from tapetum.sinks.base import Record
from tapetum.sinks.ocsf import LineWriter, direction_id

ECS_VERSION = "8.11.0"
EventDict = dict[str, Any]

#: Tapetum severity (1 high .. 3 low) -> ECS event.severity / Elastic severity name.
SEVERITY = {1: (73, "high"), 2: (47, "medium"), 3: (21, "low")}
#: ECS network.direction from the OCSF-style direction id (internal networks' view).
NET_DIRECTION = {0: "unknown", 1: "inbound", 2: "outbound", 3: "internal"}
OBSERVER = {"vendor": "Tapetum", "product": "Tapetum", "type": "ids", "version": __version__}


def iso(ns: int) -> str:
    """ECS @timestamp: ISO 8601 UTC with nanoseconds."""
    return str(np.datetime64(int(ns), "ns")) + "Z"


def _threat(techniques: tuple[str, ...], tactics: tuple[str, ...]) -> EventDict | None:
    if not techniques and not tactics:
        return None
    th: EventDict = {"framework": "MITRE ATT&CK"}
    if techniques:
        th["technique"] = {
            "id": list(techniques),
            "reference": [
                "https://attack.mitre.org/techniques/" + t.replace(".", "/") + "/"
                for t in techniques
            ],
        }
    if tactics:
        from tapetum.sinks.ocsf import TACTICS

        th["tactic"] = {
            "name": list(tactics),
            "id": [TACTICS[t] for t in tactics if t in TACTICS],
        }
    return th


def _ep(ip: str | None, port: int | None) -> EventDict | None:
    if ip is None:
        return None
    out: EventDict = {"ip": ip, "address": ip}
    if port is not None:
        out["port"] = int(port)
    return out


def alert_doc(a: Alert, internal: Callable[[str], bool] = is_internal) -> EventDict:
    sev, sev_name = SEVERITY.get(a.severity, (0, "unknown"))
    from tapetum.alerts.correlate import TITLES

    doc: EventDict = {
        "@timestamp": iso(a.ts_ns),
        "ecs": {"version": ECS_VERSION},
        "message": a.explanation,
        "event": {
            "kind": "alert",
            "category": ["network", "intrusion_detection"],
            "type": ["info"],
            "id": a.alert_id,
            "module": "tapetum",
            "dataset": "tapetum.alert",
            "severity": sev,
            "risk_score": round(a.score * 100, 2),
            "start": iso(a.first_ts_ns if a.first_ts_ns is not None else a.ts_ns),
            "end": iso(a.last_ts_ns if a.last_ts_ns is not None else a.ts_ns),
        },
        "rule": {
            "id": str(a.signature_id),
            "name": a.signature,
            "description": TITLES.get(a.signature, a.signature),
            "category": a.category,
            "ruleset": "tapetum",
        },
        "observer": OBSERVER,
        "tapetum": {
            "entity": a.entity,
            "severity_name": sev_name,
            "score": round(a.score, 6),
            "observed": a.observed,
            "baseline": a.baseline,
        },
    }
    for key, ep in (
        ("source", _ep(a.src_ip, a.src_port)),
        ("destination", _ep(a.dest_ip, a.dest_port)),
    ):
        if ep is not None:
            doc[key] = ep
    net: EventDict = {}
    if a.proto:
        net["transport"] = a.proto.lower()
    if a.community_id:
        net["community_id"] = a.community_id
    if a.src_ip and a.dest_ip:
        net["direction"] = NET_DIRECTION[direction_id(a.src_ip, a.dest_ip, internal)]
    if net:
        doc["network"] = net
    th = _threat(a.mitre_technique_id, a.mitre_tactic)
    if th:
        doc["threat"] = th
    ips = sorted({ip for ip in (a.src_ip, a.dest_ip) if ip})
    if ips:
        doc["related"] = {"ip": ips}
    return doc


def incident_doc(i: Incident) -> EventDict:
    sev, sev_name = SEVERITY.get(i.severity, (0, "unknown"))
    doc: EventDict = {
        "@timestamp": iso(i.ts_ns),
        "ecs": {"version": ECS_VERSION},
        "message": i.summary,
        "event": {
            "kind": "alert",
            "category": ["network", "intrusion_detection"],
            "type": ["info"],
            "id": i.incident_id,
            "module": "tapetum",
            "dataset": "tapetum.incident",
            "severity": sev,
            "risk_score": round(i.confidence * 100, 2),
            "start": iso(i.first_ts_ns),
            "end": iso(i.last_ts_ns),
        },
        "rule": {"name": i.title, "category": ",".join(i.categories), "ruleset": "tapetum"},
        "observer": OBSERVER,
        "tapetum": {
            "entity": i.entity,
            "severity_name": sev_name,
            "stage": i.stage,
            "alert_count": i.alert_count,
            "alert_ids": list(i.alert_ids),
            "signatures": list(i.signatures),
        },
    }
    if i.src_ip:
        doc["source"] = {"ip": i.src_ip, "address": i.src_ip}
    if len(i.dest_ips) == 1:
        doc["destination"] = {"ip": i.dest_ips[0], "address": i.dest_ips[0]}
    ips = sorted({*i.dest_ips, *([i.src_ip] if i.src_ip else [])})
    related: EventDict = {}
    if ips:
        related["ip"] = ips
    if i.users:
        related["user"] = list(i.users)
    if related:
        doc["related"] = related
    th = _threat(i.mitre_technique_id, i.mitre_tactic)
    if th:
        doc["threat"] = th
    return doc


def flow_docs(
    fb: FlowBatch, services: list[str], internal: Callable[[str], bool] = is_internal
) -> list[EventDict]:
    n = len(fb)
    if n == 0:
        return []
    num = {k: v.tolist() for k, v in fb.num.items()}
    protos = fb.proto_names()
    out: list[EventDict] = []
    for k in range(n):
        src, dst = fb.src_ip[k], fb.dest_ip[k]
        b_out, b_in = num["bytes_toserver"][k], num["bytes_toclient"][k]
        p_out, p_in = num["pkts_toserver"][k], num["pkts_toclient"][k]
        start, end = num["start_ns"][k], num["end_ns"][k]
        net: EventDict = {
            "transport": protos[k].lower(),
            "iana_number": str(num["proto"][k]),
            "type": "ipv6" if ":" in src else "ipv4",
            "direction": NET_DIRECTION[direction_id(src, dst, internal)],
            "bytes": b_out + b_in,
            "packets": p_out + p_in,
        }
        if fb.community_id:
            net["community_id"] = fb.community_id[k]
        if services[k]:
            net["protocol"] = services[k]
        doc: EventDict = {
            "@timestamp": iso(start),
            "ecs": {"version": ECS_VERSION},
            "event": {
                "kind": "event",
                "category": ["network"],
                "type": ["connection", "end"],
                "id": str(num["flow_id"][k]),
                "module": "tapetum",
                "dataset": "tapetum.flow",
                "start": iso(start),
                "end": iso(end),
                "duration": int(end - start),
            },
            "source": {
                "ip": src,
                "address": src,
                "port": num["src_port"][k],
                "bytes": b_out,
                "packets": p_out,
            },
            "destination": {
                "ip": dst,
                "address": dst,
                "port": num["dest_port"][k],
                "bytes": b_in,
                "packets": p_in,
            },
            "network": net,
            "related": {"ip": sorted({src, dst})},
            "observer": OBSERVER,
        }
        if fb.conn_state:
            doc["tapetum"] = {"conn_state": fb.conn_state[k], "history": fb.history[k]}
        out.append(doc)
    return out


class EcsSink(LineWriter):
    def __init__(self, target: str | Path | IO[bytes], *, flows: bool = True) -> None:
        super().__init__(target)
        self._flows = flows

    def write_flows(self, flows: FlowBatch, services: list[str]) -> None:
        if self._flows:
            self.emit(flow_docs(flows, services, self.internal))

    def write(self, records: list[Record]) -> None:
        out: list[EventDict] = []
        for r in records:
            if isinstance(r, Alert):
                out.append(alert_doc(r, self.internal))
            elif isinstance(r, Incident):
                out.append(incident_doc(r))
            else:
                self.skip(r)
        self.emit(out)
