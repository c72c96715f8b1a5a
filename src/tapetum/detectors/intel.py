"""Threat-intelligence matches: flows and application events against loaded indicators.

Indicators come from the store's `intel` table (`[detectors.intel] store`, which `tapetum
analyze` fills in with its --store) and from indicator files named in `[detectors.intel] files`;
see `tapetum.intel`. Matched: flow source and destination addresses (exact and CIDR, vectorised),
DNS query names, answer names and addresses, TLS SNI, JA3, JA4 and certificate SHA-1, HTTP host
and URL. An indicator outside its validity at the data time of the flow or event does not match.

One alert per (internal host, indicator) per episode (`window_s` after the first match, counted
until quiet for `episode_gap_s`), naming the indicator, its type, source, confidence and
description. Severity from confidence (>= 75 high, >= 40 medium, else low). ATT&CK from the
indicator (STIX kill chain phases, `indicates` relationships), else T1071 Application Layer
Protocol for addresses, names and URLs and T1573 Encrypted Channel for TLS fingerprints and
certificates, tactic command-and-control.

Nothing is learnt: `learn` does nothing, the state names the detector and the indicator count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tapetum.config import IntelSection
from tapetum.detectors.common import AlertIds, by_time, check_state, fmt_duration, is_internal
from tapetum.detectors.windows import Episode, EpisodeKey, Episodes
from tapetum.flows.meter import FlowBatch
from tapetum.intel.indicators import Indicator
from tapetum.intel.matcher import Matcher
from tapetum.records import Alert, AppEvent, DnsEvent, FlowRef, HttpEvent, TlsEvent

STATE_VERSION = 1
SIGNATURE = "intel.match"
CATEGORY = "intel"
#: Signature id per indicator type (one signature, "intel.match", ids 9_000_090 ...).
SIDS = {
    "ip": 9_000_090,
    "cidr": 9_000_091,
    "domain": 9_000_092,
    "url": 9_000_093,
    "ja3": 9_000_094,
    "ja4": 9_000_095,
    "x509-sha1": 9_000_096,
}


@dataclass(frozen=True, slots=True)
class Match:
    """One matched observation: who, what indicator, where it was seen."""

    ts_ns: int
    entity: str
    src_ip: str
    dest_ip: str
    dest_port: int | None
    proto: str
    flow_id: int | None
    indicator: int
    #: What was seen, in words ("connected to 203.0.113.9:443/tcp", "looked up a.evil.example").
    seen: str
    #: The flow's row in its batch (-1 for events).
    row: int = -1


@dataclass(frozen=True, slots=True)
class IntelRows:
    """Feature rows: one per flow and per event; `indicator` -1 where nothing matched."""

    entity: list[str]
    indicator: np.ndarray
    confidence: np.ndarray
    seen: list[str]

    def __len__(self) -> int:
        return len(self.entity)


def severity_of(confidence: int) -> int:
    return 1 if confidence >= 75 else 2 if confidence >= 40 else 3


def score_of(confidence: np.ndarray) -> np.ndarray:
    """0.5 (any listed indicator alerts) rising to 1.0 at confidence 100."""
    return np.asarray(0.5 + np.clip(confidence, 0, 100) / 200.0, dtype=np.float64)


def _entity(matched: str, other: str) -> str:
    """The internal host involved: the other side when it is internal, else the listed side
    when that is internal, else the other side."""
    if is_internal(other):
        return other
    return matched if is_internal(matched) else other


class IntelDetector:
    name = "intel"

    def __init__(
        self, indicators: Sequence[Indicator] = (), config: IntelSection | None = None
    ) -> None:
        self.config = c = config or IntelSection()
        self.matcher = Matcher(indicators, c.min_confidence)
        self._episodes = Episodes(c.window_s, c.episode_gap_s, c.max_episodes)
        self._ids = AlertIds()

    @classmethod
    def from_config(cls, config: IntelSection | None = None) -> IntelDetector:
        """Load the indicators the config names (store table and files)."""
        from tapetum.intel.parse import load_indicator_files
        from tapetum.intel.store import load_path

        c = config or IntelSection()
        indicators: list[Indicator] = []
        if c.store:
            indicators += load_path(c.store)
        indicators += load_indicator_files(list(c.files))
        return cls(indicators, c)

    # -- matching ----------------------------------------------------------------------------

    def _flow_matches(self, flows: FlowBatch) -> list[Match]:
        m = self.matcher
        if len(flows) == 0 or not m.has_addresses:
            return []
        ts = flows.num["start_ns"]
        out: list[Match] = []
        names: list[str] = []
        for side in ("src", "dst"):
            hi = flows.src_hi if side == "src" else flows.dst_hi
            lo = flows.src_lo if side == "src" else flows.dst_lo
            ids = m.match_addresses(hi, lo, ts)
            for k in np.flatnonzero(ids >= 0).tolist():  # matches only: few
                names = names or flows.proto_names()
                src, dst = flows.src_ip[k], flows.dest_ip[k]
                port = int(flows.num["dest_port"][k])
                proto = names[k]
                listed, other = (src, dst) if side == "src" else (dst, src)
                entity = _entity(listed, other)
                if side == "dst":
                    seen = f"connected to {dst} port {port}/{proto.lower()}"
                else:
                    seen = f"was contacted by {src} (port {port}/{proto.lower()} on {dst})"
                if entity == listed:
                    seen = f"{'sent to' if side == 'src' else 'received from'} {other}: " + seen
                out.append(
                    Match(
                        int(ts[k]),
                        entity,
                        src,
                        dst,
                        port,
                        proto,
                        int(flows.num["flow_id"][k]),
                        int(ids[k]),
                        seen,
                        k,
                    )
                )
        return out

    def _event_matches(self, events: Sequence[AppEvent]) -> list[Match]:
        m = self.matcher
        if len(m) == 0:
            return []
        out: list[Match] = []

        def add(f: FlowRef, ts: int, ind: int, seen: str) -> None:
            if ind >= 0:
                ent = _entity(f.dest_ip, f.src_ip)
                out.append(
                    Match(ts, ent, f.src_ip, f.dest_ip, f.dest_port, f.proto, f.flow_id, ind, seen)
                )

        for e in events:
            f, ts = e.flow, e.ts_ns
            if isinstance(e, DnsEvent):
                add(f, ts, m.match_domain(e.rrname, ts), f"looked up {e.rrname}")
                for a in e.answers:
                    if a.rrtype in ("A", "AAAA"):
                        ind = m.match_ip_text(a.rdata, ts)
                        add(f, ts, ind, f"resolved {e.rrname} to {a.rdata}")
                    elif a.rrtype in ("CNAME", "NS", "MX", "PTR", "SRV") and a.rdata:
                        name = a.rdata.split()[-1]
                        add(f, ts, m.match_domain(name, ts), f"got {e.rrname} -> {name}")
            elif isinstance(e, TlsEvent):
                where = f"{f.dest_ip}:{f.dest_port}"
                add(f, ts, m.match_domain(e.sni, ts), f"opened TLS to {e.sni} ({where})")
                add(f, ts, m.match_ja3(e.ja3_hash, ts), f"sent JA3 {e.ja3_hash} to {where}")
                add(f, ts, m.match_ja4(e.ja4, ts), f"sent JA4 {e.ja4} to {where}")
                add(
                    f, ts, m.match_certificate(e.fingerprint, ts),
                    f"got certificate {e.fingerprint} ({e.subject}) from {where}",
                )  # fmt: skip
            elif isinstance(e, HttpEvent):
                host = (e.hostname or "").split(":")[0]
                add(f, ts, m.match_domain(host, ts), f"requested http://{host}{e.url[:100]}")
                if e.hostname:
                    url = f"http://{e.hostname}{e.url}"
                    add(f, ts, m.match_url(url, ts), f"requested {url[:120]}")
        return out

    # -- contract on feature rows ------------------------------------------------------------

    def features(self, flows: FlowBatch, events: Sequence[AppEvent] = ()) -> IntelRows:
        """One row per flow (entity: its source unless a match names the internal host) and
        one per matched event; the indicator and its confidence where something matched."""
        n = len(flows)
        entity = list(flows.src_ip) if n else []
        ind = np.full(n, -1, dtype=np.int64)
        seen = [""] * n
        for mt in self._flow_matches(flows):
            k = mt.row
            cur = int(ind[k])
            if cur < 0 or self.matcher.confidence[mt.indicator] > self.matcher.confidence[cur]:
                ind[k], entity[k], seen[k] = mt.indicator, mt.entity, mt.seen
        extra = self._event_matches(events)
        entity += [mt.entity for mt in extra]
        seen += [mt.seen for mt in extra]
        ind = np.concatenate([ind, np.array([mt.indicator for mt in extra], dtype=np.int64)])
        conf = np.full(ind.shape[0], -1, dtype=np.int64)
        if len(self.matcher):
            conf = np.where(ind >= 0, self.matcher.confidence[np.maximum(ind, 0)], -1)
        return IntelRows(entity, ind, conf, seen)

    def entities(self, rows: IntelRows) -> list[str]:
        return list(rows.entity)

    def learn(self, rows: IntelRows) -> None:
        """Indicators are imported, not learnt."""

    def score(self, rows: IntelRows) -> np.ndarray:
        return np.where(rows.indicator >= 0, score_of(rows.confidence), 0.0)

    def explain(self, rows: IntelRows, idx: np.ndarray) -> list[str]:
        out = []
        for k in idx.tolist():
            i = int(rows.indicator[k])
            if i < 0:
                out.append(f"{rows.entity[k]}: no indicator matched")
            else:
                out.append(f"{rows.entity[k]} {rows.seen[k]}: {self._describe(i)}")
        return out

    def _describe(self, i: int) -> str:
        ind = self.matcher.indicators[i]
        what = f"listed by threat intel source {ind.source!r} as {ind.type} {ind.value}"
        facts = [f"confidence {ind.confidence}"]
        if ind.name:
            facts.append(repr(ind.name))
        if ind.description and ind.description != ind.name:
            facts.append(repr(ind.description[:160]))
        if ind.labels:
            facts.append(f"labels {', '.join(ind.labels[:5])}")
        also = self.matcher.also.get(i)
        if also:
            facts.append(f"also listed by {', '.join(also[:5])}")
        return f"{what} ({'; '.join(facts)})"

    def state(self) -> dict[str, Any]:
        return {"detector": self.name, "version": STATE_VERSION, "indicators": len(self.matcher)}

    @classmethod
    def from_state(cls, state: dict[str, Any], config: IntelSection | None = None) -> IntelDetector:
        check_state(state, cls.name, STATE_VERSION)
        return cls.from_config(config) if config is not None else cls((), None)

    # -- streaming ---------------------------------------------------------------------------

    def _see(self, matches: list[Match]) -> None:
        for mt in matches:
            ind = self.matcher.indicators[mt.indicator]
            key = (mt.entity, SIGNATURE, f"{ind.type}|{ind.value}")
            self._episodes.see(key, mt.ts_ns, mt, f"{mt.dest_ip}:{mt.dest_port}")

    def observe(self, flows: FlowBatch) -> None:
        if len(flows) == 0:
            return
        self._episodes.advance(int(flows.num["end_ns"].max()))
        self._see(self._flow_matches(flows))

    def observe_events(self, events: Sequence[AppEvent]) -> None:
        if events:
            self._episodes.advance(max(e.ts_ns for e in events))
            self._see(self._event_matches(events))

    def poll(self, watermark_ns: int | None = None) -> list[Alert]:
        return self._alerts(self._episodes.due(watermark_ns))

    def flush(self) -> list[Alert]:
        return self._alerts(self._episodes.flush())

    def _alerts(self, due: list[tuple[EpisodeKey, Episode]]) -> list[Alert]:
        return by_time([self._alert(key[0], ep) for key, ep in due])

    def _alert(self, entity: str, ep: Episode) -> Alert:
        mt: Match = ep.data
        ind = self.matcher.indicators[mt.indicator]
        default = ("T1573",) if ind.type in ("ja3", "ja4", "x509-sha1") else ("T1071",)
        span = (ep.last_ns - ep.first_ns) / 1e9
        times = f"{ep.count:,} time{'s' if ep.count != 1 else ''}"
        if ep.count > 1:
            times += f" in {fmt_duration(span)}"
        text = (
            f"{entity} {mt.seen}, {self._describe(mt.indicator)}; matched {times}; "
            "normal: no contact with listed indicators"
        )
        return Alert(
            alert_id=self._ids(f"{SIGNATURE}|{entity}|{ind.type}|{ind.value}|{ep.first_ns}"),
            ts_ns=ep.first_ns,
            signature=SIGNATURE,
            signature_id=SIDS[ind.type],
            category=CATEGORY,
            severity=severity_of(ind.confidence),
            score=float(score_of(np.array([ind.confidence]))[0]),
            explanation=text,
            entity=entity,
            mitre_technique_id=ind.techniques or default,
            mitre_tactic=ind.tactics or ("command-and-control",),
            src_ip=mt.src_ip,
            dest_ip=mt.dest_ip,
            dest_port=mt.dest_port,
            proto=mt.proto or None,
            flow_id=mt.flow_id,
            first_ts_ns=ep.first_ns,
            last_ts_ns=ep.last_ns,
            observed={
                "matches": float(ep.count),
                "duration_s": round(span, 6),
                "confidence": float(ind.confidence),
            },
            baseline={"matches": 0.0},
        )
