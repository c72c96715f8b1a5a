"""Exfiltration: an internal host sends unusually much to an external destination.

Rows (`features.exfil`): per (internal host, external destination) and per internal host in
windows of data time (default 10 min and 1 h). A row alerts when the bytes the host sent pass a
bar (score 1 - 2^(-bytes_out / bar): 0.5 at the bar) and the upload/download ratio is high:

- the host's own baseline: per window length, an EWMA of log10 bytes sent per window and of its
  absolute deviation, per hour of the day (24 buckets) once that hour has `min_hour_windows`
  windows, else over all hours once the host has `min_history_windows`. "Usual" is mean +
  `mad_k` deviations; the bar is that or `min_bytes_out`, whichever is higher. Only windows that
  did not alert are learnt, and each update is clipped to the edge of normal (bounded
  adaptation: one burst cannot rewrite the baseline).
- without history (first run over a capture): the absolute floor `floor_bytes` with an
  upload/download ratio of at least `floor_ratio`. Host rows (all destinations) alert only
  against a baseline.
- destination rarity: the bar is multiplied by the number of internal hosts that ever talked to
  the destination (prevalence; up to `common_factor`), and by `known_destination_factor` when
  this host has talked to it before (not a first contact).
- routine: a pair that uploaded at least `min_bytes_out` within an hour of this hour of the day
  on `routine_days` earlier days (a nightly backup) is judged against `routine_factor` times its
  usual volume then; the first nights of a new routine alert, later ones do not.

A pair that alerted in a short window is not reported again for the long window around it,
nor its host's total. Memory is bounded (hosts, destinations, pairs per window, routine pairs);
what the caps dropped is counted in `dropped_`.
ATT&CK: T1041 Exfiltration Over C2 Channel (web ports, where C2 usually rides), else T1048
Exfiltration Over Alternative Protocol; tactic exfiltration.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tapetum.config import ExfilSection
from tapetum.detectors.common import (
    AlertIds,
    InternalNetworks,
    by_time,
    check_state,
    fmt_bytes,
    fmt_duration,
    reading_state,
)
from tapetum.detectors.windows import DataTimeWindows
from tapetum.errors import ModelError
from tapetum.features.exfil import Crossing, ExfilRows, PairMap, accumulate, rows_from
from tapetum.flows.meter import FlowBatch
from tapetum.records import Alert, AppEvent

SIG_UPLOAD = "exfil.upload"
SIG_HOST = "exfil.host_upload"
SID_UPLOAD = 9_000_050
SID_HOST = 9_000_051
STATE_VERSION = 1
#: Hosts remembered per destination for its prevalence (beyond it the destination is common).
_HOSTS_PER_DEST = 64
#: Routine uploads remembered per (window length, host, destination): about two weeks of nights.
_ROUTINE_ENTRIES = 16
#: Smallest deviation used for "usual" (log10): a perfectly regular host still gets ~1.4x room.
_MIN_DEV = 0.15
_WEB_PORTS = frozenset({80, 443, 8080, 8443})
_LN2 = math.log(2.0)
#: An upload judged normal by an analyst scores 0.29 again; twice as much alerts (score 0.5).
_FEEDBACK_FACTOR = 2.0
#: Profile layout per host and window length: 24 hour buckets then the all-hours bucket, each
#: [windows, EWMA mean of log10(1 + bytes), EWMA absolute deviation].
_ALL_HOURS = 24


class ExfilDetector:
    name = "exfil"

    def __init__(self, config: ExfilSection | None = None, *, lag_s: float = 300.0) -> None:
        self.config = config or ExfilSection()
        c = self.config
        self.windows_ns = [int(w * 1e9) for w in c.windows_s]
        self.lag_ns = int(lag_s * 1e9)
        # Configured networks replace the default (private, link-local, loopback).
        self.internal = InternalNetworks(c.internal_networks, private=not c.internal_networks)
        self._offset_s = c.utc_offset_h * 3600.0
        #: Learned: host -> per window length, 25 buckets of [n, mean, deviation].
        self.profile_: dict[str, list[list[list[float]]]] = {}
        #: Learned: destination -> internal hosts that talked to it (at most `_HOSTS_PER_DEST`).
        self.dest_hosts_: dict[str, list[str]] = {}
        #: Learned: internal hosts seen talking to the outside (for "1 of 57 hosts").
        self.hosts_seen_: dict[str, None] = {}
        #: Learned: "win|host|dest" -> [[day, hour, bytes_out], ...] of large uploads.
        self.routine_: dict[str, list[list[int]]] = {}
        self.dropped_: dict[str, int] = {"pairs": 0, "hosts": 0, "destinations": 0, "routine": 0}
        #: Analyst feedback: "host|dest" ("host|" for the host's total) -> bytes out per window
        #: judged normal; the bar for that pair is at least twice it (at most max_hosts keys).
        self.accepted_: dict[str, float] = {}
        #: Per window length, its windows.
        self._windows: list[DataTimeWindows[PairMap]] = [
            DataTimeWindows(length, self.lag_ns, dict) for length in self.windows_ns
        ]
        #: (host, dest) -> end of the last window it alerted in ("" dest: the host's total).
        self._alerted: dict[tuple[str, str], int] = {}
        self._ids = AlertIds()

    # -- time ---------------------------------------------------------------------------------

    def _hour_day(self, t_ns: int) -> tuple[int, int]:
        s = t_ns / 1e9 + self._offset_s
        return int(s // 3600) % 24, int(s // 86_400)

    def _clock(self, t_ns: int, date: bool = False) -> str:
        d = dt.datetime.fromtimestamp(t_ns / 1e9 + self._offset_s, dt.UTC)
        return d.strftime("%Y-%m-%d %H:%M" if date else "%H:%M")

    # -- contract on feature rows ------------------------------------------------------------

    def features(self, flows: FlowBatch, events: Sequence[AppEvent] = ()) -> ExfilRows:
        """Rows of these flows taken as one window of the longest configured length."""
        pairs: PairMap = {}
        accumulate(pairs, Crossing.from_flows(flows, self.internal), None, 1 << 62)
        return rows_from(pairs, len(self.windows_ns) - 1, None)

    def entities(self, rows: ExfilRows) -> list[str]:
        """The internal host of each row."""
        return list(rows.host)

    def _usual(self, host: str, win: int, hour: int) -> tuple[str, float]:
        """("hour" | "all" | "none", upper edge of usual bytes per window)."""
        c = self.config
        prof = self.profile_.get(host)
        if prof is None or win >= len(prof):
            return "none", 0.0
        for mode, b in (("hour", prof[win][hour]), ("all", prof[win][_ALL_HOURS])):
            need = c.min_hour_windows if mode == "hour" else c.min_history_windows
            if b[0] >= need:
                return mode, 10.0 ** (b[1] + c.mad_k * max(b[2], _MIN_DEV)) - 1.0
        return "none", 0.0

    def _routine(self, win: int, host: str, dest: str, bucket_ns: int) -> tuple[int, float]:
        """Earlier days with a large upload near this hour, and its usual (median) volume."""
        entries = self.routine_.get(f"{win}|{host}|{dest}")
        if not entries:
            return 0, 0.0
        hour, day = self._hour_day(bucket_ns)
        per_day: dict[int, int] = {}
        for d, h, b in entries:
            if d < day and min((h - hour) % 24, (hour - h) % 24) <= 1:
                per_day[d] = max(per_day.get(d, 0), b)
        if not per_day:
            return 0, 0.0
        return len(per_day), float(np.median(list(per_day.values())))

    def _judge(self, rows: ExfilRows) -> dict[str, np.ndarray]:
        """Scores and what they were measured against, per row."""
        c = self.config
        n = len(rows)
        window_hosts: dict[str, set[str]] = {}
        for h, d in zip(rows.host, rows.dest, strict=True):
            if d:
                window_hosts.setdefault(d, set()).add(h)
        mode = np.zeros(n, dtype=np.int64)  # 0 none, 1 all hours, 2 this hour
        usual = np.zeros(n)
        prevalence = np.zeros(n, dtype=np.int64)
        first_contact = np.zeros(n, dtype=bool)
        routine_days = np.zeros(n, dtype=np.int64)
        routine_bytes = np.zeros(n)
        bar = np.zeros(n)
        ratio_needed = np.zeros(n)
        for k in range(n):
            h, d, win = rows.host[k], rows.dest[k], int(rows.win[k])
            hour, _ = self._hour_day(int(rows.bucket_ns[k]))
            m, u = self._usual(h, win, hour)
            mode[k] = {"none": 0, "all": 1, "hour": 2}[m]
            usual[k] = u
            if m == "none":
                b, ratio_needed[k] = float(c.floor_bytes), c.floor_ratio
            else:
                b, ratio_needed[k] = max(float(c.min_bytes_out), u), c.min_ratio
            if d:
                known = self.dest_hosts_.get(d, [])
                prevalence[k] = len(window_hosts[d].union(known))
                first_contact[k] = h not in known and len(known) < _HOSTS_PER_DEST
                b *= min(c.common_factor, max(1.0, float(prevalence[k])))
                if not first_contact[k]:
                    b *= c.known_destination_factor
            accepted = self.accepted_.get(f"{h}|{d}")
            if accepted is not None:
                b = max(b, _FEEDBACK_FACTOR * accepted)
            days, rb = self._routine(win, h, d, int(rows.bucket_ns[k]))
            routine_days[k], routine_bytes[k] = days, rb
            if days >= c.routine_days:
                b = max(b, c.routine_factor * rb)
            bar[k] = b
        out = rows.bytes_out.astype(np.float64)
        score = 1.0 - np.exp(-_LN2 * out / bar)
        ratio = rows.ratio()
        low_ratio = ratio < ratio_needed
        score = np.where(low_ratio, np.minimum(score, 0.49 * ratio / ratio_needed), score)
        small = out < c.min_bytes_out
        score = np.where(small, np.minimum(score, 0.49 * out / max(c.min_bytes_out, 1)), score)
        host_row = np.array([not d for d in rows.dest], dtype=bool)
        score = np.where(host_row & (mode == 0), 0.0, score)  # a host total needs a baseline
        return {
            "score": np.asarray(score),
            "mode": mode,
            "usual": usual,
            "bar": bar,
            "prevalence": prevalence,
            "first_contact": first_contact,
            "routine_days": routine_days,
            "routine_bytes": routine_bytes,
        }

    def score(self, rows: ExfilRows) -> np.ndarray:
        if len(rows) == 0:
            return np.zeros(0)
        return self._judge(rows)["score"]

    def learn(self, rows: ExfilRows) -> None:
        """Take rows as normal: host totals update the host's profile; every row updates
        prevalence (longest window only, so "ever talked" is counted once) and routine."""
        self._remember(rows)
        c = self.config
        for k in range(len(rows)):
            if rows.dest[k]:
                continue
            prof = self._profile(rows.host[k])
            if prof is None:
                continue
            hour, _ = self._hour_day(int(rows.bucket_ns[k]))
            x = math.log10(1.0 + float(rows.bytes_out[k]))
            win = int(rows.win[k])
            for b in (prof[win][hour], prof[win][_ALL_HOURS]):
                # A running mean over the first windows, an EWMA after; once the bucket is in
                # use, a value beyond the edge of normal moves it only as far as the edge would
                # (bounded adaptation).
                weight = max(c.alpha, 1.0 / (b[0] + 1.0))
                if b[0] >= c.min_hour_windows:
                    edge = c.mad_k * max(b[2], _MIN_DEV)
                    x_b = min(max(x, b[1] - edge), b[1] + edge)
                else:
                    x_b = x
                b[1] += weight * (x_b - b[1])
                b[2] += weight * (abs(x_b - b[1]) - b[2])
                b[0] += 1.0

    def accept_feedback(
        self,
        entity: str,
        observed: Mapping[str, float],
        *,
        signature: str = "",
        dest: str | None = None,
    ) -> bool:
        """An analyst judged `observed["bytes_out"]` per window from `entity` (to `dest`, or in
        total) normal: that pair's bar becomes at least twice it."""
        out = observed.get("bytes_out")
        if out is None or out <= 0:
            return False
        key = f"{entity}|{dest or ''}"
        if out <= self.accepted_.get(key, 0.0):
            return False
        if key not in self.accepted_ and len(self.accepted_) >= self.config.max_hosts:
            self.dropped_["accepted"] = self.dropped_.get("accepted", 0) + 1
            return False
        self.accepted_[key] = float(out)
        return True

    def _profile(self, host: str) -> list[list[list[float]]] | None:
        prof = self.profile_.get(host)
        if prof is None:
            if len(self.profile_) >= self.config.max_hosts:
                self.dropped_["hosts"] += 1
                return None
            prof = self.profile_[host] = [
                [[0.0, 0.0, 0.0] for _ in range(_ALL_HOURS + 1)] for _ in self.windows_ns
            ]
        return prof

    def _remember(self, rows: ExfilRows) -> None:
        """Prevalence, hosts seen and routine uploads: recorded for alerting rows too (they
        are facts about who talks to whom, not a judgement of normal)."""
        c = self.config
        longest = len(self.windows_ns) - 1
        for k in range(len(rows)):
            h, d, win = rows.host[k], rows.dest[k], int(rows.win[k])
            if win == longest:
                if h not in self.hosts_seen_ and len(self.hosts_seen_) < c.max_hosts:
                    self.hosts_seen_[h] = None
                if d:
                    hosts = self.dest_hosts_.get(d)
                    if hosts is None:
                        if len(self.dest_hosts_) >= c.max_destinations:
                            self.dropped_["destinations"] += 1
                            hosts = None
                        else:
                            hosts = self.dest_hosts_[d] = []
                    if hosts is not None and h not in hosts and len(hosts) < _HOSTS_PER_DEST:
                        hosts.append(h)
            out = int(rows.bytes_out[k])
            if out >= c.min_bytes_out:
                key = f"{win}|{h}|{d}"
                entries = self.routine_.get(key)
                if entries is None:
                    if len(self.routine_) >= c.max_routine_pairs:
                        self.dropped_["routine"] += 1
                        continue
                    entries = self.routine_[key] = []
                hour, day = self._hour_day(int(rows.bucket_ns[k]))
                entries.append([day, hour, out])
                del entries[:-_ROUTINE_ENTRIES]

    def explain(self, rows: ExfilRows, idx: np.ndarray) -> list[str]:
        if len(rows) == 0:
            return []
        j = self._judge(rows)
        return [self._text(rows, j, k) for k in np.asarray(idx, dtype=np.int64).tolist()]

    def _text(self, rows: ExfilRows, j: dict[str, np.ndarray], k: int) -> str:
        c = self.config
        h, d, win = rows.host[k], rows.dest[k], int(rows.win[k])
        first, last = int(rows.first_ns[k]), int(rows.last_ns[k])
        zone = "UTC" if not c.utc_offset_h else f"UTC{c.utc_offset_h:+g}"
        when = f"on {self._clock(first, True)[:10]} between {self._clock(first)} and "
        when += f"{self._clock(last, last // 86_400_000_000_000 != first // 86_400_000_000_000)}"
        when += f" {zone}"
        out, got = int(rows.bytes_out[k]), int(rows.bytes_in[k])
        flows = int(rows.flows[k])
        span = fmt_duration((last - first) / 1e9)
        conns = f"{flows:,} connection{'s' if flows != 1 else ''} over {span}"
        ratio = f"upload/download {out / max(got, 1):,.0f}:1, {fmt_bytes(got)} received"
        if d:
            what = f"{h} sent {fmt_bytes(out)} to {d} {when} ({conns}, port {int(rows.port[k])}; "
        else:
            n = int(rows.peers[k])
            what = f"{h} sent {fmt_bytes(out)} to {n:,} external destinations {when} ({conns}; "
        parts = [what + ratio + ")"]
        window = fmt_duration(c.windows_s[win])
        mode = int(j["mode"][k])
        usual = fmt_bytes(float(j["usual"][k]))
        if mode == 2:
            parts.append(f"its usual upload for this hour is under {usual} per {window}")
        elif mode == 1:
            parts.append(f"no history at this hour; its usual upload is under {usual} per {window}")
        else:
            parts.append(
                f"no baseline yet for this host (floor {fmt_bytes(c.floor_bytes)} per {window} "
                f"with upload/download at least {c.floor_ratio:g}:1)"
            )
        days = int(j["routine_days"][k])
        if days:
            parts.append(
                f"it uploaded {fmt_bytes(float(j['routine_bytes'][k]))} (median) near this hour "
                f"on {days} earlier day{'s' if days != 1 else ''}"
            )
        if d:
            parts.append(
                "first contact with this destination"
                if j["first_contact"][k]
                else "it has talked to this destination before"
            )
            known = set(self.hosts_seen_)
            known.update(rows.host)
            p = int(j["prevalence"][k])
            parts.append(f"{p} of {len(known)} internal hosts ever talked to it")
        return "; ".join(parts) + "."

    def state(self) -> dict[str, Any]:
        c = self.config
        return {
            "detector": self.name,
            "version": STATE_VERSION,
            "params": {"windows_s": list(c.windows_s), "utc_offset_h": c.utc_offset_h},
            "profile": self.profile_,
            "dest_hosts": self.dest_hosts_,
            "hosts_seen": list(self.hosts_seen_),
            "routine": self.routine_,
            "dropped": self.dropped_,
            **({"accepted": self.accepted_} if self.accepted_ else {}),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], config: ExfilSection | None = None) -> ExfilDetector:
        check_state(state, cls.name, STATE_VERSION)
        det = cls(config)
        params = state.get("params", {})
        learnt = [float(x) for x in params.get("windows_s", [])]
        if learnt != [float(x) for x in det.config.windows_s]:
            raise ModelError(
                f"exfil detector state was learnt with windows {params.get('windows_s')} s, "
                f"configured: {det.config.windows_s} s; learn again"
            )
        with reading_state(cls.name):
            det.profile_ = {
                str(h): [[[float(x) for x in b] for b in w] for w in p]
                for h, p in state["profile"].items()
            }
            det.dest_hosts_ = {str(d): [str(h) for h in v] for d, v in state["dest_hosts"].items()}
            det.hosts_seen_ = dict.fromkeys(str(h) for h in state["hosts_seen"])
            det.routine_ = {
                str(k): [[int(x) for x in e] for e in v] for k, v in state["routine"].items()
            }
            det.dropped_.update({str(k): int(v) for k, v in state.get("dropped", {}).items()})
            det.accepted_ = {str(k): float(v) for k, v in state.get("accepted", {}).items()}
        return det

    # -- streaming ---------------------------------------------------------------------------

    def observe(self, flows: FlowBatch) -> None:
        if len(flows) == 0:
            return
        end = int(flows.num["end_ns"].max())
        for windows in self._windows:
            windows.advance(end)
        cross = Crossing.from_flows(flows, self.internal)
        if len(cross) == 0:
            return
        cap = self.config.max_pairs_per_window
        for windows in self._windows:
            for pairs, m in windows.split(cross.start_ns):
                self.dropped_["pairs"] += accumulate(pairs, cross, m, cap)

    def observe_events(self, events: Sequence[AppEvent]) -> None:
        """Volumes come from flows alone."""

    def poll(self, watermark_ns: int | None = None) -> list[Alert]:
        return self._finalize(self._keys(lambda ws: ws.complete(watermark_ns, self.lag_ns)))

    def flush(self) -> list[Alert]:
        alerts = self._finalize(self._keys(lambda ws: ws.flush()))
        self._alerted.clear()
        return alerts

    def _keys(
        self, which: Callable[[DataTimeWindows[PairMap]], list[int]]
    ) -> list[tuple[int, int]]:
        """(window length index, window) of the windows `which` picks of each length."""
        return [(win, w) for win, ws in enumerate(self._windows) for w in which(ws)]

    def _finalize(self, keys: list[tuple[int, int]]) -> list[Alert]:
        # Windows in order of their end, short before long at equal ends: a long window then
        # knows which of its pairs already alerted in a short one.
        keys.sort(key=lambda k: ((k[1] + 1) * self.windows_ns[k[0]], k[0]))
        alerts: list[Alert] = []
        for win, w in keys:
            length = self.windows_ns[win]
            start = w * length
            rows = rows_from(self._windows[win].pop(w), win, start)
            if len(rows) == 0:
                continue
            j = self._judge(rows)
            hit = j["score"] >= 0.5
            # Host totals that a pair of the same host already explains are not reported.
            pair_hit_hosts = {rows.host[k] for k in np.flatnonzero(hit) if rows.dest[k]}
            report = hit.copy()
            for k in np.flatnonzero(hit).tolist():
                h, d = rows.host[k], rows.dest[k]
                if (not d and h in pair_hit_hosts) or self._alerted.get((h, d), -1) > start:
                    report[k] = False
            for k in np.flatnonzero(report).tolist():
                h, d = rows.host[k], rows.dest[k]
                self._alerted[(h, d)] = start + length
                self._alerted[(h, "")] = start + length
                alerts.append(self._alert(rows, j, k, self._text(rows, j, k), w))
            # Not learnt: alerting rows, and the totals of hosts with an alerting pair (the
            # burst is in them too).
            hit_hosts = {rows.host[k] for k in np.flatnonzero(hit).tolist()}
            pairs = zip(rows.host, rows.dest, strict=True)
            tainted = hit | np.array([not d and h in hit_hosts for h, d in pairs], dtype=bool)
            self.learn(rows.take(~tainted))
            self._remember(rows.take(tainted))
            # Forget alert marks no window still open can overlap.
            horizon = start - max(self.windows_ns)
            for key in [key for key, end in self._alerted.items() if end < horizon]:
                del self._alerted[key]
        return by_time(alerts)

    def _alert(self, rows: ExfilRows, j: dict[str, np.ndarray], k: int, text: str, w: int) -> Alert:
        c = self.config
        h, d, win = rows.host[k], rows.dest[k], int(rows.win[k])
        first, last = int(rows.first_ns[k]), int(rows.last_ns[k])
        score = float(j["score"][k])
        port = int(rows.port[k])
        sig = SIG_UPLOAD if d else SIG_HOST
        technique = ("T1041",) if port in _WEB_PORTS else ("T1048",)
        out, got = float(rows.bytes_out[k]), float(rows.bytes_in[k])
        return Alert(
            alert_id=self._ids(f"{sig}|{h}|{d}|{win}|{w}|{first}"),
            ts_ns=first,
            signature=sig,
            signature_id=SID_UPLOAD if d else SID_HOST,
            category="exfiltration",
            severity=1 if score >= 0.95 else 2,
            score=score,
            explanation=text,
            entity=h,
            mitre_technique_id=technique,
            mitre_tactic=("exfiltration",),
            src_ip=h,
            dest_ip=d or None,
            dest_port=port if d else None,
            first_ts_ns=first,
            last_ts_ns=last,
            observed={
                "bytes_out": out,
                "bytes_in": got,
                "upload_ratio": round(out / max(got, 1.0), 3),
                "flows": float(rows.flows[k]),
                "destination_hosts": float(j["prevalence"][k]) if d else 0.0,
                "first_contact": float(j["first_contact"][k]) if d else 0.0,
                "window_s": float(c.windows_s[win]),
                "duration_s": round((last - first) / 1e9, 6),
            },
            baseline={
                "bytes_out": round(float(j["usual"][k]), 3),
                "threshold": round(float(j["bar"][k]), 3),
                "routine_days": float(j["routine_days"][k]),
            },
        )
