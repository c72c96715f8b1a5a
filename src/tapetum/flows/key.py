"""Flow keys as users see them: address text, protocol names and Community ID v1.

Community ID v1 (https://github.com/corelight/community-id-spec): base64 of SHA-1 over
seed (2 bytes) | src addr | dst addr | proto | 0 | src port | dst port, endpoints ordered so both
directions hash alike; ICMP uses (type, counterpart type) as ports when the type has a counterpart
and is "one-way" (not reordered) otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import struct

import numpy as np

_V4_PREFIX = 0xFFFF << 32

PROTO_NAMES = {
    1: "ICMP",
    2: "IGMP",
    6: "TCP",
    17: "UDP",
    41: "IPv6",
    47: "GRE",
    50: "ESP",
    51: "AH",
    58: "IPv6-ICMP",
    89: "OSPF",
    103: "PIM",
    112: "VRRP",
    132: "SCTP",
    136: "UDPLite",
}

_ICMP4_PAIRS = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
_ICMP6_PAIRS = {
    128: 129, 129: 128, 133: 134, 134: 133, 135: 136, 136: 135,
    130: 131, 131: 130, 144: 145, 145: 144, 139: 140, 140: 139,
}  # fmt: skip


def proto_name(proto: int) -> str:
    return PROTO_NAMES.get(proto, str(proto))


def addr_bytes(hi: int, lo: int) -> bytes:
    """Packed address: 4 bytes for IPv4-mapped, 16 otherwise."""
    if hi == 0 and (lo >> 32) == 0xFFFF:
        return struct.pack(">I", lo & 0xFFFFFFFF)
    return struct.pack(">QQ", hi, lo)


def addr_text(hi: int, lo: int) -> str:
    b = addr_bytes(hi, lo)
    return socket.inet_ntop(socket.AF_INET if len(b) == 4 else socket.AF_INET6, b)


def addr_parse(text: str) -> tuple[int, int]:
    """Address text to the (hi, lo) pair used in packet columns."""
    try:
        v4 = socket.inet_pton(socket.AF_INET, text)
        return 0, _V4_PREFIX | struct.unpack(">I", v4)[0]
    except OSError:
        v6 = socket.inet_pton(socket.AF_INET6, text)
        hi, lo = struct.unpack(">QQ", v6)
        return hi, lo


def addr_text_array(hi: np.ndarray, lo: np.ndarray, cache: dict[tuple[int, int], str]) -> list[str]:
    out: list[str] = []
    for h, lw in zip(hi.tolist(), lo.tolist(), strict=True):
        k = (h, lw)
        t = cache.get(k)
        if t is None:
            t = addr_text(h, lw)
            if len(cache) < 1_000_000:
                cache[k] = t
        out.append(t)
    return out


def community_id(src: bytes, dst: bytes, proto: int, sport: int, dport: int, seed: int = 0) -> str:
    """Community ID v1 of a flow given packed addresses and ports (ICMP: type, code)."""
    one_way = False
    if proto in (1, 58):
        pairs = _ICMP4_PAIRS if proto == 1 else _ICMP6_PAIRS
        if sport in pairs:
            dport = pairs[sport]
        else:
            one_way = True
    if not one_way and (src > dst or (src == dst and sport > dport)):
        src, dst, sport, dport = dst, src, dport, sport
    data = struct.pack(">H", seed) + src + dst + struct.pack(">BB", proto, 0)
    if proto in (1, 6, 17, 58, 132):
        data += struct.pack(">HH", sport, dport)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")
