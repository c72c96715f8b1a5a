"""Per-flow numeric features for the anomaly detector, and per-host window aggregates.

Pure functions over FlowBatch columns. Units in names. Volumes and counts are raw here (the
anomaly model's robust scaler compresses them with log1p); categorical columns (transport,
destination port class, Zeek conn_state) are one-hot with an "other" column, so an unseen value
is a feature of its own instead of an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tapetum.anomaly.scaling import CategoryEncoder
from tapetum.features import columns
from tapetum.flows.meter import FlowBatch
from tapetum.flows.state import CONN_STATES

FIRST_PACKETS = 4
_FLAGS = ("syn", "fin", "rst", "psh")
_FLAG_COL = {"fin": 0, "syn": 1, "rst": 2, "psh": 3}  # meter order: fin syn rst psh ack urg …
PORT_CLASSES = ("well_known", "registered", "dynamic", "none")
PROTOS = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp"}

CONN_STATE = CategoryEncoder("conn_state", CONN_STATES)
PROTO = CategoryEncoder("proto", ["tcp", "udp", "icmp"])
PORT_CLASS = CategoryEncoder("dest_port", list(PORT_CLASSES))

FLOW_FEATURES: list[str] = [
    "duration_s",
    "pkts_out",
    "pkts_in",
    "bytes_out",
    "bytes_in",
    "payload_bytes_out",
    "payload_bytes_in",
    "bytes_out_share",
    "mean_pkt_bytes_out",
    "mean_pkt_bytes_in",
    *[f"pkt{k + 1}_signed_bytes" for k in range(FIRST_PACKETS)],
    "iat_mean_s",
    "iat_median_s",
    "iat_max_s",
    "direction_changes",
    *[f"{f}_out" for f in _FLAGS],
    *[f"{f}_in" for f in _FLAGS],
    *PROTO.columns,
    *PORT_CLASS.columns,
    *CONN_STATE.columns,
]
"""Feature names in column order ("out" = from the originator, "in" = to it)."""


def port_classes(fb: FlowBatch) -> list[str]:
    """IANA port ranges of the destination port; "none" for transports without ports."""
    port = fb.num["dest_port"]
    proto = fb.num["proto"]
    cls = np.where(port < 1024, 0, np.where(port < 49152, 1, 2))
    cls = np.where((proto == 6) | (proto == 17) | (proto == 132), cls, 3)
    return [PORT_CLASSES[c] for c in cls.tolist()]


def flow_classes(fb: FlowBatch) -> list[str]:
    """Entity class of each flow for per-class thresholds: transport and port class."""
    protos = [PROTOS.get(p, "other") for p in fb.num["proto"].tolist()]
    return [f"{p}/{c}" for p, c in zip(protos, port_classes(fb), strict=True)]


def flow_features(fb: FlowBatch) -> np.ndarray:
    """The FLOW_FEATURES matrix [n, len(FLOW_FEATURES)] (float64)."""
    n = len(fb)
    num = fb.num
    f64 = np.float64
    po = num["pkts_toserver"].astype(f64)
    pi = num["pkts_toclient"].astype(f64)
    bo = num["bytes_toserver"].astype(f64)
    bi = num["bytes_toclient"].astype(f64)
    total = bo + bi
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, bo / total, 0.5)
        mean_o = np.where(po > 0, bo / po, 0.0)
        mean_i = np.where(pi > 0, bi / pi, 0.0)
    k = FIRST_PACKETS
    width = fb.seq_size.shape[1] if fb.seq_size.ndim == 2 else 0
    seq_n = np.minimum(fb.seq_n.astype(np.int64), width)
    cols = np.arange(width)[None, :]
    valid = cols < seq_n[:, None]
    sign = np.where(fb.seq_dir == 0, 1.0, -1.0)
    signed = np.where(valid, fb.seq_size.astype(f64) * sign, 0.0)
    first = np.zeros((n, k))
    first[:, : min(k, width)] = signed[:, :k]
    # Inter-arrival times of the first packets (seq_ts: ns since the flow's start).
    ts = fb.seq_ts.astype(f64) / 1e9
    iat = np.diff(ts, axis=1) if width > 1 else np.zeros((n, 0))
    iat_ok = valid[:, 1:] if width > 1 else np.zeros((n, 0), dtype=bool)
    iat = np.where(iat_ok, np.maximum(iat, 0.0), np.nan)
    has = np.asarray(iat_ok.any(axis=1), dtype=bool)
    safe = np.where(has[:, None], iat, 0.0)
    cnt = np.maximum(iat_ok.sum(axis=1), 1)
    iat_mean = np.where(has, np.where(iat_ok, safe, 0.0).sum(axis=1) / cnt, 0.0)
    iat_max = np.where(has, np.where(iat_ok, safe, 0.0).max(axis=1, initial=0.0), 0.0)
    iat_med = np.zeros(n)
    if has.any():
        with np.errstate(all="ignore"):
            iat_med[has] = np.nanmedian(iat[has], axis=1)
    d = fb.seq_dir.astype(np.int64)
    changes = ((d[:, 1:] != d[:, :-1]) & (valid[:, 1:] if width > 1 else False)).sum(axis=1) \
        if width > 1 else np.zeros(n)  # fmt: skip
    flags = fb.tcp_flags.astype(f64)
    flag_cols = [flags[:, _FLAG_COL[f]] for f in _FLAGS] + [
        flags[:, 8 + _FLAG_COL[f]] for f in _FLAGS
    ]
    protos = [PROTOS.get(p, "other") for p in num["proto"].tolist()]
    parts = [
        np.column_stack([
            fb.duration_s, po, pi, bo, bi,
            num["payload_bytes_toserver"].astype(f64), num["payload_bytes_toclient"].astype(f64),
            share, mean_o, mean_i,
        ]),
        first,
        np.column_stack([iat_mean, iat_med, iat_max, changes, *flag_cols]),
        PROTO.encode(protos),
        PORT_CLASS.encode(port_classes(fb)),
        CONN_STATE.encode(fb.conn_state),
    ]  # fmt: skip
    out = np.concatenate(parts, axis=1)
    assert out.shape[1] == len(FLOW_FEATURES)
    return out


#: Per host and window: volumes and counts whose baseline is learnt per host.
HOST_FEATURES = ["bytes_out", "flows", "distinct_peers", "distinct_dest_ports"]


@dataclass(slots=True)
class HostWindows:
    """One row per (host, window): what the host sent (as originator and as responder), the
    flows it originated, and the distinct peers and destination ports of those flows."""

    host: list[str]
    window: np.ndarray
    first_ns: np.ndarray
    last_ns: np.ndarray
    values: np.ndarray  # [n, len(HOST_FEATURES)]
    top_peer: list[str]
    top_peer_bytes: np.ndarray

    def __len__(self) -> int:
        return len(self.host)

    def take(self, idx: np.ndarray) -> HostWindows:
        return columns.take(self, idx)


#: Distinct peers / ports remembered per host window; beyond this the count saturates.
MAX_DISTINCT = 4096


class HostAccumulator:
    """Per (host, window) aggregates built flow batch by flow batch (bounded by `max_keys`)."""

    def __init__(self, window_ns: int, max_keys: int = 200_000) -> None:
        self.window_ns = window_ns
        self.max_keys = max_keys
        self.dropped = 0
        self._acc: dict[tuple[str, int], list[Any]] = {}

    def __len__(self) -> int:
        return len(self._acc)

    def add(self, fb: FlowBatch, hosts: Callable[[str], bool] | None = None) -> None:
        num = fb.num
        start, end = num["start_ns"].tolist(), num["end_ns"].tolist()
        bo, bi = num["bytes_toserver"].tolist(), num["bytes_toclient"].tolist()
        dport = num["dest_port"].tolist()
        acc = self._acc
        for k in range(len(fb)):
            w = start[k] // self.window_ns
            for host, peer, sent, originator in (
                (fb.src_ip[k], fb.dest_ip[k], bo[k], True),
                (fb.dest_ip[k], fb.src_ip[k], bi[k], False),
            ):
                if hosts is not None and not hosts(host):
                    continue
                a = acc.get((host, w))
                if a is None:
                    if len(acc) >= self.max_keys:
                        self.dropped += 1
                        continue
                    a = acc[(host, w)] = [start[k], end[k], 0, 0, set(), set(), {}]
                a[0] = min(a[0], start[k])
                a[1] = max(a[1], end[k])
                a[2] += sent
                if originator:
                    a[3] += 1
                    if len(a[4]) < MAX_DISTINCT:
                        a[4].add(peer)
                    if len(a[5]) < MAX_DISTINCT:
                        a[5].add(dport[k])
                if sent and (peer in a[6] or len(a[6]) < MAX_DISTINCT):
                    a[6][peer] = a[6].get(peer, 0) + sent

    def windows(self) -> list[int]:
        return sorted({w for _, w in self._acc})

    def pop(self, windows: set[int] | None = None) -> HostWindows:
        """Rows of these windows (all if None), removed from the accumulator."""
        keys = sorted(k for k in self._acc if windows is None or k[1] in windows)
        vals = np.zeros((len(keys), len(HOST_FEATURES)))
        top_peer: list[str] = []
        top_bytes = np.zeros(len(keys))
        first = np.zeros(len(keys), dtype=np.int64)
        last = np.zeros(len(keys), dtype=np.int64)
        for i, key in enumerate(keys):
            a = self._acc.pop(key)
            first[i], last[i] = a[0], a[1]
            vals[i] = (a[2], a[3], len(a[4]), len(a[5]))
            peer, b = max(a[6].items(), key=lambda kv: (kv[1], kv[0])) if a[6] else ("", 0)
            top_peer.append(peer)
            top_bytes[i] = b
        return HostWindows([k[0] for k in keys], np.array([k[1] for k in keys], dtype=np.int64),
                           first, last, vals, top_peer, top_bytes)  # fmt: skip


def host_windows(
    fb: FlowBatch, window_ns: int, hosts: Callable[[str], bool] | None = None
) -> HostWindows:
    """Host window rows of one flow batch."""
    acc = HostAccumulator(window_ns)
    acc.add(fb, hosts)
    return acc.pop()
