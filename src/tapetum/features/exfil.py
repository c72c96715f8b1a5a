"""Exfiltration features: bytes internal hosts send to external destinations, per window.

For every flow between an internal and an external address, the internal side is the host:
what it sent is `bytes_toserver` when it originated the flow and `bytes_toclient` when it
answered it (a server inside that an outside client pulls data from). Per (host, external
destination) and per host (all destinations, `dest == ""`) in a window: bytes sent and received
(upload/download ratio), flows, first and last time, the service port that carried most bytes,
and (host rows) the number of destinations. Pure functions over flow columns.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

import numpy as np

from tapetum.features import columns
from tapetum.flows.meter import FlowBatch


@dataclass(slots=True)
class Crossing:
    """Flows between an internal host and an external destination, seen from the host."""

    host: list[str]
    dest: list[str]
    bytes_out: np.ndarray
    bytes_in: np.ndarray
    start_ns: np.ndarray
    end_ns: np.ndarray
    #: The responder's port (the service), whichever side the host was on.
    port: np.ndarray

    def __len__(self) -> int:
        return len(self.host)

    @staticmethod
    def from_flows(fb: FlowBatch, internal: Container[str]) -> Crossing:
        """`internal`: the site's addresses (`detectors.common.InternalNetworks`)."""
        n = len(fb)
        src_in = np.fromiter((ip in internal for ip in fb.src_ip), dtype=bool, count=n)
        dst_in = np.fromiter((ip in internal for ip in fb.dest_ip), dtype=bool, count=n)
        out_m = src_in & ~dst_in  # host originated
        in_m = dst_in & ~src_in  # host answered an outside client
        idx = np.flatnonzero(out_m | in_m)
        orig = out_m[idx]
        num = fb.num
        ts, tc = num["bytes_toserver"][idx], num["bytes_toclient"][idx]
        return Crossing(
            host=[
                fb.src_ip[i] if o else fb.dest_ip[i]
                for i, o in zip(idx.tolist(), orig, strict=True)
            ],
            dest=[
                fb.dest_ip[i] if o else fb.src_ip[i]
                for i, o in zip(idx.tolist(), orig, strict=True)
            ],
            bytes_out=np.where(orig, ts, tc).astype(np.int64),
            bytes_in=np.where(orig, tc, ts).astype(np.int64),
            start_ns=num["start_ns"][idx].astype(np.int64),
            end_ns=num["end_ns"][idx].astype(np.int64),
            port=num["dest_port"][idx].astype(np.int64),
        )


#: Accumulator of one (host, destination) in a window:
#: [bytes_out, bytes_in, flows, first_ns, last_ns, top_port, top_port_bytes_out].
PairAcc = list[int]
PairMap = dict[tuple[str, str], PairAcc]


def accumulate(pairs: PairMap, c: Crossing, mask: np.ndarray | None, max_pairs: int) -> int:
    """Fold crossing flows (those in `mask`) into `pairs`; returns flows dropped at the cap."""
    dropped = 0
    idx = range(len(c)) if mask is None else np.flatnonzero(mask).tolist()
    bo, bi, st, en, po = (x.tolist() for x in (c.bytes_out, c.bytes_in, c.start_ns, c.end_ns,
                                               c.port))  # fmt: skip
    for i in idx:
        key = (c.host[i], c.dest[i])
        acc = pairs.get(key)
        if acc is None:
            if len(pairs) >= max_pairs:
                dropped += 1
                continue
            pairs[key] = [bo[i], bi[i], 1, st[i], en[i], po[i], bo[i]]
            continue
        acc[0] += bo[i]
        acc[1] += bi[i]
        acc[2] += 1
        acc[3] = min(acc[3], st[i])
        acc[4] = max(acc[4], en[i])
        if bo[i] > acc[6]:
            acc[5], acc[6] = po[i], bo[i]
    return dropped


@dataclass(slots=True)
class ExfilRows:
    """One row per (host, destination) and per host (`dest == ""`) in a window."""

    host: list[str]
    dest: list[str]
    #: Index into the configured window lengths.
    win: np.ndarray
    #: Start of the window (streaming) or of the row's first flow: its hour and day.
    bucket_ns: np.ndarray
    bytes_out: np.ndarray
    bytes_in: np.ndarray
    flows: np.ndarray
    first_ns: np.ndarray
    last_ns: np.ndarray
    port: np.ndarray
    #: Host rows: destinations the host sent to; pair rows: internal hosts that talked to
    #: this destination in the window.
    peers: np.ndarray

    def __len__(self) -> int:
        return len(self.host)

    def take(self, m: np.ndarray) -> ExfilRows:
        return columns.take(self, m)

    def ratio(self) -> np.ndarray:
        """Upload/download ratio (bytes sent / bytes received, received at least 1)."""
        return np.asarray(self.bytes_out / np.maximum(self.bytes_in, 1))


def rows_from(pairs: PairMap, win: int, bucket_ns: int | None) -> ExfilRows:
    """Pair rows and host rows of one window (`bucket_ns` None: each row's first flow)."""
    keys = sorted(pairs)
    hosts: dict[str, list[int]] = {}
    dest_hosts: dict[str, int] = {}
    for key in keys:
        a = pairs[key]
        h = hosts.get(key[0])
        if h is None:
            hosts[key[0]] = [a[0], a[1], a[2], a[3], a[4], a[5], a[6], 1]
        else:
            h[0] += a[0]
            h[1] += a[1]
            h[2] += a[2]
            h[3] = min(h[3], a[3])
            h[4] = max(h[4], a[4])
            if a[6] > h[6]:
                h[5], h[6] = a[5], a[6]
            h[7] += 1
        dest_hosts[key[1]] = dest_hosts.get(key[1], 0) + 1
    all_keys = keys + [(h, "") for h in sorted(hosts)]
    vals = [pairs[k] + [dest_hosts[k[1]]] for k in keys]
    vals += [hosts[h] for h in sorted(hosts)]
    arr = np.array(vals, dtype=np.int64).reshape(len(vals), 8)
    bucket = arr[:, 3] if bucket_ns is None else np.full(len(vals), bucket_ns, dtype=np.int64)
    return ExfilRows(
        host=[k[0] for k in all_keys],
        dest=[k[1] for k in all_keys],
        win=np.full(len(vals), win, dtype=np.int64),
        bucket_ns=bucket,
        bytes_out=arr[:, 0],
        bytes_in=arr[:, 1],
        flows=arr[:, 2],
        first_ns=arr[:, 3],
        last_ns=arr[:, 4],
        port=arr[:, 5],
        peers=arr[:, 7],
    )
