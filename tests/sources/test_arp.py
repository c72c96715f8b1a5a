"""ARP rows: decoded into sender/target columns, hostile or truncated ARP only gives a status."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from tapetum.flows.key import addr_text
from tapetum.sources import decode as D
from tapetum.sources.arp import OP_REPLY, OP_REQUEST, arp_rows
from tapetum.sources.pcap import CaptureReader
from tapetum.testing import Packet, write_capture

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def _arp(op: int, sender: str, target: str, *, ptype: int = 0x0800) -> bytes:
    body = struct.pack(">HHBBH", 1, ptype, 6, 4, op)
    body += MAC_A + socket.inet_aton(sender) + bytes(6) + socket.inet_aton(target)
    return b"\xff" * 6 + MAC_A + b"\x08\x06" + body


def test_arp_rows_and_hostile_arp(tmp_path: Path) -> None:
    frames = [
        _arp(OP_REQUEST, "10.0.0.5", "10.0.0.9"),
        b"\xff" * 6 + MAC_B + b"\x08\x06" + _arp(OP_REPLY, "10.0.0.9", "10.0.0.5")[14:],
        _arp(OP_REQUEST, "0.0.0.0", "10.0.0.7"),  # RFC 5227 probe: not asking for a neighbour
        _arp(OP_REQUEST, "10.0.0.8", "10.0.0.8"),  # gratuitous: an announcement
        _arp(OP_REQUEST, "10.0.0.5", "10.0.0.10")[:30],  # truncated
        _arp(OP_REQUEST, "10.0.0.5", "10.0.0.11", ptype=0x86DD),  # not IPv4 over Ethernet
    ]
    path = tmp_path / "arp.pcap"
    write_capture(path, [Packet(1_000_000_000 + k, f) for k, f in enumerate(frames)])
    with CaptureReader(path) as reader:
        (batch,) = list(reader)
        cols = batch.cols[: batch.n]
        assert (cols[:, D.C_STATUS] == D.S_NOT_IP).all()  # never a flow
        assert (cols[:, D.C_PROTO] == D.PROTO_ARP).tolist() == [True] * 4 + [False, False]
        arp = arp_rows(batch)
    assert arp is not None and len(arp) == 2
    assert arp.op.tolist() == [OP_REQUEST, OP_REPLY]
    pairs = [
        (addr_text(int(a), int(b)), addr_text(int(c), int(d)))
        for a, b, c, d in zip(
            arp.sender_hi, arp.sender_lo, arp.target_hi, arp.target_lo, strict=True
        )
    ]
    assert pairs == [("10.0.0.5", "10.0.0.9"), ("10.0.0.9", "10.0.0.5")]
