"""Wire formats for synthetic captures: hosts, OS stack profiles, and frame assembly.

Frames are assembled with `struct` rather than dpkt objects: building an Ethernet/IPv4/TCP frame
through dpkt costs about 29 µs, this path about 4 µs, and the benchmark generator builds millions
of frames. dpkt still builds the application messages (DNS) and checks every frame in the tests.

Every frame is Ethernet II, optionally with 802.1Q or QinQ (802.1ad outer) tags, padded to the
60-byte minimum as a switch mirror port delivers it. IPv4 datagrams larger than the MTU are
fragmented here, so every traffic type gets fragmentation for free.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from dataclasses import dataclass, field
from typing import NamedTuple

ETH_IPV4 = 0x0800
ETH_ARP = 0x0806
ETH_VLAN = 0x8100
ETH_QINQ = 0x88A8
ETH_IPV6 = 0x86DD

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

BROADCAST_MAC = b"\xff" * 6
MTU = 1500
MIN_FRAME = 60

_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")

# Real vendor OUIs (Dell, Intel, HP, Apple, Cisco, Raspberry Pi, Yealink) so MACs look plausible.
_OUIS = (
    b"\x00\x14\x22",
    b"\x3c\xfd\xfe",
    b"\x00\x1b\x78",
    b"\xa4\x83\xe7",
    b"\x00\x1e\x13",
    b"\xdc\xa6\x32",
    b"\x80\x5e\xc0",
)


class Packet(NamedTuple):
    """One captured frame: time in integer ns since the Unix epoch, Ethernet bytes, interface."""

    ts_ns: int
    frame: bytes
    interface: int = 0


@dataclass(frozen=True, slots=True)
class OsProfile:
    """What a TCP/IP stack puts on the wire, as passive fingerprinting tools (p0f) see it."""

    name: str
    ttl: int
    syn_window: int
    window_scale: int
    timestamps: bool
    #: Unscaled window advertised once the connection is established.
    established_window: int
    ephemeral_ports: tuple[int, int]
    #: Largest unscaled window receive-buffer autotuning reaches.
    max_window: int = 65535


LINUX = OsProfile(
    "linux", 64, 64240, 7, True, 502, (32768, 60999), 6 << 20 >> 7
)  # tcp_rmem max 6 MB
WINDOWS = OsProfile("windows", 128, 64240, 8, False, 1026, (49152, 65535))
MACOS = OsProfile("macos", 64, 65535, 6, True, 2058, (49152, 65535))
PROFILES = {p.name: p for p in (LINUX, WINDOWS, MACOS)}


@dataclass(frozen=True, slots=True)
class Host:
    """An endpoint as seen from the capture point.

    `ttl` and `mac` are what the capture point observes: for a host behind a router, the TTL is
    already decremented and the MAC is the router's. `latency_ms` is the one-way delay between
    the capture point and the host, so a host's reply shows up `2 * latency_ms` after the packet
    that caused it (plus its processing time).
    """

    ip: str
    os: OsProfile = LINUX
    mac: bytes = b""
    ttl: int = 0
    latency_ms: float = 0.2
    #: 802.1Q VLAN ids, outermost first; two ids make a QinQ (802.1ad) frame.
    vlan: tuple[int, ...] = ()
    #: Capture interface the host's traffic is seen on (pcapng can hold several).
    interface: int = 0
    addr: bytes = field(init=False, repr=False)
    version: int = field(init=False, repr=False)
    latency_ns: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ip = ipaddress.ip_address(self.ip)
        object.__setattr__(self, "addr", ip.packed)
        object.__setattr__(self, "version", ip.version)
        object.__setattr__(self, "latency_ns", int(self.latency_ms * 1_000_000))
        if not self.mac:
            object.__setattr__(self, "mac", mac_for(self.ip))
        if not self.ttl:
            object.__setattr__(self, "ttl", self.os.ttl)

    def behind(self, router: Host, *, hops: int, latency_ms: float) -> Host:
        """This host as seen through `router`: the router's MAC, TTL less `hops`."""
        return Host(
            self.ip,
            self.os,
            mac=router.mac,
            ttl=self.os.ttl - hops,
            latency_ms=latency_ms,
            vlan=router.vlan,
            interface=router.interface,
        )


