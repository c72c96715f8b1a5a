"""Scan features: per source and time window, how many ports and hosts it probed.

Pure functions over flow columns. A *probe* is a flow that carried no application data: a TCP
connection attempt that was refused, unanswered, or reset before any payload (SYN, connect and
FIN/NULL/Xmas scans), a UDP datagram without a reply, an ICMP echo without a reply, and an ARP
request (proto `PROTO_ARP`, port 0) for a local address.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tapetum.features import columns
from tapetum.flows import table as T
from tapetum.flows.meter import FlowBatch
from tapetum.sources.arp import OP_REPLY, OP_REQUEST, ArpBatch
from tapetum.sources.decode import PROTO_ARP


def probe_mask(fb: FlowBatch) -> np.ndarray:
    num = fb.num
    proto = num["proto"]
    no_data = (num["payload_bytes_toserver"] == 0) & (num["payload_bytes_toclient"] == 0)
    tcp = (proto == 6) & no_data
    unanswered = num["pkts_toclient"] == 0
    # UDP probes may carry a small payload (nmap's service probes) but get no answer.
    udp = (proto == 17) & unanswered & (num["payload_bytes_toserver"] <= 512)
    # An echo request is a probe whether answered or not: a sweep is about who is alive.
    echo = ((proto == 1) & (num["src_port"] == 8)) | ((proto == 58) & (num["src_port"] == 128))
    icmp = ((proto == 1) | (proto == 58)) & (unanswered | echo)
    return np.asarray(tcp | udp | icmp)


def answered_mask(fb: FlowBatch) -> np.ndarray:
    """The responder accepted the connection (SYN-ACK seen) or replied at all (UDP/ICMP)."""
    proto = fb.num["proto"]
    synack = (fb.num["state_bits"] & T.ST_RESP_SYNACK) != 0
    return np.where(proto == 6, synack, fb.num["pkts_toclient"] > 0)


@dataclass(slots=True)
class ProbeColumns:
    """Probes as columns: the unit the scan detector accumulates."""

    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    proto: np.ndarray
    dport: np.ndarray
    start_ns: np.ndarray
    end_ns: np.ndarray
    answered: np.ndarray

    @staticmethod
    def empty() -> ProbeColumns:
        z64 = np.zeros(0, dtype=np.int64)
        zu = np.zeros(0, dtype=np.uint64)
        return ProbeColumns(zu, zu, zu, zu, z64, z64, z64, z64, np.zeros(0, dtype=bool))

    @staticmethod
    def from_flows(fb: FlowBatch, failed_only: bool = True) -> ProbeColumns:
        m = probe_mask(fb) if failed_only else np.ones(len(fb), dtype=bool)
        return ProbeColumns(
            fb.src_hi[m], fb.src_lo[m], fb.dst_hi[m], fb.dst_lo[m],
            fb.num["proto"][m], fb.num["dest_port"][m], fb.num["start_ns"][m],
            fb.num["end_ns"][m], answered_mask(fb)[m],
        )  # fmt: skip

    @staticmethod
    def from_arp(arp: ArpBatch) -> ProbeColumns:
        """ARP requests as probes of the target address; answered when the target replied to
        the sender in the same batch."""
        req = arp.op == OP_REQUEST
        rep = arp.op == OP_REPLY
        low = np.uint64(0xFFFFFFFF)
        sh = np.uint64(32)
        # ARP addresses are IPv4: (asker, asked) packs into one uint64. A reply's (sender,
        # target) is the request's (target, sender).
        asked = ((arp.sender_lo[req] & low) << sh) | (arp.target_lo[req] & low)
        replied = ((arp.target_lo[rep] & low) << sh) | (arp.sender_lo[rep] & low)
        answered = np.isin(asked, replied)
        s_hi, s_lo = arp.sender_hi[req], arp.sender_lo[req]
        t_hi, t_lo = arp.target_hi[req], arp.target_lo[req]
        ts = arp.ts_ns[req]
        n = ts.shape[0]
        return ProbeColumns(
            s_hi, s_lo, t_hi, t_lo, np.full(n, PROTO_ARP, dtype=np.int64),
            np.zeros(n, dtype=np.int64), ts, ts, answered,
        )  # fmt: skip

    @staticmethod
    def concat(parts: list[ProbeColumns]) -> ProbeColumns:
        return columns.concat(ProbeColumns, parts) if parts else ProbeColumns.empty()

    def take(self, m: np.ndarray) -> ProbeColumns:
        return columns.take(self, m)

    def __len__(self) -> int:
        return int(self.proto.shape[0])


@dataclass(slots=True)
class ScanRows:
    """One row per (source, target group) in a window: the detector's feature table.

    kind 0 = vertical (group = one destination host, counting distinct ports),
    kind 1 = horizontal (group = one protocol/port, counting distinct hosts).
    """

    kind: np.ndarray
    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray  # vertical: the target host; horizontal: 0
    dst_lo: np.ndarray
    proto: np.ndarray
    dport: np.ndarray  # horizontal: the port; vertical: -1
    distinct_targets: np.ndarray  # ports (vertical) or hosts (horizontal)
    probes: np.ndarray
    answered_targets: np.ndarray
    first_ns: np.ndarray
    last_ns: np.ndarray
    #: Start times of the 5th and 95th percentile probe: where the bulk of the scan happened.
    core_first_ns: np.ndarray
    core_last_ns: np.ndarray

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    def features(self) -> np.ndarray:
        """Numeric feature matrix (for generic detectors): distinct, probes, duration_s, rate."""
        dur = (self.last_ns - self.first_ns) / 1e9
        rate = self.distinct_targets / np.maximum(dur, 1e-3)
        return np.column_stack([self.distinct_targets, self.probes, dur, rate]).astype(np.float64)


def aggregate(p: ProbeColumns) -> ScanRows:
    """Vertical and horizontal aggregates of probes (all in one window)."""
    if len(p) == 0:
        z = np.zeros(0, dtype=np.int64)
        zu = np.zeros(0, dtype=np.uint64)
        return ScanRows(z, zu, zu, zu, zu, z, z, z, z, z, z, z, z, z)
    u = np.uint64
    proto = p.proto.astype(u)
    dport = p.dport.astype(u)
    parts = []
    # Vertical: group (src, dst, proto), count distinct ports.
    # Horizontal: group (src, proto, port), count distinct hosts.
    for kind in (0, 1):
        if kind == 0:
            gkeys = np.column_stack([p.src_hi, p.src_lo, p.dst_hi, p.dst_lo, proto])
            item = dport[:, None]
        else:
            gkeys = np.column_stack([p.src_hi, p.src_lo, proto, dport])
            item = np.column_stack([p.dst_hi, p.dst_lo])
        first, ginv = columns.group(gkeys)
        ng = first.shape[0]
        pair_keys = np.column_stack([ginv.astype(u), item])
        pfirst, _ = columns.group(pair_keys)
        distinct = np.bincount(ginv[pfirst], minlength=ng)
        ans_first = pfirst[p.answered[pfirst]]
        answered = np.bincount(ginv[ans_first], minlength=ng)
        probes = np.bincount(ginv, minlength=ng)
        first_ns = np.full(ng, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first_ns, ginv, p.start_ns)
        last_ns = np.zeros(ng, dtype=np.int64)
        np.maximum.at(last_ns, ginv, p.end_ns)
        # Percentile probe starts per group: sort by (group, start), index into each run.
        order = np.lexsort((p.start_ns, ginv))
        starts = p.start_ns[order]
        offsets = np.concatenate([[0], np.cumsum(probes)[:-1]])
        core_first_ns = starts[offsets + np.floor(0.05 * (probes - 1)).astype(np.int64)]
        core_last_ns = starts[offsets + np.ceil(0.95 * (probes - 1)).astype(np.int64)]
        zero = np.zeros(ng, dtype=np.uint64)
        parts.append(
            ScanRows(
                kind=np.full(ng, kind, dtype=np.int64),
                src_hi=p.src_hi[first],
                src_lo=p.src_lo[first],
                dst_hi=p.dst_hi[first] if kind == 0 else zero,
                dst_lo=p.dst_lo[first] if kind == 0 else zero,
                proto=p.proto[first],
                dport=np.full(ng, -1, dtype=np.int64) if kind == 0 else p.dport[first],
                distinct_targets=distinct.astype(np.int64),
                probes=probes.astype(np.int64),
                answered_targets=answered.astype(np.int64),
                first_ns=first_ns,
                last_ns=last_ns,
                core_first_ns=core_first_ns,
                core_last_ns=core_last_ns,
            )
        )
    return columns.concat(ScanRows, parts)


def answered_ports(p: ProbeColumns, src: tuple[int, int], dst: tuple[int, int]) -> list[int]:
    m = (
        (p.src_hi == src[0]) & (p.src_lo == src[1]) & (p.dst_hi == dst[0]) & (p.dst_lo == dst[1])
        & p.answered
    )  # fmt: skip
    return sorted({int(x) for x in p.dport[m].tolist()})
