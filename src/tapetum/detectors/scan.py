"""Port scans: vertical (many ports on one host) and horizontal (one port on many hosts).

Probes (flows without application data, see `features.scan`) are counted per source in fixed
windows of data time. A window is scored once it can no longer change: when the watermark (the
latest flow end seen) has passed its end by the meter's longest idle timeout, or at end of input.
Rows below the threshold are learnt as the source's normal (so a host that routinely touches many
ports raises its own bar); rows that alert are not learnt, so a scan cannot teach itself normal.
ATT&CK: T1046 Network Service Discovery (from an internal address), T1595.001 Active Scanning:
Scanning IP Blocks / T1595.002 Vulnerability Scanning (from outside); ARP sweeps (requests for
many local addresses, seen in packets since ARP makes no flow): T1018 Remote System Discovery.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tapetum.config import ScanSection
from tapetum.detectors.common import AlertIds, by_time, check_state, fmt_duration, is_internal
from tapetum.detectors.windows import DataTimeWindows
from tapetum.features import columns
from tapetum.features.scan import ProbeColumns, ScanRows, aggregate, answered_ports
from tapetum.flows.key import addr_text, proto_name
from tapetum.flows.meter import FlowBatch
from tapetum.records import Alert, AppEvent
from tapetum.sources.arp import ArpBatch
from tapetum.sources.decode import PROTO_ARP

SIG_VERTICAL = "scan.vertical"
SIG_HORIZONTAL = "scan.horizontal"
SIG_ARP = "scan.arp_sweep"
SID_VERTICAL = 9_000_001
SID_HORIZONTAL = 9_000_002
SID_ARP = 9_000_003
SIG_SLOW = "scan.slow"
SID_SLOW = 9_000_004
STATE_VERSION = 1


class ScanDetector:
    name = "scan"

    def __init__(self, config: ScanSection | None = None, *, lag_s: float = 300.0) -> None:
        self.config = config or ScanSection()
        self.window_ns = int(self.config.window_s * 1e9)
        self.lag_ns = int(lag_s * 1e9)
        #: Learned: per source and kind, the largest count seen in a window that did not alert.
        self.baseline_: dict[str, list[int]] = {}
        self._windows: DataTimeWindows[list[ProbeColumns]] = DataTimeWindows(
            self.window_ns, self.lag_ns, list
        )
        # Slow scans: distinct probes of finished short windows, per slow window, and the
        # target groups that already alerted in a short window (not raised twice).
        self.slow_ns = int(self.config.slow_window_s * 1e9)
        self._slow: DataTimeWindows[list[ProbeColumns]] = DataTimeWindows(
            self.slow_ns, self.lag_ns, list
        )
        self._slow_rows = 0
        self._alerted: dict[int, set[tuple[int, ...]]] = {}
        #: Probes not kept for slow-scan detection because of `slow_max_probes`.
        self.dropped_slow_probes = 0
        self._ids = AlertIds()

    # -- contract on feature rows ------------------------------------------------------------

    def features(self, flows: FlowBatch, events: Sequence[AppEvent] = ()) -> ScanRows:
        """Scan rows of these flows taken as one window (application events are not used)."""
        return aggregate(ProbeColumns.from_flows(flows, self.config.failed_only))

    def entities(self, rows: ScanRows) -> list[str]:
        """The entity (source address) each row is about."""
        return [addr_text(int(h), int(lo)) for h, lo in zip(rows.src_hi, rows.src_lo, strict=True)]

    def _thresholds(self, rows: ScanRows) -> np.ndarray:
        icmp = (rows.proto == 1) | (rows.proto == 58)
        horizontal = np.where(icmp, self.config.sweep_hosts, self.config.horizontal_hosts)
        horizontal = np.where(rows.proto == PROTO_ARP, self.config.arp_hosts, horizontal)
        return np.where(rows.kind == 0, self.config.vertical_ports, horizontal)

    def _baseline(self, rows: ScanRows) -> np.ndarray:
        out = np.zeros(len(rows), dtype=np.float64)
        for k in range(len(rows)):
            src = addr_text(int(rows.src_hi[k]), int(rows.src_lo[k]))
            b = self.baseline_.get(src)
            if b is not None:
                out[k] = b[int(rows.kind[k])]
        return out

    def score(self, rows: ScanRows) -> np.ndarray:
        """0..1: 0.5 at the threshold (or at twice the source's normal, if higher), → 1 beyond."""
        if len(rows) == 0:
            return np.zeros(0)
        bar = np.maximum(self._thresholds(rows), 2.0 * self._baseline(rows)).astype(np.float64)
        x = rows.distinct_targets.astype(np.float64)
        return np.asarray(1.0 - np.exp(-math.log(2.0) * x / bar))

    def learn(self, rows: ScanRows) -> None:
        for k in range(len(rows)):
            src = addr_text(int(rows.src_hi[k]), int(rows.src_lo[k]))
            b = self.baseline_.setdefault(src, [0, 0])
            kind = int(rows.kind[k])
            b[kind] = max(b[kind], int(rows.distinct_targets[k]))

    def accept_feedback(
        self,
        entity: str,
        observed: Mapping[str, float],
        *,
        signature: str = "",
        dest: str | None = None,
    ) -> bool:
        """An analyst judged this many distinct ports (vertical) or hosts (horizontal, sweeps)
        normal for `entity`: it becomes the learnt level, so the bar is twice it."""
        if "distinct_ports" in observed:
            kind, value = 0, observed["distinct_ports"]
        elif "distinct_hosts" in observed:
            kind, value = 1, observed["distinct_hosts"]
        else:
            return False
        b = self.baseline_.setdefault(entity, [0, 0])
        if int(value) <= b[kind]:
            return False
        b[kind] = int(value)
        return True

    def explain(
        self, rows: ScanRows, idx: np.ndarray, probes: ProbeColumns | None = None
    ) -> list[str]:
        base = self._baseline(rows)
        out = []
        for k in idx.tolist():
            src = addr_text(int(rows.src_hi[k]), int(rows.src_lo[k]))
            n = int(rows.distinct_targets[k])
            span = (int(rows.last_ns[k]) - int(rows.first_ns[k])) / 1e9
            core = (int(rows.core_last_ns[k]) - int(rows.core_first_ns[k])) / 1e9
            dur = fmt_duration(span)
            if n >= 20 and span > 2 * core + 1.0:
                # Stragglers (a retry, a later sweep of the same host) stretch the span.
                dur = f"{fmt_duration(core)} (90% of probes; all within {fmt_duration(span)})"

            window = fmt_duration(self.config.window_s)
            normal = int(base[k])
            proto = proto_name(int(rows.proto[k]))
            answered = int(rows.answered_targets[k])
            if rows.kind[k] == 0:
                dst = addr_text(int(rows.dst_hi[k]), int(rows.dst_lo[k]))
                what = f"{src} probed {n:,} {proto} ports on {dst} in {dur}"
                if proto in ("ICMP", "IPv6-ICMP"):
                    what = f"{src} sent {n:,} kinds of {proto} probes to {dst} in {dur}"
                extra = f"{int(rows.probes[k]):,} probes, {answered:,} answered"
                if probes is not None and answered:
                    ports = answered_ports(
                        probes,
                        (int(rows.src_hi[k]), int(rows.src_lo[k])),
                        (int(rows.dst_hi[k]), int(rows.dst_lo[k])),
                    )
                    shown = ", ".join(str(p) for p in ports[:10])
                    extra += f": open {shown}{' …' if len(ports) > 10 else ''}"
                unit = "ports"
            else:
                port = int(rows.dport[k])
                if proto == "ICMP" or proto == "IPv6-ICMP":
                    what = f"{src} sent {proto} echo requests to {n:,} hosts in {dur}"
                elif proto == "ARP":
                    what = f"{src} sent ARP requests for {n:,} local addresses in {dur}"
                else:
                    what = f"{src} probed port {port}/{proto.lower()} on {n:,} hosts in {dur}"
                extra = f"{answered:,} answered"
                unit = "hosts"
            seen = "" if src in self.baseline_ else " (no earlier activity seen)"
            out.append(
                f"{what}; {extra}; normal for this host: {normal:,} {unit} per {window}{seen}"
            )
        return out

    def state(self) -> dict[str, Any]:
        return {
            "detector": self.name,
            "version": STATE_VERSION,
            "params": {
                "window_s": self.config.window_s,
                "vertical_ports": self.config.vertical_ports,
                "horizontal_hosts": self.config.horizontal_hosts,
                "sweep_hosts": self.config.sweep_hosts,
                "arp_hosts": self.config.arp_hosts,
            },
            "baseline": self.baseline_,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], config: ScanSection | None = None) -> ScanDetector:
        check_state(state, cls.name, STATE_VERSION)
        det = cls(config)
        det.baseline_ = {str(k): [int(x) for x in v] for k, v in state["baseline"].items()}
        return det

    # -- streaming ---------------------------------------------------------------------------

    def observe(self, flows: FlowBatch) -> None:
        if len(flows) == 0:
            return
        self._windows.advance(int(flows.num["end_ns"].max()))
        self._add_probes(ProbeColumns.from_flows(flows, self.config.failed_only))

    def _add_probes(self, p: ProbeColumns) -> None:
        if len(p) == 0:
            return
        for parts, m in self._windows.split(p.start_ns):
            parts.append(p.take(m))

    def observe_events(self, events: Sequence[AppEvent]) -> None:
        """Scans are seen in flows (and ARP) alone."""

    def observe_arp(self, arp: ArpBatch) -> None:
        """ARP requests of a packet batch: local sweeps that make no IP flow."""
        if len(arp) == 0:
            return
        self._windows.advance(int(arp.ts_ns.max()))
        self._add_probes(ProbeColumns.from_arp(arp))

    def poll(self, watermark_ns: int | None = None) -> list[Alert]:
        wm = self._windows.now(watermark_ns)
        alerts = self._finalize(self._windows.complete(wm, self.lag_ns))
        if self.slow_ns:
            alerts += self._finalize_slow(self._slow.complete(wm, self.lag_ns))
        return alerts

    def flush(self) -> list[Alert]:
        alerts = self._finalize(self._windows.flush())
        return alerts + self._finalize_slow(self._slow.flush())

    def _keep_for_slow(self, w: int, probes: ProbeColumns, rows: ScanRows, hit: np.ndarray) -> None:
        if not self.slow_ns or len(probes) == 0:
            return
        ws = (w * self.window_ns) // self.slow_ns
        for k in np.flatnonzero(hit).tolist():
            self._alerted.setdefault(ws, set()).add(_group_key(rows, k))
        room = self.config.slow_max_probes - self._slow_rows
        if room <= 0:
            self.dropped_slow_probes += len(probes)
            return
        if len(probes) > room:
            self.dropped_slow_probes += len(probes) - room
            probes = probes.take(np.arange(room))
        self._slow.at(ws).append(probes)
        self._slow_rows += len(probes)

    def _finalize_slow(self, windows: list[int]) -> list[Alert]:
        """Slow windows: target groups over the threshold in the long window that never were in
        a short one (those alerted already)."""
        alerts: list[Alert] = []
        for ws in windows:
            parts = self._slow.pop(ws)
            self._slow_rows -= sum(len(p) for p in parts)
            alerted = self._alerted.pop(ws, set())
            probes = ProbeColumns.concat(parts)
            rows = aggregate(probes)
            if len(rows) == 0:
                continue
            scores = self.score(rows)
            fresh = np.array([_group_key(rows, k) not in alerted for k in range(len(rows))])
            idx = np.flatnonzero((scores >= 0.5) & fresh & (rows.proto != PROTO_ARP))
            texts = self.explain(rows, idx, probes)
            short = fmt_duration(self.config.window_s)
            slow_len = fmt_duration(self.config.slow_window_s)
            why = f"slow scan (under the threshold in every {short} window, over it in {slow_len})"
            for k, text in zip(idx.tolist(), texts, strict=True):
                text = f"{why}: {text}"
                alerts.append(self._alert(rows, k, float(scores[k]), text, ws, slow=True))
        return by_time(alerts)

    def _finalize(self, windows: list[int]) -> list[Alert]:
        alerts: list[Alert] = []
        for w in windows:
            probes = ProbeColumns.concat(self._windows.pop(w))
            rows = aggregate(probes)
            if len(rows) == 0:
                continue
            scores = self.score(rows)
            hit = scores >= 0.5
            idx = np.flatnonzero(hit)
            texts = self.explain(rows, idx, probes)
            for k, text in zip(idx.tolist(), texts, strict=True):
                alerts.append(self._alert(rows, k, float(scores[k]), text, w))
            # Learn only what did not alert: a scan cannot raise its own baseline.
            self.learn(columns.take(rows, ~hit))
            self._keep_for_slow(w, probes, rows, hit)
        return by_time(alerts)

    def _alert(
        self, rows: ScanRows, k: int, score: float, text: str, window: int, slow: bool = False
    ) -> Alert:
        src = addr_text(int(rows.src_hi[k]), int(rows.src_lo[k]))
        vertical = rows.kind[k] == 0
        n = int(rows.distinct_targets[k])
        proto = proto_name(int(rows.proto[k]))
        dst = addr_text(int(rows.dst_hi[k]), int(rows.dst_lo[k])) if vertical else None
        port = None if vertical else int(rows.dport[k])
        arp = int(rows.proto[k]) == PROTO_ARP
        sig = SIG_VERTICAL if vertical else (SIG_ARP if arp else SIG_HORIZONTAL)
        sid = SID_VERTICAL if vertical else (SID_ARP if arp else SID_HORIZONTAL)
        if slow:
            sig, sid = SIG_SLOW, SID_SLOW
        internal = is_internal(src)
        if arp:
            # Finding neighbours on the local link: Remote System Discovery.
            technique, tactic = ("T1018",), ("discovery",)
        elif internal:
            technique, tactic = ("T1046",), ("discovery",)
        else:
            technique = ("T1595.002",) if vertical else ("T1595.001",)
            tactic = ("reconnaissance",)
        threshold = int(self._thresholds(columns.take(rows, np.array([k])))[0])
        severity = 2 if n >= 10 * threshold else 3
        key = f"{sig}|{src}|{dst if vertical else f'{proto}/{port}'}|{window}|{rows.first_ns[k]}"
        dur = (int(rows.last_ns[k]) - int(rows.first_ns[k])) / 1e9
        unit = "distinct_ports" if vertical else "distinct_hosts"
        base = self.baseline_.get(src, [0, 0])[0 if vertical else 1]
        return Alert(
            alert_id=self._ids(key),
            ts_ns=int(rows.first_ns[k]),
            signature=sig,
            signature_id=sid,
            category="scan",
            severity=severity,
            score=score,
            explanation=text,
            entity=src,
            mitre_technique_id=technique,
            mitre_tactic=tactic,
            src_ip=src,
            dest_ip=dst,
            dest_port=port,
            proto=proto,
            first_ts_ns=int(rows.first_ns[k]),
            last_ts_ns=int(rows.last_ns[k]),
            observed={
                unit: float(n),
                "probes": float(rows.probes[k]),
                "answered": float(rows.answered_targets[k]),
                "duration_s": round(dur, 6),
            },
            baseline={unit: float(base), "threshold": float(threshold)},
        )


def _group_key(rows: ScanRows, k: int) -> tuple[int, ...]:
    """What a scan row is about: source, kind, and the target host (vertical) or port."""
    return (
        int(rows.src_hi[k]), int(rows.src_lo[k]), int(rows.kind[k]), int(rows.dst_hi[k]),
        int(rows.dst_lo[k]), int(rows.proto[k]), int(rows.dport[k]),
    )  # fmt: skip
