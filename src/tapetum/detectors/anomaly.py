"""Flow-level and host-level anomaly detection: "unlike anything learnt" and "far above its own
baseline", with the features that made the difference.

`anomaly.flow` — each finished flow is described by ~50 numeric features (features/flowstats.py:
volumes and packets each way, first packet sizes, inter-arrival times, TCP flags, transport, port
class, Zeek conn_state) and scored by an Isolation Forest and a KitNET-style autoencoder
ensemble (tapetum.anomaly) fitted on a reservoir sample of learnt flows; the flow's score is
the larger of the two, each calibrated to `flow_fpr` / 2 per flow class (transport/port
class). Anomalous flows are reported once per source host and window, naming
the most unusual flow and its most deviant features (observed vs learnt median, robust z).

`anomaly.host` — per internal host and window (`window_s`): bytes sent, flows, distinct peers,
distinct destination ports, compared in log units with the host's own baseline for that part of
the day (`seasonal_buckets` hour-of-day buckets; the host's all-day baseline until a bucket has
`min_baseline_windows` windows; the peers' baseline until the host has one). The threshold on
the largest upward robust z is calibrated to `host_fpr` on the learnt windows' own scores
(computed before each was learnt), never below `min_host_z`.

Learning: without a loaded model the detector learns only (no alerts) for `warmup_s` of data
time and at least `warmup_flows` flows, then fits the flow model and scores; learning goes on
while scoring. Poisoning: a flow or window that alerts is never learnt; the flow reservoir is a
uniform sample of everything learnt, so a burst of N flows displaces at most about
N x reservoir / learnt of it; a baseline moves by at most `alpha` x 3 spreads per window (Huber
step) once it has 1/alpha windows.

Without any learnt state, `score` compares rows with each other (each batch its own reference:
the forest fitted on the batch, hosts against the batch's median host) — a cold-start ranking,
never used for streaming alerts.

ATT&CK: none. An anomaly says that something is unusual, not which technique it is; the
incident correlator puts it next to the technique-bearing alerts of the same host.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tapetum.anomaly import AnomalyModel
from tapetum.anomaly.autoencoder import AutoencoderEnsemble
from tapetum.anomaly.iforest import IsolationForest
from tapetum.anomaly.scaling import MAD_TO_SIGMA
from tapetum.anomaly.threshold import calibrate, to_unit
from tapetum.config import AnomalySection
from tapetum.detectors.common import (
    AlertIds,
    by_time,
    check_state,
    fmt_bytes,
    fmt_duration,
    is_internal,
)
from tapetum.detectors.windows import NO_TIME
from tapetum.errors import ModelError
from tapetum.features.flowstats import (
    FLOW_FEATURES,
    HOST_FEATURES,
    HostAccumulator,
    HostWindows,
    flow_classes,
    flow_features,
    host_windows,
)
from tapetum.flows.meter import FlowBatch
from tapetum.records import Alert, AppEvent

SIG_FLOW = "anomaly.flow"
SIG_HOST = "anomaly.host"
SID_FLOW = 9_000_100
SID_HOST = 9_000_101
STATE_VERSION = 1
MEAN_ABS_TO_SIGMA = 1.2533  # sigma / mean absolute deviation of a normal distribution
HUBER_K = 3.0
#: Learnt host-window scores kept to calibrate the host threshold.
CALIBRATION_WINDOWS = 5000


@dataclass(slots=True)
class AnomalyRows:
    """Flow rows (one per flow) followed by host-window rows (one per host and window)."""

    x: np.ndarray
    classes: list[str]
    src: list[str]
    dst: list[str]
    dest_port: np.ndarray
    proto: np.ndarray
    start_ns: np.ndarray
    end_ns: np.ndarray
    flow_id: np.ndarray
    community_id: list[str]
    hosts: HostWindows

    @property
    def n_flows(self) -> int:
        return int(self.x.shape[0])

    def __len__(self) -> int:
        return self.n_flows + len(self.hosts)

    def take_flows(self, m: np.ndarray) -> AnomalyRows:
        idx = np.flatnonzero(m)
        lst = idx.tolist()
        return AnomalyRows(
            self.x[idx], [self.classes[i] for i in lst], [self.src[i] for i in lst],
            [self.dst[i] for i in lst], self.dest_port[idx], self.proto[idx],
            self.start_ns[idx], self.end_ns[idx], self.flow_id[idx],
            [self.community_id[i] for i in lst], self.hosts.take(np.zeros(0, dtype=np.int64)),
        )  # fmt: skip


def _flow_rows(fb: FlowBatch, hosts: HostWindows) -> AnomalyRows:
    return AnomalyRows(
        flow_features(fb), flow_classes(fb), list(fb.src_ip), list(fb.dest_ip),
        fb.num["dest_port"].copy(), fb.num["proto"].copy(), fb.num["start_ns"].copy(),
        fb.num["end_ns"].copy(), fb.num["flow_id"].copy(), list(fb.community_id), hosts,
    )  # fmt: skip


def _mix(seed: int, i: int) -> int:
    """splitmix64: a deterministic pseudo-random number for reservoir slot choice."""
    z = (seed * 0x9E3779B97F4A7C15 + i + 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


def _fmt(name: str, v: float) -> str:
    if name.endswith("bytes") or "bytes_" in name:
        return fmt_bytes(v) if v >= 0 else f"-{fmt_bytes(-v)}"
    if name.endswith("_s"):
        return fmt_duration(v) if v >= 0.1 else f"{v * 1000:.1f} ms"
    if name.endswith("_share"):
        return f"{v:.0%}"
    return f"{v:,.3g}" if v != int(v) else f"{int(v):,}"


class AnomalyDetector:
    name = "anomaly"

    def __init__(self, config: AnomalySection | None = None, *, lag_s: float = 300.0) -> None:
        self.config = config or AnomalySection()
        c = self.config
        self.window_ns = int(c.window_s * 1e9)
        self.lag_ns = int(lag_s * 1e9)
        d = len(FLOW_FEATURES)
        #: Learned: the flow model (None until fitted), its reservoir of learnt flows.
        self.flow_model_: AnomalyModel | None = None
        self.flow_ae_: AnomalyModel | None = None
        self.reservoir_ = np.zeros((0, d), dtype=np.float32)
        self.reservoir_classes_: list[str] = []
        self.flows_learnt_ = 0
        self.since_fit_ = 0
        #: Learned: per host, per bucket (-1 = all day): [windows, mean[4], mean abs dev[4]].
        self.baselines_: dict[str, dict[int, list[Any]]] = {}
        self.host_scores_: deque[float] = deque(maxlen=CALIBRATION_WINDOWS)
        self.hosts_dropped_ = 0
        #: Data time learning started (warm-up clock) and whether warm-up is over.
        self.learn_from_ns_: int | None = None
        self.warm_ = False
        self._acc = HostAccumulator(self.window_ns)
        self._hits: dict[tuple[str, int], list[Any]] = {}
        self._ids = AlertIds()
        self._watermark = NO_TIME

    def _is_host(self, ip: str) -> bool:
        return is_internal(ip) if self.config.internal_hosts_only else True

    # -- contract on feature rows ------------------------------------------------------------

    def features(self, flows: FlowBatch, events: Sequence[AppEvent] = ()) -> AnomalyRows:
        """Flow rows, then host rows of these flows taken as windows (events are not used)."""
        return _flow_rows(flows, host_windows(flows, self.window_ns, self._is_host))

    def entities(self, rows: AnomalyRows) -> list[str]:
        return list(rows.src) + list(rows.hosts.host)

    def score(self, rows: AnomalyRows) -> np.ndarray:
        """0..1 per row (0.5 at the calibrated threshold): flow rows, then host rows."""
        return np.concatenate([self._score_flows(rows), self._score_hosts(rows.hosts)[0]])

    def learn(self, rows: AnomalyRows) -> None:
        """Take these rows as normal: flows into the reservoir (the flow model is refitted when
        due), host windows into their baselines."""
        self._learn_flows(rows, allow_first_fit=True)
        self._learn_hosts(rows.hosts)

    def explain(self, rows: AnomalyRows, idx: np.ndarray) -> list[str]:
        out = []
        _, used = self._score_hosts(rows.hosts)
        for k in np.asarray(idx).tolist():
            if k < rows.n_flows:
                out.append(self._explain_flow(rows, k, 1))
            else:
                j = k - rows.n_flows
                out.append(self._explain_host(rows.hosts, j, used[j]))
        return out

    # -- flows -------------------------------------------------------------------------------

    def _score_flows(self, rows: AnomalyRows) -> np.ndarray:
        n = rows.n_flows
        if n == 0:
            return np.zeros(0)
        if self.flow_model_ is not None:
            s = self.flow_model_.score(rows.x, rows.classes)
            if self.flow_ae_ is not None:
                s = np.maximum(s, self.flow_ae_.score(rows.x, rows.classes))
            return s
        if n < 8:
            return np.zeros(n)  # cold start with too few rows to compare
        cold = AnomalyModel(IsolationForest(seed=self.config.seed), seed=self.config.seed,
                            target_fpr=max(self.config.flow_fpr, 1.0 / n))  # fmt: skip
        return cold.fit(rows.x, FLOW_FEATURES).score(rows.x)

    def _learn_flows(self, rows: AnomalyRows, allow_first_fit: bool) -> None:
        cap = self.config.reservoir_flows
        x = rows.x.astype(np.float32)
        res = self.reservoir_
        grow = min(max(cap - res.shape[0], 0), x.shape[0])
        if grow:
            self.reservoir_ = np.concatenate([res, x[:grow]])
            self.reservoir_classes_.extend(rows.classes[:grow])
        seen = self.flows_learnt_ + grow
        for k in range(grow, x.shape[0]):
            seen += 1
            j = _mix(self.config.seed, seen) % seen  # reservoir sampling (Vitter's R)
            if j < cap:
                self.reservoir_[j] = x[k]
                self.reservoir_classes_[j] = rows.classes[k]
        self.flows_learnt_ = seen
        self.since_fit_ += x.shape[0]
        due = self.since_fit_ >= self.config.refit_flows
        first = self.flow_model_ is None and allow_first_fit
        if (first or (self.flow_model_ is not None and due)) and len(self.reservoir_) >= 2:
            self._fit_flows()

    def _fit_flows(self) -> None:
        c = self.config
        x = self.reservoir_.astype(np.float64)
        # Two views, each at half the target rate (so together at most the target): the forest
        # isolates rare combinations, the autoencoders catch flows far out on features the
        # forest's random splits seldom pick (a 20 MB upload among 50 features).
        fpr = c.flow_fpr / 2
        cls = self.reservoir_classes_
        forest = AnomalyModel(IsolationForest(seed=c.seed), target_fpr=fpr, seed=c.seed)
        self.flow_model_ = forest.fit(x, FLOW_FEATURES, classes=cls)
        ae = AnomalyModel(AutoencoderEnsemble(seed=c.seed), target_fpr=fpr, seed=c.seed)
        self.flow_ae_ = ae.fit(x, FLOW_FEATURES, classes=cls) if len(x) >= 20 else None
        self.since_fit_ = 0

    def _explain_flow(self, rows: AnomalyRows, k: int, count: int, span_s: float = 0.0) -> str:
        proto = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp6"}.get(int(rows.proto[k]), "ip")
        port = f":{int(rows.dest_port[k])}" if proto in ("tcp", "udp") else ""
        head = f"{rows.src[k]} → {rows.dst[k]}{port}/{proto}: a flow unlike the "
        if self.flow_model_ is None:
            return head + "other flows of this batch (nothing learnt yet)"
        head += f"{self.flow_model_.rows_learnt_:,} flows the model learnt from"
        parts: list[str] = []
        for name, obs, typ, z in self.flow_model_.contributions(rows.x, k, top=3):
            parts.append(f"{name} {_fmt(name, obs)} (typical {_fmt(name, typ)}, z {z:+.1f})")
        more = ""
        if count > 1:
            more = f"; {count} anomalous flows from this host in {fmt_duration(span_s)}"
        return f"{head}: {', '.join(parts)}{more}"

    # -- hosts -------------------------------------------------------------------------------

    def _bucket(self, first_ns: int) -> int:
        hour = (first_ns // 3_600_000_000_000) % 24
        return int(hour * self.config.seasonal_buckets // 24)

    def _baseline_for(self, host: str, bucket: int) -> tuple[list[Any] | None, str]:
        need = self.config.min_baseline_windows
        own = self.baselines_.get(host, {})
        for key, what in ((bucket, "for this time of day"), (-1, "for this host")):
            b = own.get(key)
            if b is not None and b[0] >= need:
                return b, what
        peers = self.baselines_.get("*", {}).get(-1)
        if peers is not None and peers[0] >= need:
            return peers, "for hosts of this network"
        return None, ""

    def _z(self, b: list[Any], v: np.ndarray) -> np.ndarray:
        spread = np.maximum(np.asarray(b[2]) * MEAN_ABS_TO_SIGMA, self.config.min_log_spread)
        return np.asarray((v - np.asarray(b[1])) / spread)

    def _host_threshold(self) -> float:
        c = self.config
        if len(self.host_scores_) < 20:
            return c.min_host_z
        return max(c.min_host_z, calibrate(np.fromiter(self.host_scores_, float), c.host_fpr))

    def _score_hosts(self, hw: HostWindows) -> tuple[np.ndarray, list[tuple[list[Any], str]]]:
        n = len(hw)
        if n == 0:
            return np.zeros(0), []
        v = np.log1p(hw.values)
        raw = np.zeros(n)
        used: list[tuple[list[Any], str]] = []
        if self.baselines_:
            for i in range(n):
                b, what = self._baseline_for(hw.host[i], self._bucket(int(hw.first_ns[i])))
                if b is None:
                    used.append(([0, v[i].tolist(), [0.0] * v.shape[1]], "unknown"))
                    continue
                raw[i] = max(0.0, float(self._z(b, v[i]).max()))
                used.append((b, what))
            return to_unit(raw, self._host_threshold()), used
        if n < 3:
            return np.zeros(n), [([0, r.tolist(), [0.0] * v.shape[1]], "unknown") for r in v]
        # Cold start: the batch's median host is the baseline.
        med = np.median(v, axis=0)
        mad = np.median(np.abs(v - med), axis=0) / MEAN_ABS_TO_SIGMA * MAD_TO_SIGMA
        peers = [n, med.tolist(), mad.tolist()]
        raw = np.maximum(self._z(peers, v).max(axis=1), 0.0)
        return to_unit(raw, self.config.min_host_z), [(peers, "for hosts in this batch")] * n

    def _update(self, b: list[Any], v: np.ndarray) -> None:
        n, mu, dev = b[0], np.asarray(b[1]), np.asarray(b[2])
        if n == 0:
            mu, dev = v.copy(), np.zeros_like(v)
        else:
            a = max(1.0 / (n + 1), self.config.alpha)
            spread = np.maximum(dev * MEAN_ABS_TO_SIGMA, self.config.min_log_spread)
            step = np.clip(v - mu, -HUBER_K * spread, HUBER_K * spread)
            mu = mu + a * step
            dev = dev + a * (np.abs(step) - dev)
        b[0], b[1], b[2] = n + 1, mu.tolist(), dev.tolist()

    def _learn_hosts(self, hw: HostWindows) -> None:
        if len(hw) == 0:
            return
        used = self._score_hosts(hw)[1] if self.baselines_ else []
        v = np.log1p(hw.values)
        for i, host in enumerate(hw.host):
            if used and used[i][1] not in ("unknown", "for hosts in this batch"):
                b = used[i][0]
                self.host_scores_.append(max(0.0, float(self._z(b, v[i]).max())))
            own = self.baselines_.get(host)
            if own is None:
                if len(self.baselines_) > self.config.max_hosts:
                    self.hosts_dropped_ += 1
                    own = {}
                else:
                    own = self.baselines_[host] = {}
            for key in (self._bucket(int(hw.first_ns[i])), -1):
                self._update(own.setdefault(key, [0, [], []]), v[i])
            self._update(self.baselines_.setdefault("*", {}).setdefault(-1, [0, [], []]), v[i])

    def _explain_host(self, hw: HostWindows, j: int, used: tuple[list[Any], str]) -> str:
        b, what = used
        v = hw.values[j]
        typical = np.expm1(np.asarray(b[1])) if b[1] else np.zeros_like(v)
        z = self._z(b, np.log1p(v)) if b[1] else np.zeros_like(v)
        span = max((int(hw.last_ns[j]) - int(hw.first_ns[j])) / 1e9, 0.0)
        order = np.argsort(-z, kind="stable")
        words = {"bytes_out": "sent", "flows": "opened", "distinct_peers": "contacted",
                 "distinct_dest_ports": "used"}  # fmt: skip
        units = {"bytes_out": "", "flows": " flows", "distinct_peers": " peers",
                 "distinct_dest_ports": " destination ports"}  # fmt: skip
        parts: list[str] = []
        for f in order[:2].tolist():
            if z[f] <= 0 and parts:
                break
            name = HOST_FEATURES[f]
            val = fmt_bytes(v[f]) if name == "bytes_out" else f"{int(v[f]):,}"
            usual = fmt_bytes(typical[f]) if name == "bytes_out" else f"{typical[f]:,.0f}"
            ratio = f", {v[f] / typical[f]:,.0f}x" if typical[f] >= 1 and v[f] > typical[f] else ""
            parts.append(f"{words[name]} {val}{units[name]} (usual {what}: {usual}{ratio}; "
                         f"z {z[f]:+.1f})")  # fmt: skip
        win = fmt_duration(self.config.window_s)
        text = f"{hw.host[j]} in a {win} window ({fmt_duration(span)} of activity): " + "; ".join(
            parts
        )
        if hw.top_peer[j] and hw.top_peer_bytes[j] > 0:
            text += f"; most sent to {hw.top_peer[j]} ({fmt_bytes(hw.top_peer_bytes[j])})"
        return text

    # -- persistence -------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        from tapetum.anomaly.arrays import encode_array

        c = self.config
        return {
            "detector": self.name,
            "version": STATE_VERSION,
            "features": FLOW_FEATURES,
            "params": {
                "window_s": c.window_s,
                "seasonal_buckets": c.seasonal_buckets,
                "seed": c.seed,
            },
            "flow_model": None if self.flow_model_ is None else self.flow_model_.state(),
            "flow_ae": None if self.flow_ae_ is None else self.flow_ae_.state(),
            "reservoir": encode_array(self.reservoir_),
            "reservoir_classes": self.reservoir_classes_,
            "flows_learnt": self.flows_learnt_,
            "since_fit": self.since_fit_,
            "baselines": {h: {str(k): v for k, v in b.items()} for h, b in self.baselines_.items()},
            "host_scores": list(self.host_scores_),
            "hosts_dropped": self.hosts_dropped_,
            "warm": self.warm_,
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], config: AnomalySection | None = None
    ) -> AnomalyDetector:
        from tapetum.anomaly.arrays import decode_array

        check_state(state, cls.name, STATE_VERSION)
        if state.get("features") != FLOW_FEATURES:
            raise ModelError(
                "anomaly detector state was learnt on other flow features; learn again"
            )
        det = cls(config)
        p = state["params"]
        if (p["window_s"], p["seasonal_buckets"]) != (det.config.window_s,
                                                      det.config.seasonal_buckets):  # fmt: skip
            raise ModelError(
                f"anomaly detector state: window {p['window_s']} s with "
                f"{p['seasonal_buckets']} daily buckets, configured {det.config.window_s} s with "
                f"{det.config.seasonal_buckets}; learn again or change the configuration"
            )
        if state["flow_model"] is not None:
            det.flow_model_ = AnomalyModel.from_state(state["flow_model"], FLOW_FEATURES)
        if state["flow_ae"] is not None:
            det.flow_ae_ = AnomalyModel.from_state(state["flow_ae"], FLOW_FEATURES)
        res = decode_array(state["reservoir"], "reservoir")
        if res.ndim != 2 or res.shape[1] != len(FLOW_FEATURES):
            raise ModelError("anomaly detector state: reservoir has the wrong shape")
        det.reservoir_ = res.astype(np.float32)
        det.reservoir_classes_ = [str(x) for x in state["reservoir_classes"]]
        det.flows_learnt_ = int(state["flows_learnt"])
        det.since_fit_ = int(state["since_fit"])
        det.baselines_ = {
            str(h): {int(k): [int(v[0]), [float(x) for x in v[1]], [float(x) for x in v[2]]]
                     for k, v in b.items()}
            for h, b in state["baselines"].items()
        }  # fmt: skip
        det.host_scores_.extend(float(x) for x in state["host_scores"])
        det.hosts_dropped_ = int(state["hosts_dropped"])
        det.warm_ = bool(state["warm"]) and det.flow_model_ is not None
        return det

    # -- streaming ---------------------------------------------------------------------------

    def observe(self, flows: FlowBatch) -> None:
        if len(flows) == 0:
            return
        end = int(flows.num["end_ns"].max())
        self._watermark = max(self._watermark, end)
        start = int(flows.num["start_ns"].min())
        if self.learn_from_ns_ is None:
            self.learn_from_ns_ = start
        self._acc.add(flows, self._is_host)
        rows = _flow_rows(flows, host_windows(flows.take(np.zeros(0, dtype=np.int64)), 1))
        if not self.warm_:
            self._learn_flows(rows, allow_first_fit=False)
            c = self.config
            if (self._watermark - self.learn_from_ns_ >= c.warmup_s * 1e9
                    and self.flows_learnt_ >= c.warmup_flows):  # fmt: skip
                self._fit_flows()
                self.warm_ = True
            return
        s = self._score_flows(rows)
        hit = s >= 0.5
        if hit.any():
            for k in np.flatnonzero(hit).tolist():
                key = (rows.src[k], int(rows.start_ns[k]) // self.window_ns)
                h = self._hits.get(key)
                if h is None:
                    self._hits[key] = [float(s[k]), rows.take_flows(np.arange(len(s)) == k), 1,
                                       int(rows.start_ns[k]), int(rows.end_ns[k])]  # fmt: skip
                    continue
                h[2] += 1
                h[3] = min(h[3], int(rows.start_ns[k]))
                h[4] = max(h[4], int(rows.end_ns[k]))
                if s[k] > h[0]:
                    h[0], h[1] = float(s[k]), rows.take_flows(np.arange(len(s)) == k)
        # Only what did not alert is learnt: an attack cannot teach itself normal.
        self._learn_flows(rows.take_flows(~hit), allow_first_fit=True)

    def observe_events(self, events: Sequence[AppEvent]) -> None:
        """Flow features only."""

    def poll(self, watermark_ns: int | None = None) -> list[Alert]:
        wm = self._watermark if watermark_ns is None else max(self._watermark, watermark_ns)
        windows = set(self._acc.windows()) | {w for _, w in self._hits}
        done = {w for w in windows if (w + 1) * self.window_ns + self.lag_ns < wm}
        return self._finalize(done)

    def flush(self) -> list[Alert]:
        alerts = self._finalize(None)
        self._watermark = NO_TIME
        return alerts

    def _finalize(self, windows: set[int] | None) -> list[Alert]:
        alerts: list[Alert] = []
        hw = self._acc.pop(windows)
        if self.warm_:
            scores, used = self._score_hosts(hw)
            hit = scores >= 0.5
            for j in np.flatnonzero(hit).tolist():
                alerts.append(self._host_alert(hw, j, float(scores[j]), used[j]))
            self._learn_hosts(hw.take(np.flatnonzero(~hit)))
        else:
            self._learn_hosts(hw)
        for key in sorted(k for k in self._hits if windows is None or k[1] in windows):
            score, rows, count, first, last = self._hits.pop(key)
            alerts.append(self._flow_alert(rows, score, count, first, last))
        return by_time(alerts)

    def _flow_alert(self, rows: AnomalyRows, score: float, count: int, first: int,
                    last: int) -> Alert:  # fmt: skip
        assert self.flow_model_ is not None
        text = self._explain_flow(rows, 0, count, (last - first) / 1e9)
        top = self.flow_model_.contributions(rows.x, 0, top=3)
        src, dst = rows.src[0], rows.dst[0]
        proto = {6: "TCP", 17: "UDP", 1: "ICMP", 58: "IPv6-ICMP"}.get(int(rows.proto[0]))
        return Alert(
            alert_id=self._ids(f"{SIG_FLOW}|{src}|{first}|{int(rows.flow_id[0])}"),
            ts_ns=first,
            signature=SIG_FLOW,
            signature_id=SID_FLOW,
            category="anomaly",
            severity=3,
            score=score,
            explanation=text,
            entity=src,
            src_ip=src,
            dest_ip=dst,
            dest_port=int(rows.dest_port[0]),
            proto=proto,
            flow_id=int(rows.flow_id[0]),
            community_id=rows.community_id[0] or None,
            first_ts_ns=first,
            last_ts_ns=last,
            observed={n: float(o) for n, o, _, _ in top} | {"anomalous_flows": float(count)},
            baseline={n: float(t) for n, _, t, _ in top},
        )

    def _host_alert(self, hw: HostWindows, j: int, score: float,
                    used: tuple[list[Any], str]) -> Alert:  # fmt: skip
        host = hw.host[j]
        b = used[0]
        typical = np.expm1(np.asarray(b[1]))
        z = self._z(b, np.log1p(hw.values[j]))
        return Alert(
            alert_id=self._ids(f"{SIG_HOST}|{host}|{int(hw.window[j])}"),
            ts_ns=int(hw.first_ns[j]),
            signature=SIG_HOST,
            signature_id=SID_HOST,
            category="anomaly",
            severity=2 if float(z.max()) >= 2 * self._host_threshold() else 3,
            score=score,
            explanation=self._explain_host(hw, j, used),
            entity=host,
            src_ip=host,
            dest_ip=hw.top_peer[j] or None,
            first_ts_ns=int(hw.first_ns[j]),
            last_ts_ns=int(hw.last_ns[j]),
            observed={n: float(v) for n, v in zip(HOST_FEATURES, hw.values[j], strict=True)}
            | {"z_max": round(float(z.max()), 3)},
            baseline={n: round(float(t), 3) for n, t in zip(HOST_FEATURES, typical, strict=True)}
            | {"z_threshold": round(self._host_threshold(), 3)},
        )