def mac_for(ip: str) -> bytes:
    """A stable vendor-looking MAC address for an IP address."""
    digest = hashlib.blake2b(ip.encode(), digest_size=4).digest()
    return _OUIS[digest[0] % len(_OUIS)] + digest[1:4]


def checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum.

    The ones' complement sum of 16-bit words equals the big-endian integer modulo 0xFFFF (2**16 is
    1 modulo 0xFFFF), which CPython computes in C: about 20x faster than summing words.
    """
    if len(data) & 1:
        data += b"\x00"
    total = int.from_bytes(data, "big") % 0xFFFF
    if total == 0 and any(data):
        total = 0xFFFF  # ones' complement arithmetic never sums non-zero words to +0
    return 0xFFFF - total


def _pseudo_header(src: Host, dst: Host, proto: int, length: int) -> bytes:
    if src.version == 4:
        return src.addr + dst.addr + struct.pack("!BBH", 0, proto, length)
    return src.addr + dst.addr + struct.pack("!I3xB", length, proto)


def ethernet(
    src: Host, dst: Host, ethertype: int, payload: bytes, *, dst_mac: bytes = b""
) -> bytes:
    """Ethernet II frame; VLAN tags of whichever end has them; padded to the 60-byte minimum."""
    tags = src.vlan or dst.vlan
    header = (dst_mac or dst.mac) + src.mac
    if len(tags) == 2:
        header += struct.pack("!HHHH", ETH_QINQ, tags[0], ETH_VLAN, tags[1])
    elif tags:
        header += struct.pack("!HH", ETH_VLAN, tags[0])
    frame = header + struct.pack("!H", ethertype) + payload
    minimum = MIN_FRAME + 4 * len(tags)
    if len(frame) < minimum:
        frame += b"\x00" * (minimum - len(frame))
    return frame


def ip_frames(
    src: Host,
    dst: Host,
    proto: int,
    l4: bytes,
    *,
    ip_id: int = 0,
    dont_fragment: bool = True,
    ttl: int = 0,
) -> list[bytes]:
    """Frames carrying one transport segment; IPv4 datagrams over the MTU become fragments."""
    ttl = ttl or src.ttl
    if src.version == 6:
        header = _IPV6.pack(0x60000000, len(l4), proto, ttl, src.addr, dst.addr)
        return [ethernet(src, dst, ETH_IPV6, header + l4)]
    if 20 + len(l4) <= MTU:
        return [
            ethernet(
                src,
                dst,
                ETH_IPV4,
                _ipv4(src, dst, proto, l4, ip_id, ttl, 0x4000 if dont_fragment else 0),
            )
        ]
    # Fragment payloads are multiples of 8 bytes, except the last (RFC 791).
    step = (MTU - 20) // 8 * 8
    frames = []
    for offset in range(0, len(l4), step):
        more = 0x2000 if offset + step < len(l4) else 0
        part = l4[offset : offset + step]
        frames.append(
            ethernet(
                src, dst, ETH_IPV4, _ipv4(src, dst, proto, part, ip_id, ttl, more | offset // 8)
            )
        )
    return frames


def _ipv4(
    src: Host, dst: Host, proto: int, payload: bytes, ip_id: int, ttl: int, frag: int
) -> bytes:
    header = _IPV4.pack(
        0x45, 0, 20 + len(payload), ip_id & 0xFFFF, frag, ttl, proto, 0, src.addr, dst.addr
    )
    return header[:10] + checksum(header).to_bytes(2, "big") + header[12:] + payload


def tcp_frame(
    src: Host,
    dst: Host,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    options: bytes = b"",
    payload: bytes = b"",
    *,
    ip_id: int = 0,
    ttl: int = 0,
) -> bytes:
    """An Ethernet frame carrying one TCP segment, checksums correct."""
    header = _TCP.pack(
        sport,
        dport,
        seq & 0xFFFFFFFF,
        ack & 0xFFFFFFFF,
        (20 + len(options)) << 2,
        flags,
        window,
        0,
        0,
    )
    segment = header + options + payload
    csum = checksum(_pseudo_header(src, dst, PROTO_TCP, len(segment)) + segment)
    segment = segment[:16] + csum.to_bytes(2, "big") + segment[18:]
    return ip_frames(src, dst, PROTO_TCP, segment, ip_id=ip_id, ttl=ttl)[0]


def udp_frames(
    src: Host, dst: Host, sport: int, dport: int, payload: bytes, *, ip_id: int = 0
) -> list[bytes]:
    """Frames carrying one UDP datagram (several when an IPv4 datagram is fragmented)."""
    datagram = _UDP.pack(sport, dport, 8 + len(payload), 0) + payload
    csum = checksum(_pseudo_header(src, dst, PROTO_UDP, len(datagram)) + datagram) or 0xFFFF
    datagram = datagram[:6] + csum.to_bytes(2, "big") + datagram[8:]
    # Linux sets DF on UDP unless the datagram has to be fragmented.
    return ip_frames(
        src, dst, PROTO_UDP, datagram, ip_id=ip_id, dont_fragment=len(datagram) + 20 <= MTU
    )


def icmp_echo_frame(
    src: Host, dst: Host, *, reply: bool, ident: int, seq: int, payload: bytes, ip_id: int = 0
) -> bytes:
    """ICMP (IPv4) or ICMPv6 echo request/reply."""
    if src.version == 6:
        kind = 129 if reply else 128
        message = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + payload
        pseudo = _pseudo_header(src, dst, PROTO_ICMPV6, len(message))
        message = message[:2] + checksum(pseudo + message).to_bytes(2, "big") + message[4:]
        return ip_frames(src, dst, PROTO_ICMPV6, message)[0]
    kind = 0 if reply else 8
    message = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + payload
    message = message[:2] + checksum(message).to_bytes(2, "big") + message[4:]
    return ip_frames(src, dst, PROTO_ICMP, message, ip_id=ip_id, dont_fragment=not reply)[0]


def arp_frame(src: Host, target_ip: str, *, reply_to: Host | None = None) -> bytes:
    """ARP who-has `target_ip` from `src` (broadcast), or `src`'s is-at reply to `reply_to`."""
    target = ipaddress.IPv4Address(target_ip).packed
    if reply_to is None:
        body = struct.pack(
            "!HHBBH6s4s6s4s", 1, ETH_IPV4, 6, 4, 1, src.mac, src.addr, b"\x00" * 6, target
        )
        return ethernet(src, src, ETH_ARP, body, dst_mac=BROADCAST_MAC)
    body = struct.pack(
        "!HHBBH6s4s6s4s", 1, ETH_IPV4, 6, 4, 2, src.mac, src.addr, reply_to.mac, reply_to.addr
    )
    return ethernet(src, reply_to, ETH_ARP, body)


def l2_header_length(frame: bytes) -> int:
    """Bytes of Ethernet header, VLAN tags included, before the network layer."""
    offset = 12
    while int.from_bytes(frame[offset : offset + 2], "big") in (ETH_VLAN, ETH_QINQ):
        offset += 4
    return offset + 2


def raw_ip(frame: bytes) -> bytes:
    """The IP packet inside an Ethernet frame, without L2 header or padding (LINKTYPE_RAW)."""
    packet = frame[l2_header_length(frame) :]
    if packet[0] >> 4 == 4:
        return packet[: int.from_bytes(packet[2:4], "big")]
    return packet[: 40 + int.from_bytes(packet[4:6], "big")]
