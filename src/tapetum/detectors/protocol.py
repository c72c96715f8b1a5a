"""TLS and protocol anomalies: bad server certificates, services on ports of other services,
cleartext credentials, rare TLS client fingerprints.

Input: the TLS, HTTP and SSH events of the parsers (`observe_events`); each event carries its
flow's 5-tuple, so flows are only used to advance data time. Findings of single events come from
`features.protocol` (pure); this module adds memory:

- Episodes: one alert per (client, anomaly, server / SNI / fingerprint) while it keeps
  happening; the alert is emitted `window_s` of data time after the first sighting with the count
  so far; later sightings in the same episode are counted, not alerted again; an episode ends
  after `episode_gap_s` of quiet.
- Fingerprint prevalence (JA4, else JA3): the hosts that used each client fingerprint (two are
  enough to know it is not one host's) and how often it was seen. After a warm-up (enough
  handshakes from enough hosts) a fingerprint used by one host only, below `rare_max_share` of
  all handshakes, is rare. Uses that alerted are not learnt (a beacon cannot make its own
  fingerprint common), the hosts are always recorded.

ATT&CK: T1573 Encrypted Channel (certificates, rare client), T1571 Non-Standard Port,
T1552 Unsecured Credentials / T1040 Network Sniffing (cleartext credentials).
Entity: the client that connected (src); dest is the server the anomaly is about.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tapetum.config import ProtocolAnomalySection
from tapetum.detectors.common import AlertIds, by_time, check_state, fmt_duration
from tapetum.detectors.windows import Episode, EpisodeKey, Episodes
from tapetum.features.protocol import (
    KIND_CLEARTEXT_CREDENTIALS,
    KIND_EXPIRED,
    KIND_RARE_FINGERPRINT,
    KIND_SELF_SIGNED,
    KIND_SNI_MISMATCH,
    KIND_UNEXPECTED_PORT,
    EventRow,
    Finding,
    event_rows,
)
from tapetum.flows.meter import FlowBatch
from tapetum.records import Alert, AppEvent

STATE_VERSION = 1
CATEGORY = "protocol-anomaly"

#: kind -> (signature id, score, severity, ATT&CK techniques, tactics)
KINDS: dict[str, tuple[int, float, int, tuple[str, ...], tuple[str, ...]]] = {
    KIND_SELF_SIGNED: (9_000_080, 0.6, 3, ("T1573",), ("command-and-control",)),
    KIND_EXPIRED: (9_000_081, 0.6, 3, ("T1573",), ("command-and-control",)),
    KIND_SNI_MISMATCH: (9_000_082, 0.7, 2, ("T1573",), ("command-and-control",)),
    KIND_RARE_FINGERPRINT: (9_000_083, 0.55, 3, ("T1573",), ("command-and-control",)),
    KIND_UNEXPECTED_PORT: (9_000_084, 0.8, 2, ("T1571",), ("command-and-control",)),
    KIND_CLEARTEXT_CREDENTIALS: (
        9_000_085,
        0.75,
        2,
        ("T1552", "T1040"),
        ("credential-access",),
    ),
}
#: A service on a port outside its own list that no other service claims (strict mode only).
STRICT_PORT_SCORE = 0.55


class ProtocolDetector:
    name = "protocol"

    def __init__(self, config: ProtocolAnomalySection | None = None) -> None:
        self.config = c = config or ProtocolAnomalySection()
        kinds = {
            KIND_SELF_SIGNED: c.self_signed,
            KIND_EXPIRED: c.expired,
            KIND_SNI_MISMATCH: c.sni_mismatch,
            KIND_UNEXPECTED_PORT: c.unexpected_port,
            KIND_CLEARTEXT_CREDENTIALS: c.cleartext_credentials,
        }
        self._enabled = frozenset(k for k, on in kinds.items() if on)
        #: Learned: fingerprint -> [uses learnt, hosts seen (at most 2: one is all we ask)].
        self.fingerprints_: dict[str, list[Any]] = {}
        #: Learned: client hellos with a fingerprint, all of them (the denominator of shares).
        self.handshakes_ = 0
        #: Learned: distinct client hosts, kept only up to the warm-up count.
        self.warm_hosts_: list[str] = []
        self.fingerprints_dropped = 0
        self._episodes = Episodes(c.window_s, c.episode_gap_s, c.max_episodes)
        self._ids = AlertIds()

    # -- contract on feature rows ------------------------------------------------------------

    def features(self, flows: FlowBatch, events: Sequence[AppEvent] = ()) -> list[EventRow]:
        """One row per TLS, HTTP and SSH event (flows are not used)."""
        return self._rows(events)

    def _rows(self, events: Sequence[AppEvent]) -> list[EventRow]:
        c = self.config
        return event_rows(
            events,
            c.port_services,
            strict_ports=c.unexpected_port_strict,
            enabled=self._enabled,
            not_yet_valid_max_days=c.not_yet_valid_max_days,
        )

    def entities(self, rows: list[EventRow]) -> list[str]:
        return [r.src_ip for r in rows]

    def _warm(self) -> bool:
        c = self.config
        return (
            self.handshakes_ >= c.rare_warmup_handshakes
            and len(self.warm_hosts_) >= c.rare_warmup_hosts
        )

    def _rare(self, fp: str, host: str) -> bool:
        """Used by this host only (as far as we know) and rarely, after the warm-up."""
        if not fp or not self.config.rare_fingerprint or not self._warm():
            return False
        known = self.fingerprints_.get(fp)
        if known is None:
            return len(self.fingerprints_) < self.config.max_fingerprints
        uses, hosts = known
        if any(h != host for h in hosts):
            return False
        return bool(uses < self.config.rare_max_share * self.handshakes_)

    def _finding_score(self, f: Finding) -> float:
        if f.kind == KIND_UNEXPECTED_PORT and not f.observed.get("port_of_other_service"):
            return STRICT_PORT_SCORE
        return KINDS[f.kind][1]

    def score(self, rows: list[EventRow]) -> np.ndarray:
        """Per row: the score of its worst finding (0 when none); rare fingerprints 0.55."""
        out = np.zeros(len(rows), dtype=np.float64)
        for k, r in enumerate(rows):
            s = max((self._finding_score(f) for f in r.findings), default=0.0)
            if self._rare(r.fingerprint, r.src_ip):
                s = max(s, KINDS[KIND_RARE_FINGERPRINT][1])
            out[k] = s
        return out

    def _note_host(self, host: str) -> None:
        if len(self.warm_hosts_) < self.config.rare_warmup_hosts and host not in self.warm_hosts_:
            self.warm_hosts_.append(host)

    def _learn_fingerprint(self, fp: str, host: str, count: bool) -> None:
        known = self.fingerprints_.get(fp)
        if known is None:
            if len(self.fingerprints_) >= self.config.max_fingerprints:
                self.fingerprints_dropped += 1
                return
            known = self.fingerprints_[fp] = [0, []]
        if count:
            known[0] += 1
        if host not in known[1] and len(known[1]) < 2:
            known[1].append(host)

    def learn(self, rows: list[EventRow]) -> None:
        """Fingerprint prevalence from rows taken as normal."""
        for r in rows:
            if r.fingerprint:
                self.handshakes_ += 1
                self._note_host(r.src_ip)
                self._learn_fingerprint(r.fingerprint, r.src_ip, True)

    def explain(self, rows: list[EventRow], idx: np.ndarray) -> list[str]:
        out = []
        for k in idx.tolist():
            r = rows[k]
            parts = [f.detail for f in r.findings]
            if self._rare(r.fingerprint, r.src_ip):
                parts.append(self._rare_text(r.fingerprint))
            text = "; ".join(parts) if parts else "nothing unusual"
            out.append(f"{r.src_ip}: {text}")
        return out

    def _rare_text(self, fp: str) -> str:
        kind = "JA3" if fp.startswith("ja3:") else "JA4"
        value = fp.removeprefix("ja3:")
        return f"used TLS client fingerprint {value} ({kind}), seen from no other host"

    def state(self) -> dict[str, Any]:
        c = self.config
        return {
            "detector": self.name,
            "version": STATE_VERSION,
            "params": {
                "rare_warmup_handshakes": c.rare_warmup_handshakes,
                "rare_warmup_hosts": c.rare_warmup_hosts,
                "rare_max_share": c.rare_max_share,
            },
            "handshakes": self.handshakes_,
            "warm_hosts": list(self.warm_hosts_),
            "fingerprints": {k: [int(v[0]), list(v[1])] for k, v in self.fingerprints_.items()},
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], config: ProtocolAnomalySection | None = None
    ) -> ProtocolDetector:
        check_state(state, cls.name, STATE_VERSION)
        det = cls(config)
        det.handshakes_ = int(state["handshakes"])
        det.warm_hosts_ = [str(h) for h in state["warm_hosts"]]
        det.fingerprints_ = {
            str(k): [int(v[0]), [str(h) for h in v[1]]] for k, v in state["fingerprints"].items()
        }
        return det

    # -- streaming ---------------------------------------------------------------------------

    def observe(self, flows: FlowBatch) -> None:
        """Flows only advance data time: the anomalies are in the events."""
        if len(flows):
            self._episodes.advance(int(flows.num["end_ns"].max()))

    def observe_events(self, events: Sequence[AppEvent]) -> None:
        if not events:
            return
        eps = self._episodes
        for r in self._rows(events):
            eps.advance(r.ts_ns)
            server = f"{r.dest_ip}:{r.dest_port}"
            for f in r.findings:
                eps.see((r.src_ip, f.kind, f.key), r.ts_ns, (r, f), server)
            if r.fingerprint:
                rare = self._rare(r.fingerprint, r.src_ip)
                if rare:
                    finding = Finding(
                        KIND_RARE_FINGERPRINT, r.fingerprint, self._rare_text(r.fingerprint)
                    )
                    eps.see((r.src_ip, KIND_RARE_FINGERPRINT, r.fingerprint), r.ts_ns,
                            (r, finding), server)  # fmt: skip
                self.handshakes_ += 1
                self._note_host(r.src_ip)
                # A use that alerted is not learnt; its host is (a second host ends rarity).
                self._learn_fingerprint(r.fingerprint, r.src_ip, not rare)

    def poll(self, watermark_ns: int | None = None) -> list[Alert]:
        return self._alerts(self._episodes.due(watermark_ns))

    def flush(self) -> list[Alert]:
        return self._alerts(self._episodes.flush())

    def _alerts(self, due: list[tuple[EpisodeKey, Episode]]) -> list[Alert]:
        alerts = []
        for (entity, kind, key), ep in due:
            row, finding = ep.data
            if kind == KIND_RARE_FINGERPRINT:
                known = self.fingerprints_.get(key)
                if known is not None and any(h != entity for h in known[1]):
                    continue  # another host used it since: not one host's client after all
            alerts.append(self._alert(entity, kind, key, ep, row, finding))
        return by_time(alerts)

    def _alert(
        self, entity: str, kind: str, key: str, ep: Episode, row: EventRow, f: Finding
    ) -> Alert:
        sid, score, severity, technique, tactic = KINDS[kind]
        if kind == KIND_UNEXPECTED_PORT and not f.observed.get("port_of_other_service"):
            score, severity = STRICT_PORT_SCORE, 3
        span = (ep.last_ns - ep.first_ns) / 1e9
        times = f"{ep.count:,} connection{'s' if ep.count != 1 else ''}"
        if ep.count > 1:
            times += f" in {fmt_duration(span)}"
        servers = ""
        if len(ep.servers) > 1:
            servers = f", {len(ep.servers)} servers"
        baseline: dict[str, float]
        if kind == KIND_RARE_FINGERPRINT:
            known = self.fingerprints_.get(key)
            uses = float(known[0]) if known else 0.0
            share = uses / self.handshakes_ if self.handshakes_ else 0.0
            normal = (
                f"normal: client fingerprints shared by several hosts; this one: 1 host, "
                f"{share:.2%} of the {self.handshakes_:,} handshakes learnt "
                f"(rare: 1 host and below {self.config.rare_max_share:.0%})"
            )
            baseline = {
                "hosts_with_fingerprint": 1.0,
                "share_of_handshakes": round(share, 6),
                "max_share": self.config.rare_max_share,
            }
        elif kind == KIND_UNEXPECTED_PORT:
            normal = "normal: each service on its own standard ports"
            baseline = {"port_of_other_service": 0.0}
        elif kind == KIND_CLEARTEXT_CREDENTIALS:
            normal = "normal: credentials only inside TLS"
            baseline = {"basic_auth_requests": 0.0}
        else:
            normal = "normal: a valid CA-issued certificate naming the server"
            baseline = {k: 0.0 for k in f.observed}
        text = f"{entity}: {f.detail}; {times}{servers}; {normal}"
        sig = f"protocol.{kind}"
        return Alert(
            alert_id=self._ids(f"{sig}|{entity}|{key}|{ep.first_ns}"),
            ts_ns=ep.first_ns,
            signature=sig,
            signature_id=sid,
            category=CATEGORY,
            severity=severity,
            score=score,
            explanation=text,
            entity=entity,
            mitre_technique_id=technique,
            mitre_tactic=tactic,
            src_ip=row.src_ip,
            dest_ip=row.dest_ip,
            dest_port=row.dest_port,
            proto=row.proto,
            flow_id=row.flow_id,
            first_ts_ns=ep.first_ns,
            last_ts_ns=ep.last_ns,
            observed={**f.observed, "connections": float(ep.count), "duration_s": round(span, 6)},
            baseline=baseline,
        )
