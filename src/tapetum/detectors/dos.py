"""Floods and slow DoS (ATT&CK T1498.001 Direct Network Flood, T1499.002 Service Exhaustion Flood).

Rows (`features.dos`) are per victim and window of data time (default 10 s):
- `dos.syn_flood`: half-open TCP attempts per second to one victim port, when most SYNs to that
  port never completed the handshake (hping3 --flood, spoofed or not);
- `dos.udp_flood`: unanswered UDP packets per second to one victim;
- `dos.icmp_flood`: ICMP echo packets per second to one victim;
- `dos.slow_http`: connections from one source to one web port held open at once while moving
  almost nothing (slowloris, slow POST, slow read; rows per window of flow *end*).

A row alerts when its rate reaches `max(floor, baseline_factor × the victim's learnt rate)`;
rows that do not alert are learnt as the victim's normal (the largest rate seen), so a busy
server raises its own bar and a flood cannot teach itself normal.

Entity: a flood where one source sent at least `single_source_share` of the packets is that
source's; a distributed or spoofed flood is about the victim. `dest_ip` is the victim either way.

Consecutive alerting windows of one victim, kind and port merge into one alert (an *episode*) of
at most `episode_max_s`, emitted when the episode ends or reaches that length.

Latency: flows reach the detector when they end. Unanswered SYNs end by the meter's TCP idle
timeout (300 s by default), so a window is final `lag_s` after it closes; slow connections are
seen when they close or go idle for that long (see docs/evaluation/lateral-dos.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tapetum.config import DosSection
from tapetum.detectors.common import (
    AlertIds,
    BoundedDict,
    by_time,
    check_state,
    fmt_bytes,
    fmt_duration,
    reading_state,
)
from tapetum.detectors.windows import NO_TIME
from tapetum.features import columns
from tapetum.features.dos import (
    KIND_ICMP,
    KIND_NAMES,
    KIND_SLOW,
    KIND_SYN,
    KIND_UDP,
    SKETCH_K,
    FloodPartial,
    SlowFlows,
    flood_partial,
    group_ids,
    merge,
    peak_concurrency,
    slow_flows,
)
from tapetum.flows.key import addr_text
from tapetum.flows.meter import FlowBatch
from tapetum.records import Alert, AppEvent

SIGNATURES = ("dos.syn_flood", "dos.udp_flood", "dos.icmp_flood", "dos.slow_http")
SIDS = (9_000_070, 9_000_071, 9_000_072, 9_000_073)
TECHNIQUES = ("T1498.001", "T1498.001", "T1498.001", "T1499.002")
UNITS = (
    "half_open_syn_per_s",
    "unanswered_udp_pkts_per_s",
    "icmp_echo_pkts_per_s",
    "concurrent_slow_connections",
)
STATE_VERSION = 1
#: Partials buffered between merges.
MAX_PARTS = 32


@dataclass(slots=True)
class DosRows:
    """One row per (kind, window, victim, port) — slow HTTP: per source too."""

    kind: np.ndarray
    window: np.ndarray  # window index (floods: window_s; slow: slow_window_s, by flow end)
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    port: np.ndarray  # -1 where the kind is per victim
    src_hi: np.ndarray  # the top source (slow: the source)
    src_lo: np.ndarray
    rate: np.ndarray  # per second (slow: connections open at once)
    bytes_per_s: np.ndarray
    share: np.ndarray  # SYN: half-open share of the SYNs; UDP: unanswered share; else 1
    sources: np.ndarray  # distinct sources (estimate above features.dos.SKETCH_K)
    top_share: np.ndarray  # share of the flood packets from the top source
    flows: np.ndarray
    first_ns: np.ndarray
    last_ns: np.ndarray

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    @staticmethod
    def concat(parts: list[DosRows]) -> DosRows:
        return columns.concat(DosRows, parts)

    def take(self, m: np.ndarray) -> DosRows:
        return columns.take(self, m)


#: Rates are per second of activity within the window, over at least this many seconds (a
#: burst of a few packets is not a rate).
MIN_ACTIVE_S = 2.0


def flood_rows(p: FloodPartial, window_s: float) -> DosRows:
    hi, lo, top = p.top()
    active_s = np.clip((p.last_ns - p.first_ns) / 1e9, min(MIN_ACTIVE_S, window_s), window_s)
    return DosRows(
        kind=p.kind,
        window=p.window,
        dst_hi=p.dst_hi,
        dst_lo=p.dst_lo,
        port=p.port,
        src_hi=hi,
        src_lo=lo,
        rate=p.pkts / active_s,
        bytes_per_s=p.bytes / active_s,
        share=np.where(p.kind == KIND_ICMP, 1.0, p.pkts / np.maximum(p.total, 1e-9)),
        sources=p.sources(),
        top_share=top / np.maximum(p.pkts, 1e-9),
        flows=p.flows,
        first_ns=p.first_ns,
        last_ns=p.last_ns,
    )


def slow_rows(s: SlowFlows, window_ns: int) -> DosRows:
    window = s.end_ns // window_ns
    rep, gid = group_ids(window, s.src_hi, s.src_lo, s.dst_hi, s.dst_lo, s.port)
    ng = rep.size
    conc = peak_concurrency(s.start_ns, s.end_ns, gid, ng).astype(np.float64)
    first = np.full(ng, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, gid, s.start_ns)
    last = np.full(ng, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last, gid, s.end_ns)
    span = np.maximum((last - first) / 1e9, 1e-9)
    ones = np.ones(ng)
    return DosRows(
        kind=np.full(ng, KIND_SLOW, dtype=np.int64),
        window=window[rep],
        dst_hi=s.dst_hi[rep],
        dst_lo=s.dst_lo[rep],
        port=s.port[rep],
        src_hi=s.src_hi[rep],
        src_lo=s.src_lo[rep],
        rate=conc,
        bytes_per_s=np.bincount(gid, s.bytes_up, ng) / span,
        share=ones,
        sources=ones,
        top_share=ones,
        flows=np.bincount(gid, minlength=ng).astype(np.float64),
        first_ns=first,
        last_ns=last,
    )


class DosDetector:
    name = "dos"

    def __init__(self, config: DosSection | None = None, *, lag_s: float = 300.0) -> None:
        self.config = config or DosSection()
        c = self.config
        self.window_ns = int(c.window_s * 1e9)
        self.slow_ns = int(c.slow_window_s * 1e9)
        self.lag_ns = int(lag_s * 1e9)
        self._slow_ports = np.asarray(c.slow_ports, dtype=np.int64)
        self._floors = np.array(
            [
                c.syn_floor_per_s,
                c.udp_floor_per_s,
                c.icmp_floor_per_s,
                float(c.slow_min_connections),
            ]
        )
        #: Learned: baseline key -> largest rate seen in a window that did not alert (dict
        #: order: least recently updated first, evicted beyond max_victims).
        self.baseline_: BoundedDict[str, float] = BoundedDict(c.max_victims)
        self.evicted_ = 0
        self._parts: list[FloodPartial] = []
        self._min_window = np.iinfo(np.int64).max
        self._slow: list[SlowFlows] = []
        self._episodes: dict[tuple[int, ...], dict[str, Any]] = {}
        self._ids = AlertIds()
        self._watermark = NO_TIME

    # -- contract on feature rows ------------------------------------------------------------

    def _partial(self, flows: FlowBatch) -> FloodPartial:
        return flood_partial(
            flows,
            self.window_ns,
            udp_max_reply_share=self.config.udp_max_reply_share,
            max_spread=self.config.max_spread_windows,
        )

    def _slow_flows(self, flows: FlowBatch) -> SlowFlows:
        c = self.config
        return slow_flows(
            flows,
            self._slow_ports,
            min_duration_s=c.slow_min_duration_s,
            max_bytes_per_s=c.slow_max_bytes_per_s,
            max_response_bytes=c.slow_max_response_bytes,
        )

    def features(self, flows: FlowBatch, events: Sequence[AppEvent] = ()) -> DosRows:
        """Flood and slow-HTTP rows of these flows (application events are not used)."""
        return DosRows.concat(
            [
                flood_rows(self._partial(flows), self.config.window_s),
                slow_rows(self._slow_flows(flows), self.slow_ns),
            ]
        )

    def _single(self, rows: DosRows) -> np.ndarray:
        return np.asarray(rows.top_share >= self.config.single_source_share)

    def entities(self, rows: DosRows) -> list[str]:
        """The source of a one-source flood (and of slow HTTP); the victim of a spread one."""
        single = self._single(rows)
        return [
            addr_text(int(sh), int(sl)) if s else addr_text(int(dh), int(dl))
            for s, sh, sl, dh, dl in zip(
                single.tolist(),
                rows.src_hi.tolist(),
                rows.src_lo.tolist(),
                rows.dst_hi.tolist(),
                rows.dst_lo.tolist(),
                strict=True,
            )
        ]

    def _keys(self, rows: DosRows) -> list[str]:
        out = []
        for k, dh, dl, port, sh, sl in zip(
            rows.kind.tolist(),
            rows.dst_hi.tolist(),
            rows.dst_lo.tolist(),
            rows.port.tolist(),
            rows.src_hi.tolist(),
            rows.src_lo.tolist(),
            strict=True,
        ):
            key = f"{addr_text(dh, dl)}|{KIND_NAMES[k]}|{port}"
            if k == KIND_SLOW:
                key += f"|{addr_text(sh, sl)}"
            out.append(key)
        return out

    def _baseline(self, rows: DosRows) -> np.ndarray:
        return np.array([self.baseline_.get(k, 0.0) for k in self._keys(rows)], dtype=np.float64)

    def _bars(self, rows: DosRows) -> np.ndarray:
        return np.asarray(
            np.maximum(self._floors[rows.kind], self.config.baseline_factor * self._baseline(rows))
        )

    def score(self, rows: DosRows) -> np.ndarray:
        """0..1: 0.5 at the bar, → 1 beyond; SYN rows with a small half-open share are damped."""
        if len(rows) == 0:
            return np.zeros(0)
        x = rows.rate.astype(np.float64)
        damp = np.clip(rows.share / max(self.config.min_half_open_share, 1e-9), 0.0, 1.0)
        x = np.where(rows.kind == KIND_SYN, x * damp, x)
        return np.asarray(1.0 - np.exp(-math.log(2.0) * x / self._bars(rows)))

    def learn(self, rows: DosRows) -> None:
        for key, rate in zip(self._keys(rows), rows.rate.tolist(), strict=True):
            self.baseline_.touch(key, max(self.baseline_.get(key, 0.0), float(rate)))
        self.evicted_ += self.baseline_.trim()

    def explain(self, rows: DosRows, idx: np.ndarray) -> list[str]:
        if len(idx) == 0:
            return []
        base = self._baseline(rows)
        bars = self._bars(rows)
        out = []
        for k in idx.tolist():
            ep = self._row_episode(rows, k)
            ep["bar"] = float(bars[k])
            out.append(self._text(ep, float(base[k])))
        return out

    def state(self) -> dict[str, Any]:
        c = self.config
        return {
            "detector": self.name,
            "version": STATE_VERSION,
            "params": {
                "window_s": c.window_s,
                "syn_floor_per_s": c.syn_floor_per_s,
                "udp_floor_per_s": c.udp_floor_per_s,
                "icmp_floor_per_s": c.icmp_floor_per_s,
                "slow_min_connections": c.slow_min_connections,
                "baseline_factor": c.baseline_factor,
            },
            "baseline": self.baseline_,
            "evicted": self.evicted_,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], config: DosSection | None = None) -> DosDetector:
        check_state(state, cls.name, STATE_VERSION)
        det = cls(config)
        with reading_state(cls.name):
            det.baseline_.update({str(k): float(v) for k, v in state["baseline"].items()})
            det.evicted_ = int(state.get("evicted", 0))
        return det

    # -- streaming ---------------------------------------------------------------------------

    def observe(self, flows: FlowBatch) -> None:
        if len(flows) == 0:
            return
        self._watermark = max(self._watermark, int(flows.num["end_ns"].max()))
        p = self._partial(flows)
        if len(p):
            self._parts.append(p)
            self._min_window = min(self._min_window, int(p.window.min()))
            if len(self._parts) > MAX_PARTS:
                self._parts = [merge(self._parts)]
        s = self._slow_flows(flows)
        if len(s):
            self._slow.append(s)

    def observe_events(self, events: Sequence[AppEvent]) -> None:
        """Floods are seen in flows alone."""

    def poll(self, watermark_ns: int | None = None) -> list[Alert]:
        wm = self._watermark if watermark_ns is None else max(self._watermark, watermark_ns)
        if wm == NO_TIME:
            return []
        cutoff = wm - self.lag_ns
        return self._finalize(cutoff // self.window_ns - 1, cutoff // self.slow_ns - 1)

    def flush(self) -> list[Alert]:
        top = np.iinfo(np.int64).max
        alerts = self._finalize(top, top)
        alerts += [self._alert(ep) for ep in self._episodes.values()]
        self._episodes.clear()
        self._watermark = NO_TIME  # a new stream may start at any time
        return by_time(alerts)

    def _finalize(self, flood_until: int, slow_until: int) -> list[Alert]:
        """Judge flood windows <= flood_until and slow windows <= slow_until."""
        parts: list[DosRows] = []
        if self._parts and self._min_window <= flood_until:
            merged = merge(self._parts)
            ready = merged.window <= flood_until
            parts.append(flood_rows(merged.select(ready), self.config.window_s))
            rest = merged.select(~ready)
            self._parts = [rest] if len(rest) else []
            self._min_window = int(rest.window.min()) if len(rest) else np.iinfo(np.int64).max
        if self._slow:
            s = SlowFlows.concat(self._slow)
            ready = s.end_ns // self.slow_ns <= slow_until
            if ready.any():
                parts.append(slow_rows(s.take(ready), self.slow_ns))
                rest_slow = s.take(~ready)
                self._slow = [rest_slow] if len(rest_slow) else []
        alerts: list[Alert] = []
        if parts:
            rows = DosRows.concat(parts)
            scores = self.score(rows)
            hit = scores >= 0.5
            bars = self._bars(rows)
            base = self._baseline(rows)
            order = np.lexsort((rows.first_ns, rows.window))
            for k in order[hit[order]].tolist():
                alerts += self._extend(rows, k, float(scores[k]), float(bars[k]), float(base[k]))
            # Learn only what did not alert: a flood cannot raise its own bar.
            self.learn(rows.take(~hit))
        # Episodes whose next window is complete without an alert have ended.
        for key in list(self._episodes):
            ep = self._episodes[key]
            until = slow_until if ep["kind"] == KIND_SLOW else flood_until
            if ep["last_w"] < until:
                alerts.append(self._alert(self._episodes.pop(key)))
        return by_time(alerts)

    # -- episodes and alerts -----------------------------------------------------------------

    def _row_episode(self, rows: DosRows, k: int) -> dict[str, Any]:
        kind = int(rows.kind[k])
        return {
            "kind": kind,
            "dst": (int(rows.dst_hi[k]), int(rows.dst_lo[k])),
            "port": int(rows.port[k]),
            "first_w": int(rows.window[k]),
            "last_w": int(rows.window[k]),
            "first_ns": int(rows.first_ns[k]),
            "last_ns": int(rows.last_ns[k]),
            "windows": 1,
            "flows": float(rows.flows[k]),
            "peak": {
                f: float(getattr(rows, f)[k])
                for f in ("rate", "bytes_per_s", "share", "sources", "top_share")
            },
            "src": (int(rows.src_hi[k]), int(rows.src_lo[k])),
            "single": bool(rows.top_share[k] >= self.config.single_source_share),
            "score": 0.0,
            "bar": float(self._floors[kind]),
            "base": 0.0,
        }

    def _extend(self, rows: DosRows, k: int, score: float, bar: float, base: float) -> list[Alert]:
        """Add an alerting row to its episode; returns the alerts of episodes it closed."""
        ep = self._row_episode(rows, k)
        ep.update(score=score, bar=bar, base=base)
        # Slow HTTP is per source as well.
        src = ep["src"] if ep["kind"] == KIND_SLOW else (0, 0)
        key = (ep["kind"], *ep["dst"], ep["port"], *src)
        out: list[Alert] = []
        cur = self._episodes.get(key)
        max_ns = int(self.config.episode_max_s * 1e9)
        if cur is not None and (
            ep["first_w"] > cur["last_w"] + 1 or ep["last_ns"] - cur["first_ns"] > max_ns
        ):
            out.append(self._alert(self._episodes.pop(key)))
            cur = None
        if cur is None:
            self._episodes[key] = ep
            return out
        cur["last_w"] = max(cur["last_w"], ep["last_w"])
        cur["first_ns"] = min(cur["first_ns"], ep["first_ns"])
        cur["last_ns"] = max(cur["last_ns"], ep["last_ns"])
        cur["windows"] += 1
        cur["flows"] += ep["flows"]
        cur["base"] = max(cur["base"], base)
        cur["bar"] = max(cur["bar"], bar)
        if ep["peak"]["rate"] > cur["peak"]["rate"]:
            cur.update(peak=ep["peak"], src=ep["src"], single=ep["single"], score=score)
        return out

    def _text(self, ep: dict[str, Any], base: float) -> str:
        kind = ep["kind"]
        dst = addr_text(*ep["dst"])
        src = addr_text(*ep["src"])
        pk = ep["peak"]
        rate = f"{pk['rate']:,.0f}"
        dur = fmt_duration(max((ep["last_ns"] - ep["first_ns"]) / 1e9, 0.0))
        nsrc = round(pk["sources"])
        about = "about " if nsrc >= SKETCH_K else ""
        if kind == KIND_SLOW:
            return (
                f"{src} held {rate} slow connections open at once to {dst} port {ep['port']} "
                f"({int(ep['flows']):,} connections over {dur}, the client sending "
                f"{pk['bytes_per_s']:,.1f} B/s in all, the server answering almost nothing); "
                f"normal for this source: {base:,.0f}; slow connections are seen when they end "
                "(up to the TCP idle timeout after their last packet)"
            )
        what = {
            KIND_SYN: (
                f"SYNs/s on port {ep['port']}/tcp",
                f"{pk['share']:.0%} never completed the handshake",
                "half-open SYNs/s",
            ),
            KIND_UDP: (
                "unanswered UDP packets/s",
                f"{fmt_bytes(pk['bytes_per_s'])}/s",
                "unanswered UDP packets/s",
            ),
            KIND_ICMP: (
                "ICMP echo packets/s",
                f"{fmt_bytes(pk['bytes_per_s'])}/s",
                "ICMP echo packets/s",
            ),
        }[kind]
        if ep["single"]:
            head = f"{src} sent {rate} {what[0]} to {dst}"
            if nsrc > 1:
                head += f" ({pk['top_share']:.0%} of {about}{nsrc:,} sources)"
        else:
            head = f"{dst} received {rate} {what[0]} from {about}{nsrc:,} sources"
        return (
            f"{head} (peak {fmt_duration(self.config.window_s)} window; {what[1]}) for {dur}; "
            f"normal for this host: {base:,.0f} {what[2]} (bar {ep['bar']:,.0f})"
        )

    def _alert(self, ep: dict[str, Any]) -> Alert:
        kind = ep["kind"]
        dst = addr_text(*ep["dst"])
        src = addr_text(*ep["src"])
        entity = src if ep["single"] else dst
        sig = SIGNATURES[kind]
        unit = UNITS[kind]
        pk = ep["peak"]
        dur = (ep["last_ns"] - ep["first_ns"]) / 1e9
        proto = "TCP" if kind in (KIND_SYN, KIND_SLOW) else "UDP" if kind == KIND_UDP else "ICMP"
        port = ep["port"] if ep["port"] >= 0 else None
        return Alert(
            alert_id=self._ids(f"{sig}|{dst}|{port}|{entity}|{ep['first_ns']}"),
            ts_ns=ep["first_ns"],
            signature=sig,
            signature_id=SIDS[kind],
            category="dos",
            severity=1 if pk["rate"] >= 10 * ep["bar"] else 2,
            score=float(ep["score"]),
            explanation=self._text(ep, float(ep["base"])),
            entity=entity,
            mitre_technique_id=(TECHNIQUES[kind],),
            mitre_tactic=("impact",),
            src_ip=src if ep["single"] else None,
            dest_ip=dst,
            dest_port=port,
            proto=proto,
            first_ts_ns=ep["first_ns"],
            last_ts_ns=ep["last_ns"],
            observed={
                unit: round(pk["rate"], 3),
                "bytes_per_s": round(pk["bytes_per_s"], 3),
                "sources": round(pk["sources"], 1),
                "top_source_share": round(pk["top_share"], 4),
                "flood_share": round(pk["share"], 4),
                "flows": round(ep["flows"], 1),
                "windows": float(ep["windows"]),
                "duration_s": round(dur, 6),
            },
            baseline={unit: ep["base"], "threshold": ep["bar"]},
        )
