"""Correlate alerts into incidents: by entity, split where the entity is quiet for `gap_s`.

A 100,000-probe scan is one alert per window and target, and all of them about one source in one
active period make one incident, with a count, a timeline and a summary in plain words. Incidents
are ordered along the kill chain by their ATT&CK tactics.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

from tapetum.records import Alert, Incident

#: Kill-chain order of ATT&CK tactics, used for the incident stage.
STAGES = (
    "reconnaissance",
    "resource-development",
    "initial-access",
    "execution",
    "persistence",
    "privilege-escalation",
    "defense-evasion",
    "credential-access",
    "discovery",
    "lateral-movement",
    "collection",
    "command-and-control",
    "exfiltration",
    "impact",
)


#: How incident titles name detectors; a detector not listed shows its signature.
TITLES = {
    "scan.vertical": "vertical port scan",
    "scan.horizontal": "horizontal scan",
    "dnstunnel.tunnel": "DNS tunnel",
    "dnstunnel.exfil": "exfiltration over DNS",
    "exfil.upload": "bulk upload to an external destination",
    "exfil.host_upload": "unusual upload volume",
    "bruteforce.guessing": "password guessing",
    "bruteforce.spraying": "password spraying",
    "beacon.periodic": "C2 beaconing",
    "beacon.name": "C2 beaconing to a name",
    "beacon.session": "C2 beaconing in one connection",
    "scan.arp_sweep": "ARP sweep",
    "protocol.self_signed_cert": "self-signed TLS certificate",
    "protocol.expired_cert": "expired or not yet valid TLS certificate",
    "protocol.sni_mismatch": "TLS certificate not matching the server name",
    "protocol.rare_ja4": "rare TLS client fingerprint",
    "protocol.unexpected_port": "protocol on a non-standard port",
    "protocol.cleartext_credentials": "cleartext credentials",
    "intel.match": "threat-intelligence match",
    "lateral.fanout": "lateral movement to new internal hosts",
    "lateral.chain": "lateral movement chain (pivot)",
    "dos.syn_flood": "SYN flood",
    "dos.udp_flood": "UDP flood",
    "dos.icmp_flood": "ICMP flood",
    "dos.slow_http": "slow HTTP denial of service",
    "anomaly.flow": "flow unlike anything learnt",
    "anomaly.host": "host activity far above its baseline",
    "dga.domains": "DGA domain lookups",
    "dga.nxdomain_burst": "burst of failed DNS lookups (NXDOMAIN)",
    "kitsune.packets": "packets unlike the learnt traffic",
    "uba.unusual_time": "login at an unusual time for the user",
    "uba.new_country": "login from a new country for the user",
    "uba.impossible_travel": "impossible travel between logins",
    "uba.sensitive_asset": "unusual access to a sensitive asset",
    "uba.success_after_burst": "successful login after a burst of failures",
}


def _stage(tactics: set[str]) -> str:
    ranked = [t for t in STAGES if t in tactics]
    return ranked[-1] if ranked else "unknown"


class Correlator:
    def __init__(self, gap_s: float = 3600.0) -> None:
        self.gap_ns = int(gap_s * 1e9)
        self._alerts: list[Alert] = []

    def add(self, alerts: list[Alert]) -> None:
        self._alerts.extend(alerts)

    def incidents(self) -> list[Incident]:
        by_entity: dict[str, list[Alert]] = defaultdict(list)
        for a in self._alerts:
            by_entity[a.entity].append(a)
        out: list[Incident] = []
        for entity in sorted(by_entity):
            alerts = sorted(by_entity[entity], key=lambda a: (a.ts_ns, a.alert_id))
            group: list[Alert] = []
            last = None
            for a in alerts:
                start = a.first_ts_ns if a.first_ts_ns is not None else a.ts_ns
                if group and last is not None and start - last > self.gap_ns:
                    out.append(_incident(entity, group))
                    group = []
                group.append(a)
                end = a.last_ts_ns if a.last_ts_ns is not None else a.ts_ns
                last = end if last is None else max(last, end)
            if group:
                out.append(_incident(entity, group))
        out.sort(key=lambda i: (i.severity, i.first_ts_ns, i.incident_id))
        return out


def _incident(entity: str, alerts: list[Alert]) -> Incident:
    first = min(a.first_ts_ns if a.first_ts_ns is not None else a.ts_ns for a in alerts)
    last = max(a.last_ts_ns if a.last_ts_ns is not None else a.ts_ns for a in alerts)
    sigs = sorted({a.signature for a in alerts})
    cats = sorted({a.category for a in alerts})
    techniques = sorted({t for a in alerts for t in a.mitre_technique_id})
    tactics = {t for a in alerts for t in a.mitre_tactic}
    dests = sorted({a.dest_ip for a in alerts if a.dest_ip})
    # Independent-evidence combination: each alert's score is a probability-like confidence.
    miss = 1.0
    for a in alerts:
        miss *= 1.0 - min(max(a.score, 0.0), 1.0)
    confidence = 1.0 - miss
    stage = _stage(tactics)
    strongest = max(alerts, key=lambda a: (a.score, -a.severity))
    n = len(alerts)
    # Anomalies carry no ATT&CK tactic: their incidents are "unusual activity", not "unknown".
    lead = "Unusual activity" if stage == "unknown" else stage.replace("-", " ").capitalize()
    title = f"{lead} by {entity}: " + ", ".join(TITLES.get(s, s) for s in sigs)
    more = "" if n == 1 else f" ({n} alerts; strongest shown)"
    summary = f"{strongest.explanation}{more}"
    key = f"{entity}|{alerts[0].alert_id}"
    return Incident(
        incident_id=hashlib.sha1(key.encode()).hexdigest()[:16],
        ts_ns=first,
        first_ts_ns=first,
        last_ts_ns=last,
        entity=entity,
        title=title,
        summary=summary,
        severity=min(a.severity for a in alerts),
        confidence=confidence,
        alert_count=n,
        alert_ids=tuple(a.alert_id for a in alerts),
        signatures=tuple(sigs),
        categories=tuple(cats),
        mitre_technique_id=tuple(techniques),
        mitre_tactic=tuple(t for t in STAGES if t in tactics),
        stage=stage,
        src_ip=entity,
        dest_ips=tuple(dests[:100]),
    )
