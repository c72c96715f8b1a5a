"""ARP requests and replies of a packet batch as columns (ARP makes no flow, but an ARP sweep is
how a host on the local link finds its neighbours, so detectors get to see it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tapetum.sources import decode as D
from tapetum.sources.pcap import PacketBatch

OP_REQUEST = 1
OP_REPLY = 2


@dataclass(slots=True)
class ArpBatch:
    """One row per ARP packet: data time, opcode, sender and target IPv4 (IPv4-mapped halves)."""

    ts_ns: np.ndarray
    op: np.ndarray
    sender_hi: np.ndarray
    sender_lo: np.ndarray
    target_hi: np.ndarray
    target_lo: np.ndarray

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])


_MAPPED_ZERO = np.uint64(0xFFFF << 32)


def arp_rows(batch: PacketBatch) -> ArpBatch | None:
    """The batch's ARP packets, without probes (sender 0.0.0.0, RFC 5227) and gratuitous ARP
    (sender = target), which announce rather than ask; None when there are none."""
    cols = batch.cols[: batch.n]
    m = cols[:, D.C_PROTO] == D.PROTO_ARP
    if not m.any():
        return None
    addr = batch.addr[: batch.n][m]
    keep = (addr[:, D.A_SRC_LO] != _MAPPED_ZERO) & (addr[:, D.A_SRC_LO] != addr[:, D.A_DST_LO])
    if not keep.any():
        return None
    c = cols[m][keep]
    a = addr[keep]
    return ArpBatch(
        ts_ns=c[:, D.C_TS].copy(),
        op=c[:, D.C_SPORT].copy(),
        sender_hi=a[:, D.A_SRC_HI].copy(),
        sender_lo=a[:, D.A_SRC_LO].copy(),
        target_hi=a[:, D.A_DST_HI].copy(),
        target_lo=a[:, D.A_DST_LO].copy(),
    )
