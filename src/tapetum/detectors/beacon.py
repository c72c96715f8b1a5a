"""C2 beaconing: connections (or packets in one flow) at regular intervals, RITA-style.

Series are kept per (source, destination, port, protocol) and, when TLS/HTTP events name the
server, per (source, SNI / HTTP host) — an implant behind a CDN changes address, not name. Each
series holds the newest `max_points` connection start times and sizes; at most `max_series` are
kept (the least recently active are evicted and counted). A series is scored (`features.beacon`:
timing and size regularity, coverage, histogram evenness; jitter and missed beacons tolerated)
when it is complete — idle for `idle_periods` periods beyond the meter's lag — or every
`recheck_s` of data time while it runs. One alert per series per episode: a series that alerted
stays quiet until it has been idle long enough to end the episode.

Long-lived single connections (one TCP session or UDP flow carrying the beacon) are judged from
their first packets' timing when the flow ends.

Prevalence: a destination contacted by at least `prevalence_fraction` of the sources seen (and
`prevalence_min_sources`) is popular infrastructure (update, telemetry, time servers), not C2, and
its regularity is down-weighted; so are the configured infrastructure ports (DNS, NTP, …).
Allowlisted destinations are never scored. Prevalence is learnt from every flow observed: a
destination's popularity is a fact about the network, which one implant cannot fake.
ATT&CK: T1071 Application Layer Protocol (T1071.001 Web Protocols for TLS/HTTP), tactic
command-and-control.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from tapetum.config import BeaconSection
from tapetum.detectors.common import (
    AlertIds,
    BoundedDict,
    InternalNetworks,
    by_time,
    check_state,
    fmt_bytes,
    fmt_duration,
)
from tapetum.detectors.windows import NO_TIME
from tapetum.features.beacon import (
    KIND_FLOW,
    KIND_NAME,
    KIND_PAIR,
    BeaconRows,
    SeriesStats,
    in_flow_stats,
    make_rows,
    series_stats,
)
from tapetum.flows.key import proto_name
from tapetum.flows.meter import FlowBatch
from tapetum.records import Alert, AppEvent, HttpEvent, TlsEvent

SIG = {KIND_PAIR: "beacon.periodic", KIND_NAME: "beacon.name", KIND_FLOW: "beacon.session"}
SID = {KIND_PAIR: 9_000_020, KIND_NAME: 9_000_021, KIND_FLOW: 9_000_022}
STATE_VERSION = 1
#: Destination addresses remembered per name series (a CDN rotates through a few).
MAX_NAME_IPS = 8
_WEB_PORTS = frozenset({80, 443, 8080, 8443})

Key = tuple[int, str, str, int, int]  # kind, source, destination (address or name), port, proto


class _Series:
    __slots__ = ("alerted", "checked_ns", "dest_ips", "sizes", "times", "total")

    def __init__(self) -> None:
        self.times: list[int] = []
        self.sizes: list[int] = []
        self.total = 0
        self.alerted = False
        self.checked_ns = 0
        self.dest_ips: dict[str, int] = {}  # connections per destination address

    def add(self, t: int, size: int, dest_ip: str, cap: int) -> None:
        k = bisect.bisect_right(self.times, t)
        self.times.insert(k, t)
        self.sizes.insert(k, size)
        self.total += 1
        if len(self.times) > cap:  # keep the newest
            del self.times[0], self.sizes[0]
        if dest_ip in self.dest_ips or len(self.dest_ips) < MAX_NAME_IPS:
            self.dest_ips[dest_ip] = self.dest_ips.get(dest_ip, 0) + 1

    def spread_over_addresses(self) -> bool:
        """No one address carries 80 % of the connections (a CDN or fast flux rotation): the
        per-address series miss part of the beacon, the name series sees all of it."""
        return max(self.dest_ips.values(), default=0) < 0.8 * sum(self.dest_ips.values())

    def mean_interval_ns(self) -> float:
        n = len(self.times)
        return (self.times[-1] - self.times[0]) / (n - 1) if n > 1 else 0.0


class BeaconDetector:
    name = "beacon"

    def __init__(self, config: BeaconSection | None = None, *, lag_s: float = 300.0) -> None:
        self.config = c = config or BeaconSection()
        self.lag_ns = int(lag_s * 1e9)
        self._infra = set()
        for item in c.infrastructure_ports:
            port, _, proto = item.partition("/")
            self._infra.add((int(port), {"tcp": 6, "udp": 17}.get(proto.lower(), 0)))
        nets: list[str] = []
        self._allow_names: list[str] = []
        for item in c.allow_destinations:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                self._allow_names.append(item.lower().removeprefix("*."))
            else:
                nets.append(item)
        self._allow_nets = InternalNetworks(nets, private=False)
        #: Learned: destination (address or name) -> sources that contacted it (capped).
        self.sources_: OrderedDict[str, set[str]] = OrderedDict()
        #: Learned: every source seen (capped at max_destinations).
        self.all_sources_: set[str] = set()
        #: Analyst feedback: source -> destinations (addresses) whose periodic contact was
        #: judged normal for it; such series are not scored (at most max_series pairs).
        self.accepted_: dict[str, set[str]] = {}
        self.dropped_accepted = 0
        self.evicted_series = 0
        self.dropped_destinations = 0
        self.dropped_names = 0
        self._series: BoundedDict[Key, _Series] = BoundedDict(c.max_series)
        self._names: BoundedDict[int, str] = BoundedDict(c.max_series * 4)  # flow_id -> SNI/host
        #: (source, destination, port, proto) -> end of its last in-flow alert.
        self._flow_alerted: BoundedDict[tuple[str, str, int, int], int] = BoundedDict(c.max_series)
        self._pending: list[Alert] = []
        self._ids = AlertIds()
        self._first_ns: int | None = None
        self._watermark = self._swept_ns = NO_TIME

    # -- contract on feature rows ------------------------------------------------------------

    def features(self, flows: FlowBatch, events: Sequence[AppEvent] = ()) -> BeaconRows:
        """Every series in these flows (named by these events), scored as one observation."""
        names = _names_of(events)
        series: dict[Key, _Series] = {}
        n = len(flows)
        observed_s = 0.0
        if n:
            observed_s = float(flows.num["end_ns"].max() - flows.num["start_ns"].min()) / 1e9
        for k, key, name_key, size, dst in self._keys(flows, names):
            t = int(flows.num["start_ns"][k])
            for kk in (key, name_key):
                if kk is not None:
                    series.setdefault(kk, _Series()).add(t, size, dst, self.config.max_points)
        items = [self._item(key, s, observed_s) for key, s in series.items()]
        items += self._flow_items(flows, observed_s)
        return make_rows(items)

    def entities(self, rows: BeaconRows) -> list[str]:
        """The entity each row is about: the source (the host that may be compromised)."""
        return list(rows.src)

    def _weights(self, rows: BeaconRows) -> np.ndarray:
        """Multipliers for popular destinations, infrastructure ports and allowlisted ones."""
        c = self.config
        # Prevalence from what was learnt plus what these rows show.
        extra: dict[str, set[str]] = {}
        for src, dest in zip(rows.src, rows.dest, strict=True):
            extra.setdefault(dest, set()).add(src)
        everyone = len(self.all_sources_ | set(rows.src))
        w = np.ones(len(rows), dtype=np.float64)
        for k, dest in enumerate(rows.dest):
            srcs = len(self.sources_.get(dest, set()) | extra[dest])
            if srcs >= c.prevalence_min_sources and srcs >= c.prevalence_fraction * everyone:
                w[k] *= c.prevalence_weight
            if (int(rows.dport[k]), int(rows.proto[k])) in self._infra:
                w[k] *= c.infrastructure_weight
            if self._allowed(dest):
                w[k] = 0.0
            acc = self.accepted_.get(rows.src[k])
            if acc and (dest in acc or not acc.isdisjoint(rows.dest_ips[k])):
                w[k] = 0.0
        return w

    def weighted_regularity(self, rows: BeaconRows) -> np.ndarray:
        c = self.config
        enough = np.where(
            rows.kind == KIND_FLOW,
            rows.connections >= c.in_flow_min_packets,
            rows.connections >= c.min_connections,
        )
        ok = enough & (rows.period_s >= c.min_period_s)
        return np.where(ok, rows.regularity * self._weights(rows), 0.0)

    def score(self, rows: BeaconRows) -> np.ndarray:
        """0..1: regularity mapped so that `alert_regularity` gives 0.5 and 1 gives 1."""
        if len(rows) == 0:
            return np.zeros(0)
        thr = self.config.alert_regularity
        r = self.weighted_regularity(rows)
        low = 0.5 * r / thr
        high = 0.5 + 0.5 * (r - thr) / max(1e-9, 1.0 - thr)
        return np.asarray(np.clip(np.where(r < thr, low, high), 0.0, 1.0))

    def learn(self, rows: BeaconRows) -> None:
        """Fold the rows' (source, destination) pairs into prevalence."""
        for src, dest in zip(rows.src, rows.dest, strict=True):
            self._seen(src, dest)

    def accept_feedback(
        self,
        entity: str,
        observed: Mapping[str, float],
        *,
        signature: str = "",
        dest: str | None = None,
    ) -> bool:
        """An analyst judged `entity`'s periodic contact with `dest` normal (an updater, a
        monitoring agent). Regularity has no "twice as much", so the judged-normal level is
        the top: that (source, destination) pair no longer alerts; other destinations do."""
        if not dest:
            return False
        acc = self.accepted_.get(entity)
        if acc is not None and dest in acc:
            return False
        if sum(len(v) for v in self.accepted_.values()) >= self.config.max_series:
            self.dropped_accepted += 1
            return False
        self.accepted_.setdefault(entity, set()).add(dest)
        return True

    def explain(self, rows: BeaconRows, idx: np.ndarray) -> list[str]:
        weights = self._weights(rows)
        out = []
        for k in idx.tolist():
            kind = int(rows.kind[k])
            proto = proto_name(int(rows.proto[k]))
            port = int(rows.dport[k])
            n = int(rows.connections[k])
            period = float(rows.period_s[k])
            span = fmt_duration(float(rows.span_s[k]))
            if kind == KIND_FLOW:  # the flow's life, not the span of its first packets
                span = fmt_duration((int(rows.last_ns[k]) - int(rows.first_ns[k])) / 1e9)
            if kind == KIND_NAME:
                ips = rows.dest_ips[k]
                where = f"{rows.dest[k]} (TLS/HTTP name; {len(ips)} addresses) on {port}/{proto}"
            else:
                where = f"{rows.dest[k]}:{port}/{proto}"
            if kind == KIND_FLOW:
                what = (
                    f"{rows.src[k]} sent data every {period:.1f} s in one {proto} connection to "
                    f"{where} ({n} packets among its first ones; it lasted {span})"
                )
                size = f"{float(rows.bytes_median[k]):.0f} B per packet"
            else:
                what = f"{rows.src[k]} connected to {where} {n:,} times over {span}"
                size = f"{fmt_bytes(float(rows.bytes_median[k]))} per connection"
            missed = int(rows.missed[k])
            text = (
                f"{what}, every {period:.1f} s ± {100 * float(rows.jitter[k]):.0f}% "
                f"(MAD/median of intervals), {100 * float(rows.on_grid[k]):.0f}% on the period's "
                f"grid{f', {missed} missed' if missed else ''}; {size} ± "
                f"{float(rows.bytes_mad[k]):.0f} B; regularity {float(rows.regularity[k]):.2f} "
                f"(timing {float(rows.timing_score[k]):.2f}, "
                f"sizes {float(rows.size_score[k]):.2f}, "
                f"coverage {float(rows.coverage[k]):.2f}, spread "
                f"{float(rows.histogram_score[k]):.2f}); alert at "
                f"{self.config.alert_regularity:.2f}"
            )
            srcs = len(self.sources_.get(rows.dest[k], set()) | {rows.src[k]})
            text += f"; {srcs} of {max(1, len(self.all_sources_))} sources seen contact it"
            if weights[k] < 1.0:
                text += f" (down-weighted ×{weights[k]:.2f}: popular or infrastructure)"
            out.append(text)
        return out

    def state(self) -> dict[str, Any]:
        c = self.config
        return {
            "detector": self.name,
            "version": STATE_VERSION,
            "params": {
                "min_connections": c.min_connections,
                "alert_regularity": c.alert_regularity,
                "jitter_tolerance": c.jitter_tolerance,
            },
            "sources": {d: sorted(s) for d, s in self.sources_.items()},
            "all_sources": sorted(self.all_sources_),
            **({"accepted": {s: sorted(d) for s, d in self.accepted_.items()}}
               if self.accepted_ else {}),
        }  # fmt: skip

    @classmethod
    def from_state(
        cls, state: dict[str, Any], config: BeaconSection | None = None
    ) -> BeaconDetector:
        check_state(state, cls.name, STATE_VERSION)
        det = cls(config)
        det.sources_ = OrderedDict((str(d), set(map(str, s))) for d, s in state["sources"].items())
        det.all_sources_ = set(map(str, state["all_sources"]))
        det.accepted_ = {str(s): set(map(str, d)) for s, d in state.get("accepted", {}).items()}
        return det

    # -- helpers -----------------------------------------------------------------------------

    def _allowed(self, dest: str) -> bool:
        if self._allow_nets.networks:
            try:
                ipaddress.ip_address(dest)
            except ValueError:
                pass
            else:
                return dest in self._allow_nets  # an address is judged by the networks alone
        d = dest.lower()
        return any(d == n or d.endswith("." + n) for n in self._allow_names)

    def _seen(self, src: str, dest: str) -> None:
        c = self.config
        if len(self.all_sources_) < c.max_destinations:
            self.all_sources_.add(src)
        s = self.sources_.get(dest)
        if s is None:
            if len(self.sources_) >= c.max_destinations:
                self.dropped_destinations += 1
                return
            s = self.sources_[dest] = set()
        if len(s) < c.max_sources_per_destination:
            s.add(src)

    def _keys(
        self, flows: FlowBatch, names: dict[int, str]
    ) -> list[tuple[int, Key, Key | None, int, str]]:
        """Per flow (in start order): index, pair key, name key (or None), bytes, destination."""
        num = flows.num
        order = np.argsort(num["start_ns"], kind="stable").tolist()
        size = (num["bytes_toserver"] + num["bytes_toclient"]).tolist()
        proto, dport, fid = (
            num["proto"].tolist(),
            num["dest_port"].tolist(),
            num["flow_id"].tolist(),
        )
        out = []
        for k in order:
            src, dst = flows.src_ip[k], flows.dest_ip[k]
            if _group_address(dst):
                continue  # multicast and broadcast announcements are not C2
            key = (KIND_PAIR, src, dst, dport[k], proto[k])
            name = names.get(fid[k]) if self.config.by_name else None
            name_key = (KIND_NAME, src, name, dport[k], proto[k]) if name else None
            out.append((k, key, name_key, size[k], dst))
        return out

    def _item(
        self, key: Key, s: _Series, observed_s: float
    ) -> tuple[int, str, str, tuple[str, ...], int, int, SeriesStats, int, int]:
        c = self.config
        stats = series_stats(
            np.asarray(s.times, dtype=np.int64),
            np.asarray(s.sizes, dtype=np.int64),
            observed_s=observed_s,
            horizon_s=c.coverage_horizon_s,
            tolerance=c.jitter_tolerance,
        )
        kind, src, dest, port, proto = key
        ips = tuple(sorted(s.dest_ips, key=lambda ip: -s.dest_ips[ip]))
        return (kind, src, dest, ips, port, proto, stats, s.times[0], s.times[-1])

    def _flow_items(
        self, flows: FlowBatch, observed_s: float
    ) -> list[tuple[int, str, str, tuple[str, ...], int, int, SeriesStats, int, int]]:
        c = self.config
        if not c.in_flow or len(flows) == 0:
            return []
        num = flows.num
        dur = (num["end_ns"] - num["start_ns"]) / 1e9
        # Enough packets and a long life; TCP and UDP only (an ICMP echo series is a ping).
        proto_ok = (num["proto"] == 6) | (num["proto"] == 17)
        long = dur >= max(c.in_flow_min_duration_s, c.in_flow_min_packets * c.min_period_s)
        cand = np.flatnonzero((flows.seq_n >= c.in_flow_min_packets) & long & proto_ok)
        out: list[tuple[int, str, str, tuple[str, ...], int, int, SeriesStats, int, int]] = []
        for k in cand.tolist():
            proto = int(num["proto"][k])
            st = in_flow_stats(
                flows.seq_size[k], flows.seq_dir[k], flows.seq_ts[k], int(flows.seq_n[k]), proto,
                duration_s=float(dur[k]), observed_s=observed_s,
                horizon_s=c.coverage_horizon_s, tolerance=c.jitter_tolerance,
            )  # fmt: skip
            if st.n < c.in_flow_min_packets:
                continue
            dst = flows.dest_ip[k]
            if _group_address(dst):
                continue
            start = int(num["start_ns"][k])
            out.append(
                (KIND_FLOW, flows.src_ip[k], dst, (dst,), int(num["dest_port"][k]), proto, st,
                 start, int(num["end_ns"][k]))
            )  # fmt: skip
        return out

    # -- streaming ---------------------------------------------------------------------------

    def observe_events(self, events: Sequence[AppEvent]) -> None:
        """Remember the server name of TLS/HTTP flows (the flow itself arrives later)."""
        if not self.config.by_name:
            return
        for fid, name in _names_of(events).items():
            self._names[fid] = name
        self.dropped_names += self._names.trim()

    def observe(self, flows: FlowBatch) -> None:
        if len(flows) == 0:
            return
        start = int(flows.num["start_ns"].min())
        self._first_ns = start if self._first_ns is None else min(self._first_ns, start)
        self._watermark = max(self._watermark, int(flows.num["end_ns"].max()))
        fids = flows.num["flow_id"].tolist()
        names = {f: n for f in fids if (n := self._names.pop(f, None)) is not None}
        starts = flows.num["start_ns"].tolist()
        for k, key, name_key, size, dst in self._keys(flows, names):
            for kk in (key, name_key):
                if kk is None:
                    continue
                self._seen(kk[1], kk[2])
                if self._allowed(kk[2]):
                    continue
                self._add(kk, starts[k], size, dst)
        self.evicted_series += self._series.trim()
        self._pending.extend(self._flow_alerts(flows))

    def _add(self, key: Key, t: int, size: int, dst: str) -> None:
        c = self.config
        s = self._series.get(key)
        if s is not None:
            self._series.touch(key, s)
            n = len(s.times)
            gap = c.idle_periods * s.mean_interval_ns()
            if n >= 3 and t - s.times[-1] > max(gap, c.min_period_s * 1e9):
                # The series was idle long enough: its episode is over.
                self._pending.extend(self._evaluate([(key, s)], final=True))
                s = None
        if s is None:
            s = self._series[key] = _Series()
            s.checked_ns = t  # the first check of a running series comes recheck_s after it began
        s.add(t, size, dst, c.max_points)

    def _observed_s(self) -> float:
        if self._first_ns is None:
            return 0.0
        return max(0.0, (self._watermark - self._first_ns) / 1e9)

    def _evaluate(self, batch: list[tuple[Key, _Series]], *, final: bool) -> list[Alert]:
        """Score series; alert on those above the threshold that have not alerted yet."""
        c = self.config
        todo = [
            (key, s) for key, s in batch
            if not s.alerted and len(s.times) >= c.min_connections
            # A name series adds information only when the name moved between addresses.
            and (key[0] != KIND_NAME or s.spread_over_addresses())
        ]  # fmt: skip
        if not todo:
            return []
        observed = self._observed_s()
        rows = make_rows([self._item(key, s, observed) for key, s in todo])
        scores = self.score(rows)
        hit = scores >= 0.5
        alerts = []
        for k in np.flatnonzero(hit).tolist():
            s = todo[k][1]
            s.alerted = True
            alerts.append(self._alert(rows, k, float(scores[k]), s.total))
        if final:
            self.learn(rows.take(np.flatnonzero(~hit)))
        return alerts

    def _flow_alerts(self, flows: FlowBatch) -> list[Alert]:
        items = self._flow_items(flows, self._observed_s())
        if not items:
            return []
        rows = make_rows(items)
        scores = self.score(rows)
        alerts = []
        for k in np.flatnonzero(scores >= 0.5).tolist():
            key = (rows.src[k], rows.dest[k], int(rows.dport[k]), int(rows.proto[k]))
            last = self._flow_alerted.get(key)
            # One alert per connection pair per episode (a reconnecting implant: one more
            # after recheck_s of data time).
            if last is not None and rows.first_ns[k] - last < self.config.recheck_s * 1e9:
                continue
            self._flow_alerted.touch(key, int(rows.last_ns[k]))
            alerts.append(self._alert(rows, k, float(scores[k]), int(rows.connections[k])))
        self._flow_alerted.trim()
        return alerts

    def poll(self, watermark_ns: int | None = None) -> list[Alert]:
        c = self.config
        wm = self._watermark if watermark_ns is None else max(self._watermark, watermark_ns)
        out, self._pending = self._pending, []
        if wm - self._swept_ns < c.check_interval_s * 1e9:
            return by_time(out)
        self._swept_ns = wm
        complete, running = [], []
        recheck = int(c.recheck_s * 1e9)
        for key, s in self._series.items():
            idle = wm - s.times[-1]
            if idle > c.idle_periods * s.mean_interval_ns() + self.lag_ns:
                complete.append((key, s))
            elif (
                not s.alerted and len(s.times) >= c.min_connections and wm - s.checked_ns >= recheck
            ):
                running.append((key, s))
        out += self._evaluate(complete, final=True)
        for key, _ in complete:
            del self._series[key]
        for _, s in running:
            s.checked_ns = wm
        out += self._evaluate(running, final=False)
        return by_time(out)

    def flush(self) -> list[Alert]:
        out, self._pending = self._pending, []
        out += self._evaluate(list(self._series.items()), final=True)
        self._series.clear()
        self._names.clear()
        self._flow_alerted.clear()
        self._first_ns = None
        self._watermark = self._swept_ns = NO_TIME
        return by_time(out)

    def _alert(self, rows: BeaconRows, k: int, score: float, total: int) -> Alert:
        kind = int(rows.kind[k])
        src, dest, port = rows.src[k], rows.dest[k], int(rows.dport[k])
        proto = proto_name(int(rows.proto[k]))
        (text,) = self.explain(rows, np.array([k]))
        if total > int(rows.connections[k]):
            text += f"; {total:,} connections in this episode in all"
        web = kind == KIND_NAME or port in _WEB_PORTS
        key = f"{SIG[kind]}|{src}|{dest}|{port}|{proto}|{rows.first_ns[k]}"
        weights = self._weights(rows.take(np.array([k])))
        srcs = len(self.sources_.get(dest, set()) | {src})
        return Alert(
            alert_id=self._ids(key),
            ts_ns=int(rows.first_ns[k]),
            signature=SIG[kind],
            signature_id=SID[kind],
            category="c2-beacon",
            severity=2 if score >= 0.75 else 3,
            score=score,
            explanation=text,
            entity=src,
            mitre_technique_id=("T1071.001",) if web else ("T1071",),
            mitre_tactic=("command-and-control",),
            src_ip=src,
            dest_ip=rows.dest_ips[k][0] if rows.dest_ips[k] else None,
            dest_port=port,
            proto=proto,
            first_ts_ns=int(rows.first_ns[k]),
            last_ts_ns=int(rows.last_ns[k]),
            observed={
                "connections": float(total if kind != KIND_FLOW else rows.connections[k]),
                "period_s": round(float(rows.period_s[k]), 6),
                "jitter": round(float(rows.jitter[k]), 4),
                "on_grid": round(float(rows.on_grid[k]), 4),
                "missed": float(rows.missed[k]),
                "bytes_median": float(rows.bytes_median[k]),
                "bytes_mad": float(rows.bytes_mad[k]),
                "span_s": round(float(rows.span_s[k]), 3),
                "timing_score": round(float(rows.timing_score[k]), 4),
                "size_score": round(float(rows.size_score[k]), 4),
                "coverage": round(float(rows.coverage[k]), 4),
                "histogram_score": round(float(rows.histogram_score[k]), 4),
                "regularity": round(float(rows.regularity[k]), 4),
            },
            baseline={
                "alert_regularity": self.config.alert_regularity,
                "weight": float(weights[0]),
                "sources_of_destination": float(srcs),
                "sources_seen": float(max(1, len(self.all_sources_))),
            },
        )


@lru_cache(maxsize=65_536)
def _group_address(ip: str) -> bool:
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return a.is_multicast or ip == "255.255.255.255"


def _names_of(events: Sequence[AppEvent]) -> dict[int, str]:
    out: dict[int, str] = {}
    for e in events:
        if isinstance(e, TlsEvent) and e.sni:
            out[e.flow.flow_id] = e.sni.lower().rstrip(".")
        elif isinstance(e, HttpEvent) and e.hostname:
            out[e.flow.flow_id] = e.hostname.lower().split(":")[0]
    return out
