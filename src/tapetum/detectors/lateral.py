"""Lateral movement (ATT&CK T1021 Remote Services): new admin-protocol fan-out and pivot chains.

Rows are *contacts* (`features.lateral`): successful admin-protocol sessions (SSH, SMB, RDP,
WinRM, RPC/DCOM, VNC, Telnet) between internal hosts, one per (source, destination, service).

Learnt state:
- the (source, destination, service) pairs seen in normal periods (bounded, least recently seen
  evicted and counted);
- per source and service, the most *new* peers it reached within one window without alerting:
  admin workstations and jump hosts routinely reach many hosts and raise their own bar;
- per host, how often it relayed admin sessions (received one, then opened new ones): jump hosts.

Alerts:
- `lateral.fanout`: within `window_s`, a source opened sessions of one service to at least
  `max(min_new_peers, baseline_factor × its learnt new peers)` internal hosts it never used that
  service with. New pairs alert only as part of a fan-out.
- `lateral.chain`: B received an admin session from A and within `chain_window_s` opened a new
  admin session to a third host C (A → B → C, a pivot), unless B is a learnt relay.

Without a learnt baseline (`from_state` not used, nothing learnt yet) the first `warmup_s` of
data time are learn-only, so a long capture or a live sensor learns the daily routine (an admin
who logs into ten servers each morning) before judging. Decisions inside the warm-up are held;
if the stream ends before the warm-up is over (a short capture), everything held is judged at
`flush` against the absolute bar alone: a client reaching `min_new_peers` hosts it never used that
service with alerts. The trade-off (an attack inside the first day of a fresh live sensor is
learnt, not reported) is documented in docs/evaluation/lateral-dos.md.

Timing: a contact is decided once the window that starts with it is complete in data time (the
watermark has passed its start by `window_s` plus the meter's idle timeout); long sessions are
known only when they end.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tapetum.config import LateralSection
from tapetum.detectors.common import (
    AlertIds,
    BoundedDict,
    InternalNetworks,
    by_time,
    check_state,
    fmt_duration,
    reading_state,
)
from tapetum.detectors.windows import NO_TIME
from tapetum.features.lateral import ContactRows, contacts, peak_in_window
from tapetum.flows.meter import FlowBatch
from tapetum.records import Alert, AppEvent

SIG_FANOUT = "lateral.fanout"
SIG_CHAIN = "lateral.chain"
SID_FANOUT = 9_000_060
SID_CHAIN = 9_000_061
STATE_VERSION = 1
TECHNIQUES = {
    "rdp": "T1021.001",
    "smb": "T1021.002",
    "rpc": "T1021.003",
    "ssh": "T1021.004",
    "vnc": "T1021.005",
    "winrm": "T1021.006",
}
LABELS = {
    "ssh": "SSH",
    "smb": "SMB",
    "rdp": "RDP",
    "winrm": "WinRM",
    "rpc": "RPC/DCOM",
    "vnc": "VNC",
    "telnet": "Telnet",
}
#: Inbound sessions remembered per host for chain matching.
MAX_INBOUND_PER_HOST = 32

Triple = tuple[str, str, str]


def _label(svc: str) -> str:
    return LABELS.get(svc, svc.upper())


def _a(label: str) -> str:
    """The article before an acronym as it is spoken (an SSH, a VNC)."""
    return "an" if label[:1] in "AEFHILMNORSX" else "a"


def _when(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _shown(items: Sequence[str], limit: int = 8) -> str:
    return ", ".join(items[:limit]) + (", …" if len(items) > limit else "")


class LateralDetector:
    name = "lateral"

    def __init__(self, config: LateralSection | None = None, *, lag_s: float = 300.0) -> None:
        self.config = config or LateralSection()
        c = self.config
        self.window_ns = int(c.window_s * 1e9)
        self.chain_ns = int(c.chain_window_s * 1e9)
        self.warmup_ns = int(c.warmup_s * 1e9)
        self.lag_ns = int(lag_s * 1e9)
        self.internal = InternalNetworks(c.internal_networks)
        #: Learned: "src|dst|service" -> last seen (ns); dict order is least recently seen first.
        self.pairs_: BoundedDict[str, int] = BoundedDict(c.max_pairs)
        #: Learned per source: first_ns, new_peers {service: most new peers in a quiet window},
        #: relay (chains seen while learning).
        self.hosts_: BoundedDict[str, dict[str, Any]] = BoundedDict(c.max_hosts)
        #: The warm-up is over (or was skipped because the state was learnt elsewhere).
        self.warmed_ = False
        self.evicted_pairs_ = 0
        self.evicted_hosts_ = 0
        self.dropped_contacts_ = 0
        #: New contacts: [first, last, flows, bytes].
        self._pending: BoundedDict[Triple, list[int]] = BoundedDict(c.max_pending)
        self._inbound: dict[str, list[tuple[str, str, int, int]]] = {}  # dst -> (src, svc, …)
        self._warm_until: int | None = None
        self._watermark = NO_TIME
        self._ids = AlertIds()

    # -- helpers -----------------------------------------------------------------------------

    def _base(self, src: str, svc: str) -> int:
        h = self.hosts_.get(src)
        return int(h["new_peers"].get(svc, 0)) if h is not None else 0

    def _bar(self, src: str, svc: str) -> int:
        learnt = math.ceil(self.config.baseline_factor * self._base(src, svc))
        return max(self.config.min_new_peers, learnt)

    def _port(self, svc: str) -> int | None:
        ports = self.config.services.get(svc)
        return ports[0] if ports else None

    def _relay(self, host: str) -> int:
        h = self.hosts_.get(host)
        return int(h["relay"]) if h is not None else 0

    def _host(self, src: str, t: int) -> dict[str, Any]:
        h = self.hosts_.get(src)
        if h is None:
            h = {"first_ns": t, "new_peers": {}, "relay": 0}
        else:
            h["first_ns"] = min(int(h["first_ns"]), t)
        self.hosts_.touch(src, h)  # most recently active last
        self.evicted_hosts_ += self.hosts_.trim()
        return h

    def _learn_pair(self, key: str, t: int) -> None:
        self.pairs_.touch(key, max(self.pairs_.get(key, t), t))
        self.evicted_pairs_ += self.pairs_.trim()

    # -- contract on feature rows ------------------------------------------------------------

    def features(self, flows: FlowBatch, events: Sequence[AppEvent] = ()) -> ContactRows:
        """Admin-protocol contacts between internal hosts in these flows (events unused)."""
        return contacts(
            flows,
            self.config.services,
            min_payload_bytes=self.config.min_payload_bytes,
            internal=self.internal,
        )

    def entities(self, rows: ContactRows) -> list[str]:
        """The source of each contact: the host that may be moving laterally."""
        return list(rows.src)

    def _analyse(self, rows: ContactRows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: new-peer fan-out of its (source, service) at its peak, its bar, and the
        number of onward hosts if it continues a chain (0 otherwise)."""
        n = len(rows)
        fan = np.zeros(n, dtype=np.int64)
        bar = np.ones(n, dtype=np.int64)
        hops = np.zeros(n, dtype=np.int64)
        new = [
            f"{s}|{d}|{v}" not in self.pairs_
            for s, d, v in zip(rows.src, rows.dst, rows.service, strict=True)
        ]
        groups: dict[tuple[str, str], list[int]] = {}
        for k in range(n):
            bar[k] = self._bar(rows.src[k], rows.service[k])
            if new[k]:
                groups.setdefault((rows.src[k], rows.service[k]), []).append(k)
        for ks in groups.values():
            order = sorted(ks, key=lambda k: int(rows.first_ns[k]))
            times = rows.first_ns[np.array(order)]
            count, _ = peak_in_window(times, self.window_ns)
            fan[order] = count
        inbound: dict[str, list[int]] = {}
        for k in range(n):
            inbound.setdefault(rows.dst[k], []).append(k)
        onward: dict[str, set[str]] = {}
        matched: list[int] = []
        for k in range(n):
            b = rows.src[k]
            if not new[k] or b not in inbound:
                continue
            t = int(rows.first_ns[k])
            for j in inbound[b]:
                if rows.src[j] != rows.dst[k] and (
                    int(rows.first_ns[j]) <= t <= int(rows.last_ns[j]) + self.chain_ns
                ):
                    onward.setdefault(b, set()).add(rows.dst[k])
                    matched.append(k)
                    break
        for k in matched:
            hops[k] = len(onward[rows.src[k]])
        return fan, bar, hops

    def _chain_score(self, hops: np.ndarray, rows: ContactRows) -> np.ndarray:
        relay = np.array([self._relay(s) > 0 for s in rows.src], dtype=bool)
        return np.where(relay | (hops == 0), 0.0, 1.0 - 0.5 ** hops.astype(np.float64))

    def score(self, rows: ContactRows) -> np.ndarray:
        """0..1: fan-out 0.5 at the source's bar (→ 1 beyond); a chain scores 1 - 2^-onward."""
        if len(rows) == 0:
            return np.zeros(0)
        fan, bar, hops = self._analyse(rows)
        fanout = 1.0 - np.exp(-math.log(2.0) * fan / bar.astype(np.float64))
        return np.asarray(np.maximum(fanout, self._chain_score(hops, rows)))

    def learn(self, rows: ContactRows) -> None:
        if len(rows) == 0:
            return
        fan, _, hops = self._analyse(rows)
        relays = set()
        for k in range(len(rows)):
            src, svc = rows.src[k], rows.service[k]
            h = self._host(src, int(rows.first_ns[k]))
            h["new_peers"][svc] = max(int(h["new_peers"].get(svc, 0)), int(fan[k]))
            self._learn_pair(f"{src}|{rows.dst[k]}|{svc}", int(rows.last_ns[k]))
            if hops[k]:
                relays.add(src)
        for b in relays:
            self._host(b, int(rows.first_ns.min()))["relay"] += 1

    def explain(self, rows: ContactRows, idx: np.ndarray) -> list[str]:
        if len(rows) == 0 or len(idx) == 0:
            return []
        fan, bar, hops = self._analyse(rows)
        out = []
        for k in idx.tolist():
            src, svc = rows.src[k], rows.service[k]
            if hops[k] and self._relay(src) == 0:
                out.append(
                    f"{src} received an admin session and then opened a new {_label(svc)} "
                    f"session to {rows.dst[k]}; {hops[k]} onward host(s); normal for this host: "
                    "no onward admin sessions"
                )
            else:
                same = [
                    j for j in range(len(rows)) if rows.src[j] == src and rows.service[j] == svc
                ]
                out.append(
                    f"{src} opened {_label(svc)} sessions to {int(fan[k])} internal hosts it "
                    f"never used {_label(svc)} with before "
                    f"({_shown([rows.dst[j] for j in same])}); normal for this host: "
                    f"{self._base(src, svc)} new {_label(svc)} peers per "
                    f"{fmt_duration(self.config.window_s)} (bar {int(bar[k])})"
                )
        return out

    def state(self) -> dict[str, Any]:
        c = self.config
        return {
            "detector": self.name,
            "version": STATE_VERSION,
            "params": {
                "window_s": c.window_s,
                "min_new_peers": c.min_new_peers,
                "baseline_factor": c.baseline_factor,
                "chain_window_s": c.chain_window_s,
                "services": c.services,
            },
            "pairs": self.pairs_,
            "hosts": self.hosts_,
            "warmed": self.warmed_ or bool(self.pairs_),
            "counters": {
                "evicted_pairs": self.evicted_pairs_,
                "evicted_hosts": self.evicted_hosts_,
                "dropped_contacts": self.dropped_contacts_,
            },
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], config: LateralSection | None = None
    ) -> LateralDetector:
        check_state(state, cls.name, STATE_VERSION)
        det = cls(config)
        with reading_state(cls.name):
            det.pairs_.update({str(k): int(v) for k, v in state["pairs"].items()})
            det.hosts_.update({
                str(h): {
                    "first_ns": int(v["first_ns"]),
                    "new_peers": {str(s): int(n) for s, n in v["new_peers"].items()},
                    "relay": int(v["relay"]),
                }
                for h, v in state["hosts"].items()
            })  # fmt: skip
            det.warmed_ = bool(state["warmed"])
            counters = state.get("counters", {})
        det.evicted_pairs_ = int(counters.get("evicted_pairs", 0))
        det.evicted_hosts_ = int(counters.get("evicted_hosts", 0))
        det.dropped_contacts_ = int(counters.get("dropped_contacts", 0))
        return det

    # -- streaming ---------------------------------------------------------------------------

    def observe(self, flows: FlowBatch) -> None:
        if len(flows) == 0:
            return
        self._watermark = max(self._watermark, int(flows.num["end_ns"].max()))
        if self._warm_until is None and not self.warmed_:
            if self.pairs_:
                self.warmed_ = True  # learnt elsewhere (`tapetum learn`, an earlier stream)
            else:
                self._warm_until = int(flows.num["start_ns"].min()) + self.warmup_ns
        rows = self.features(flows)
        for k in range(len(rows)):
            src, dst, svc = rows.src[k], rows.dst[k], rows.service[k]
            first, last = int(rows.first_ns[k]), int(rows.last_ns[k])
            self._note_inbound(dst, (src, svc, first, last))
            key = f"{src}|{dst}|{svc}"
            if key in self.pairs_:
                self._learn_pair(key, last)  # a known pair: refresh, nothing to decide
                continue
            p = self._pending.get((src, dst, svc))
            if p is None:
                self._pending[(src, dst, svc)] = [
                    first,
                    last,
                    int(rows.flows[k]),
                    int(rows.payload_bytes[k]),
                ]
            else:
                p[0], p[1] = min(p[0], first), max(p[1], last)
                p[2] += int(rows.flows[k])
                p[3] += int(rows.payload_bytes[k])
        self.dropped_contacts_ += self._pending.trim()

    def _note_inbound(self, dst: str, item: tuple[str, str, int, int]) -> None:
        lst = self._inbound.get(dst)
        if lst is None:
            if len(self._inbound) >= self.config.max_hosts:
                self.dropped_contacts_ += 1
                return
            lst = self._inbound[dst] = []
        lst.append(item)
        if len(lst) > MAX_INBOUND_PER_HOST:
            del lst[0]

    def observe_events(self, events: Sequence[AppEvent]) -> None:
        """Admin sessions are seen in flows alone."""

    def poll(self, watermark_ns: int | None = None) -> list[Alert]:
        wm = self._watermark if watermark_ns is None else max(self._watermark, watermark_ns)
        cutoff = wm - self.lag_ns
        alerts: list[Alert] = []
        if not self.warmed_ and self._warm_until is not None:
            if cutoff < self._warm_until:
                return []  # held: learnt if the stream outlasts the warm-up, judged if not
            self._decide(self._warm_until, learn_only=True)
            self.warmed_ = True
        alerts += self._decide(cutoff - self.window_ns, learn_only=False)
        horizon = cutoff - self.window_ns - self.chain_ns - self.lag_ns
        for host in [h for h, lst in self._inbound.items() if lst[-1][3] < horizon]:
            del self._inbound[host]
        return alerts

    def flush(self) -> list[Alert]:
        alerts = self._decide(None, learn_only=False)
        self.warmed_ = self.warmed_ or bool(self.pairs_)
        self._warm_until = None
        self._inbound.clear()
        self._watermark = NO_TIME  # a new stream may start at any time
        return alerts

    def _decide(self, limit: int | None, *, learn_only: bool) -> list[Alert]:
        """Decide pending contacts whose window is complete (start <= limit; None: all)."""
        groups: dict[tuple[str, str], list[Triple]] = {}
        for key in self._pending:
            groups.setdefault((key[0], key[2]), []).append(key)
        # PsExec-like: SMB (ADMIN$, the service binary) and RPC (service control) to one host.
        rpc_peers = {(k[0], k[1]) for k in self._pending if k[2] == "rpc"}
        alerts: list[Alert] = []
        decided: list[tuple[Triple, list[int]]] = []
        for (src, svc), keys in sorted(groups.items()):
            keys.sort(key=lambda k: (self._pending[k][0], k))
            times = np.array([self._pending[k][0] for k in keys], dtype=np.int64)
            i = 0
            while i < len(keys) and (limit is None or times[i] <= limit):
                j = int(np.searchsorted(times, times[i] + self.window_ns, side="right"))
                bar = self._bar(src, svc)
                if not learn_only and j - i >= bar:
                    burst = [(k, self._pending.pop(k)) for k in keys[i:j]]
                    alerts.append(self._fanout_alert(src, svc, burst, bar, rpc_peers))
                    decided += burst
                    i = j
                    continue
                # Not a fan-out: the pair becomes known, its count the host's normal.
                h = self._host(src, int(times[i]))
                h["new_peers"][svc] = max(int(h["new_peers"].get(svc, 0)), j - i)
                rec = self._pending.pop(keys[i])
                self._learn_pair(f"{src}|{keys[i][1]}|{svc}", rec[1])
                decided.append((keys[i], rec))
                i += 1
        alerts += self._chains(decided, learn_only=learn_only)
        return by_time(alerts)

    def _chains(self, decided: list[tuple[Triple, list[int]]], *, learn_only: bool) -> list[Alert]:
        by_pivot: dict[str, list[tuple[Triple, list[int], tuple[str, str, int, int]]]] = {}
        for key, rec in decided:
            b, c = key[0], key[1]
            for inb in self._inbound.get(b, ()):
                if inb[0] != c and inb[2] <= rec[0] <= inb[3] + self.chain_ns:
                    by_pivot.setdefault(b, []).append((key, rec, inb))
                    break
        alerts = []
        for b, links in sorted(by_pivot.items()):
            if learn_only or self._relay(b) > 0:
                if learn_only:
                    self._host(b, min(rec[0] for _, rec, _ in links))["relay"] += 1
                continue
            alerts.append(self._chain_alert(b, links))
        return alerts

    # -- alerts ------------------------------------------------------------------------------

    def _fanout_alert(
        self,
        src: str,
        svc: str,
        burst: list[tuple[Triple, list[int]]],
        bar: int,
        rpc_peers: set[tuple[str, str]],
    ) -> Alert:
        first = min(rec[0] for _, rec in burst)
        last = max(rec[1] for _, rec in burst)
        span = (max(rec[0] for _, rec in burst) - first) / 1e9
        dsts = [k[1] for k, _ in burst]
        base = self._base(src, svc)
        label = _label(svc)
        h = self.hosts_.get(src)
        seen = (
            f"host first seen in admin sessions {_when(int(h['first_ns']))}"
            if h is not None and int(h["first_ns"]) < first
            else f"first admin session seen from this host {_when(first)}"
        )
        if not self.warmed_:
            seen += "; no learnt baseline (stream shorter than the warm-up)"
        extra = ""
        if svc == "smb":
            rpc = [d for d in dsts if f"{src}|{d}|rpc" in self.pairs_ or (src, d) in rpc_peers]
            if rpc:
                extra = f"; SMB then RPC to {_shown(rpc, 4)} (PsExec-like)"
        text = (
            f"{src} opened {label} sessions to {len(dsts)} internal hosts it never used {label} "
            f"with before ({_shown(dsts)}) within {fmt_duration(span)}{extra}; normal for this "
            f"host: {base} new admin peers per {fmt_duration(self.config.window_s)}; {seen}"
        )
        n = len(dsts)
        score = 1.0 - math.exp(-math.log(2.0) * n / bar)
        return Alert(
            alert_id=self._ids(f"{SIG_FANOUT}|{src}|{svc}|{first}"),
            ts_ns=first,
            signature=SIG_FANOUT,
            signature_id=SID_FANOUT,
            category="lateral-movement",
            severity=1 if n >= 3 * bar else 2,
            score=score,
            explanation=text,
            entity=src,
            mitre_technique_id=(TECHNIQUES.get(svc, "T1021"),),
            mitre_tactic=("lateral-movement",),
            src_ip=src,
            dest_ip=dsts[0],
            dest_port=self._port(svc),
            proto="TCP",
            first_ts_ns=first,
            last_ts_ns=last,
            observed={
                "new_peers": float(n),
                "duration_s": round(span, 6),
                "flows": float(sum(rec[2] for _, rec in burst)),
                "payload_bytes": float(sum(rec[3] for _, rec in burst)),
            },
            baseline={"new_peers": float(base), "threshold": float(bar)},
        )

    def _chain_alert(
        self, b: str, links: list[tuple[Triple, list[int], tuple[str, str, int, int]]]
    ) -> Alert:
        links.sort(key=lambda x: (x[1][0], x[0]))
        first_key, first_rec, first_in = links[0]
        onward = list(dict.fromkeys(k[1] for k, _, _ in links))
        sources = list(dict.fromkeys(inb[0] for _, _, inb in links))
        delay = max(0.0, (first_rec[0] - first_in[2]) / 1e9)
        svcs = list(dict.fromkeys(_label(k[2]) for k, _, _ in links))
        inbound = _label(first_in[1])
        text = (
            f"{b} received {_a(inbound)} {inbound} session from {_shown(sources, 3)} at "
            f"{_when(first_in[2])} and {fmt_duration(delay)} later opened new "
            f"{'/'.join(svcs)} sessions to {len(onward)} internal host(s) ({_shown(onward)}): "
            f"a pivot {sources[0]} → {b} → {onward[0]}; normal for this host: no onward admin "
            "sessions after inbound ones"
        )
        first = min(inb[2] for _, _, inb in links)
        last = max(rec[1] for _, rec, _ in links)
        hops = len(onward)
        techniques = tuple(dict.fromkeys(TECHNIQUES.get(k[2], "T1021") for k, _, _ in links))
        return Alert(
            alert_id=self._ids(f"{SIG_CHAIN}|{b}|{first_rec[0]}"),
            ts_ns=first_rec[0],
            signature=SIG_CHAIN,
            signature_id=SID_CHAIN,
            category="lateral-movement",
            severity=2,
            score=1.0 - 0.5**hops,
            explanation=text,
            entity=b,
            mitre_technique_id=techniques,
            mitre_tactic=("lateral-movement",),
            src_ip=b,
            dest_ip=onward[0],
            dest_port=self._port(first_key[2]),
            proto="TCP",
            first_ts_ns=first,
            last_ts_ns=last,
            observed={
                "onward_peers": float(hops),
                "inbound_peers": float(len(sources)),
                "delay_s": round(delay, 6),
            },
            baseline={"relay_chains": float(self._relay(b))},
        )
