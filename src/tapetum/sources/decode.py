"""Compiled link/network/transport header decoding into packet columns.

One pass per batch over the record offsets; bounds are checked on every read so hostile packets
only produce a status code. Addresses are two uint64 halves of an IPv6 address; IPv4 is stored
IPv4-mapped (::ffff:a.b.c.d) so both families share one key layout.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Columns of PacketBatch.cols (int64, [n, N_COLS]: one packet's fields are adjacent).
C_TS = 0  # ns since epoch
C_WIRELEN = 1  # original length on the wire
C_CAPLEN = 2
C_OFF = 3  # offset of the frame in the batch buffer
C_LINKTYPE = 4
C_STATUS = 5
C_IPVER = 6  # 0 when not IP
C_PROTO = 7
C_SPORT = 8  # ICMP: type
C_DPORT = 9  # ICMP: code
C_VLAN = 10  # outer VLAN id * 4096 + inner VLAN id (0 if none)
C_FLAGS = 11  # TCP flags
C_SEQ = 12  # TCP sequence number
C_IPLEN = 13  # IP total length from the header
C_PAYOFF = 14  # transport payload offset in the batch buffer
C_PAYLEN = 15  # transport payload length per the headers (wire)
C_PAYCAP = 16  # transport payload bytes actually captured
C_FRAG = 17  # 0 none, 1 first fragment, 2 later fragment
C_IPID = 18  # IPv4 id / IPv6 fragment identification
C_FILEOFF = 19  # offset of the record in its file (for messages)
C_VLANCOUNT = 20
C_TUNNEL = 21  # tunnel the packet was decapsulated from (TUNNEL_ID_*; 0 none)
N_COLS = 22

# Columns of PacketBatch.addr (uint64, [n, 4]).
A_SRC_HI = 0
A_SRC_LO = 1
A_DST_HI = 2
A_DST_LO = 3

#: C_PROTO of ARP rows (outside the 8-bit IP protocol space; status stays S_NOT_IP).
PROTO_ARP = 0x0806
#: The "IP version" _link reports for an ARP payload.
ARP_L3 = 0x806

# Status codes (C_STATUS).
S_OK = 0
S_NOT_IP = 1  # ARP, LLDP, STP …: counted, not a flow
S_TRUNC_L2 = 2
S_TRUNC_L3 = 3
S_TRUNC_L4 = 4  # IP header fine, transport header cut: still a flow, without ports
S_BAD_IP = 5
S_LINKTYPE = 6
S_EMPTY = 7
STATUS_NAMES = (
    "ok",
    "not_ip",
    "truncated_link_header",
    "truncated_ip_header",
    "truncated_transport_header",
    "bad_ip_header",
    "unknown_link_type",
    "empty_packet",
)

# Link types (https://www.tcpdump.org/linktypes.html).
LT_NULL = 0
LT_ETHERNET = 1
LT_PPP = 9
LT_PPP_HDLC = 50
LT_C_HDLC = 104
LT_RAW_12 = 12
LT_RAW_14 = 14
LT_RAW = 101
LT_LOOP = 108
LT_SLL = 113
LT_IPV4 = 228
LT_IPV6 = 229
LT_SLL2 = 276
SUPPORTED_LINKTYPES = (
    LT_NULL,
    LT_ETHERNET,
    LT_PPP,
    LT_PPP_HDLC,
    LT_C_HDLC,
    LT_RAW_12,
    LT_RAW_14,
    LT_RAW,
    LT_LOOP,
    LT_SLL,
    LT_IPV4,
    LT_IPV6,
    LT_SLL2,
)

# Tunnel decapsulation (the `tunnels` bit set of decode_batch). Off by default: a tunnelled packet
# is then one flow between the tunnel endpoints, as Zeek reports it without its tunnel analyzers.
TUNNEL_IP_IN_IP = 1  # IPv4/IPv6 carried in IPv4/IPv6 (protocols 4 and 41)
TUNNEL_GTP_U = 2  # GTPv1-U T-PDUs on UDP port 2152
TUNNEL_CAPWAP = 4  # CAPWAP data (UDP port 5247) carrying IEEE 802.11 data frames
TUNNEL_TZSP = 8  # TZSP (UDP port 37008) carrying Ethernet
TUNNELS_ALL = TUNNEL_IP_IN_IP | TUNNEL_GTP_U | TUNNEL_CAPWAP | TUNNEL_TZSP
# C_TUNNEL values: the innermost tunnel a packet was taken out of.
TUNNEL_ID_NONE = 0
TUNNEL_ID_GTP = 1
TUNNEL_ID_CAPWAP = 2
TUNNEL_ID_TZSP = 3
TUNNEL_ID_IP_IN_IP = 4
_MAX_TUNNEL_DEPTH = 4

V4_MAPPED_HI = np.uint64(0)
V4_MAPPED_LO_PREFIX = np.uint64(0xFFFF) << np.uint64(32)


@njit(cache=True, inline="always")
def _be16(buf: np.ndarray, p: int) -> int:
    return int((np.int64(buf[p]) << 8) | np.int64(buf[p + 1]))


@njit(cache=True, inline="always")
def _be32(buf: np.ndarray, p: int) -> int:
    return int(
        (np.int64(buf[p]) << 24)
        | (np.int64(buf[p + 1]) << 16)
        | (np.int64(buf[p + 2]) << 8)
        | np.int64(buf[p + 3])
    )


@njit(cache=True, inline="always")
def _be64(buf: np.ndarray, p: int) -> np.uint64:
    v = np.uint64(0)
    for k in range(8):
        v = (v << np.uint64(8)) | np.uint64(buf[p + k])
    return v


@njit(cache=True)
def _ethertype_l3(buf: np.ndarray, p: int, end: int, cols: np.ndarray, i: int) -> tuple[int, int]:
    """Walk Ethernet type fields from p (pointing at an ethertype). Returns (l3 start, version)."""
    vl = 0
    nvlan = 0
    while True:
        if p + 2 > end:
            return -1, 0
        et = _be16(buf, p)
        p += 2
        if et == 0x8100 or et == 0x88A8 or et == 0x9100:
            if p + 4 > end:
                return -1, 0
            vid = _be16(buf, p) & 0x0FFF
            if nvlan == 0:
                vl = vid * 4096
            elif nvlan == 1:
                vl += vid
            nvlan += 1
            cols[i, C_VLAN] = vl
            cols[i, C_VLANCOUNT] = nvlan
            p += 2  # TCI; next is the inner ethertype
            if nvlan > 8:
                return -1, 0
            continue
        if et == 0x0800:
            return p, 4
        if et == 0x86DD:
            return p, 6
        if et == 0x0806:
            return p, ARP_L3
        if et == 0x8847 or et == 0x8848:
            # MPLS: skip labels to the bottom of stack, then guess the family from the nibble.
            while True:
                if p + 4 > end:
                    return -1, 0
                bos = buf[p + 2] & 1
                p += 4
                if bos:
                    break
            if p >= end:
                return -1, 0
            v = buf[p] >> 4
            if v == 4:
                return p, 4
            if v == 6:
                return p, 6
            return -2, 0
        if et == 0x8864:
            # PPPoE session: 6-byte header then a 2-byte PPP protocol.
            if p + 8 > end:
                return -1, 0
            ppp = _be16(buf, p + 6)
            p += 8
            if ppp == 0x0021:
                return p, 4
            if ppp == 0x0057:
                return p, 6
            return -2, 0
        return -2, 0


@njit(cache=True)
def _transport(
    buf: np.ndarray, p: int, l3_end: int, cap_end: int, proto: int, cols: np.ndarray, i: int
) -> None:
    """Decode TCP/UDP/ICMP at p. l3_end: end of the IP payload per headers; cap_end: captured."""
    wire_len = l3_end - p
    if wire_len < 0:
        wire_len = 0
    if proto == 6:
        if p + 20 > cap_end:
            cols[i, C_STATUS] = S_TRUNC_L4
            return
        cols[i, C_SPORT] = _be16(buf, p)
        cols[i, C_DPORT] = _be16(buf, p + 2)
        cols[i, C_SEQ] = _be32(buf, p + 4)
        off = (buf[p + 12] >> 4) * 4
        cols[i, C_FLAGS] = buf[p + 13]
        if off < 20:
            off = 20
        hdr = off
    elif proto == 17 or proto == 136:  # UDP, UDP-Lite
        if p + 8 > cap_end:
            cols[i, C_STATUS] = S_TRUNC_L4
            return
        cols[i, C_SPORT] = _be16(buf, p)
        cols[i, C_DPORT] = _be16(buf, p + 2)
        hdr = 8
    elif proto == 1 or proto == 58:
        if p + 2 > cap_end:
            cols[i, C_STATUS] = S_TRUNC_L4
            return
        cols[i, C_SPORT] = buf[p]
        cols[i, C_DPORT] = buf[p + 1]
        hdr = 8 if p + 8 <= l3_end else l3_end - p
    elif proto == 132:  # SCTP: ports like TCP/UDP
        if p + 12 > cap_end:
            cols[i, C_STATUS] = S_TRUNC_L4
            return
        cols[i, C_SPORT] = _be16(buf, p)
        cols[i, C_DPORT] = _be16(buf, p + 2)
        hdr = 12
    else:
        hdr = 0
    pay = wire_len - hdr
    if pay < 0:
        pay = 0
    cols[i, C_PAYLEN] = pay
    cols[i, C_PAYOFF] = p + hdr
    capd = cap_end - (p + hdr)
    if capd < 0:
        capd = 0
    if capd > pay:
        capd = pay
    cols[i, C_PAYCAP] = capd


@njit(cache=True)
def _ipv4(buf: np.ndarray, p: int, end: int, cols: np.ndarray, addr: np.ndarray, i: int) -> None:
    if p + 20 > end:
        cols[i, C_STATUS] = S_TRUNC_L3
        return
    if (buf[p] >> 4) != 4:
        cols[i, C_STATUS] = S_BAD_IP
        return
    ihl = (buf[p] & 0x0F) * 4
    tot = _be16(buf, p + 2)
    if ihl < 20 or tot < ihl:
        cols[i, C_STATUS] = S_BAD_IP
        return
    if p + ihl > end:
        cols[i, C_STATUS] = S_TRUNC_L3
        return
    cols[i, C_IPVER] = 4
    cols[i, C_IPLEN] = tot
    proto = buf[p + 9]
    cols[i, C_PROTO] = proto
    cols[i, C_IPID] = _be16(buf, p + 4)
    addr[i, A_SRC_HI] = V4_MAPPED_HI
    addr[i, A_SRC_LO] = V4_MAPPED_LO_PREFIX | np.uint64(_be32(buf, p + 12))
    addr[i, A_DST_HI] = V4_MAPPED_HI
    addr[i, A_DST_LO] = V4_MAPPED_LO_PREFIX | np.uint64(_be32(buf, p + 16))
    ff = _be16(buf, p + 6)
    mf = (ff >> 13) & 1
    frag_off = ff & 0x1FFF
    l3_end = p + tot
    cap_end = min(end, l3_end)
    if frag_off != 0:
        cols[i, C_FRAG] = 2
        cols[i, C_PAYOFF] = p + ihl
        cols[i, C_PAYLEN] = tot - ihl
        cols[i, C_PAYCAP] = max(0, cap_end - (p + ihl))
        return
    if mf:
        cols[i, C_FRAG] = 1
    _transport(buf, p + ihl, l3_end, cap_end, proto, cols, i)


@njit(cache=True)
def _ipv6(buf: np.ndarray, p: int, end: int, cols: np.ndarray, addr: np.ndarray, i: int) -> None:
    if p + 40 > end:
        cols[i, C_STATUS] = S_TRUNC_L3
        return
    if (buf[p] >> 4) != 6:
        cols[i, C_STATUS] = S_BAD_IP
        return
    plen = _be16(buf, p + 4)
    cols[i, C_IPVER] = 6
    cols[i, C_IPLEN] = plen + 40
    addr[i, A_SRC_HI] = _be64(buf, p + 8)
    addr[i, A_SRC_LO] = _be64(buf, p + 16)
    addr[i, A_DST_HI] = _be64(buf, p + 24)
    addr[i, A_DST_LO] = _be64(buf, p + 32)
    nh = buf[p + 6]
    l3_end = p + 40 + plen
    cap_end = min(end, l3_end)
    q = p + 40
    # Extension headers: hop-by-hop, routing, fragment, destination options, AH.
    for _ in range(16):
        if nh == 0 or nh == 43 or nh == 60:
            if q + 8 > cap_end:
                cols[i, C_PROTO] = nh
                cols[i, C_STATUS] = S_TRUNC_L4
                return
            nxt = buf[q]
            q += (buf[q + 1] + 1) * 8
            nh = nxt
        elif nh == 51:
            if q + 8 > cap_end:
                cols[i, C_PROTO] = nh
                cols[i, C_STATUS] = S_TRUNC_L4
                return
            nxt = buf[q]
            q += (buf[q + 1] + 2) * 4
            nh = nxt
        elif nh == 44:
            if q + 8 > cap_end:
                cols[i, C_PROTO] = nh
                cols[i, C_STATUS] = S_TRUNC_L4
                return
            nxt = buf[q]
            fo = _be16(buf, q + 2)
            cols[i, C_IPID] = _be32(buf, q + 4)
            q += 8
            nh = nxt
            if (fo >> 3) != 0:
                cols[i, C_PROTO] = nh
                cols[i, C_FRAG] = 2
                cols[i, C_PAYOFF] = q
                cols[i, C_PAYLEN] = max(0, l3_end - q)
                cols[i, C_PAYCAP] = max(0, cap_end - q)
                return
            if fo & 1:
                cols[i, C_FRAG] = 1
        else:
            break
    cols[i, C_PROTO] = nh
    _transport(buf, q, l3_end, cap_end, nh, cols, i)


@njit(cache=True)
def _arp(buf: np.ndarray, p: int, end: int, cols: np.ndarray, addr: np.ndarray, i: int) -> None:
    """Ethernet/IPv4 ARP (RFC 826): C_PROTO = PROTO_ARP, C_SPORT = opcode, sender and target
    protocol addresses in the source and destination address columns (IPv4-mapped)."""
    if p + 28 > end:
        return
    if _be16(buf, p) != 1 or _be16(buf, p + 2) != 0x0800 or buf[p + 4] != 6 or buf[p + 5] != 4:
        return
    cols[i, C_PROTO] = PROTO_ARP
    cols[i, C_SPORT] = _be16(buf, p + 6)
    spa = np.uint64(0)
    tpa = np.uint64(0)
    for k in range(4):
        spa = (spa << np.uint64(8)) | np.uint64(buf[p + 14 + k])
        tpa = (tpa << np.uint64(8)) | np.uint64(buf[p + 24 + k])
    mapped = np.uint64(0xFFFF) << np.uint64(32)
    addr[i, 0] = 0
    addr[i, 1] = mapped | spa
    addr[i, 2] = 0
    addr[i, 3] = mapped | tpa


@njit(cache=True)
def _link(buf: np.ndarray, p: int, end: int, lt: int, cols: np.ndarray, i: int) -> tuple[int, int]:
    """Link layer at p. Returns (l3 start, IP version) or (-1 truncated / -2 not IP / -3 bad IP /
    -4 unknown link type, 0)."""
    if lt == LT_ETHERNET:
        if p + 14 > end:
            return -1, 0
        return _ethertype_l3(buf, p + 12, end, cols, i)
    if lt == LT_SLL:
        if p + 16 > end:
            return -1, 0
        return _ethertype_l3(buf, p + 14, end, cols, i)
    if lt == LT_SLL2:
        if p + 20 > end:
            return -1, 0
        et = _be16(buf, p)
        if et == 0x0800:
            return p + 20, 4
        if et == 0x86DD:
            return p + 20, 6
        return -2, 0
    if lt == LT_NULL or lt == LT_LOOP:
        if p + 4 > end:
            return -1, 0
        # The family is in host byte order for NULL, network order for LOOP: accept both.
        fam = buf[p] | buf[p + 3]
        if fam == 2:
            return p + 4, 4
        if fam == 24 or fam == 28 or fam == 30 or fam == 10:
            return p + 4, 6
        return -2, 0
    if lt == LT_RAW or lt == LT_RAW_12 or lt == LT_RAW_14:
        v = buf[p] >> 4
        if v == 4 or v == 6:
            return p, v
        return -3, 0
    if lt == LT_IPV4:
        return p, 4
    if lt == LT_IPV6:
        return p, 6
    if lt == LT_PPP or lt == LT_PPP_HDLC or lt == LT_C_HDLC:
        # PPP: [address 0xff, control 0x03,] 2-byte PPP protocol (RFC 1661/1662). Cisco HDLC:
        # address 0x0f/0x8f, control 0, then an Ethernet type. Either framing under any of the
        # three link types, as libpcap-based tools accept them.
        if p + 2 > end:
            return -1, 0
        a = buf[p]
        if a == 0x0F or a == 0x8F:
            if p + 4 > end:
                return -1, 0
            return _ethertype_l3(buf, p + 2, end, cols, i)
        q = p
        if a == 0xFF and buf[p + 1] == 0x03:
            q = p + 2
        if q + 2 > end:
            return -1, 0
        proto = _be16(buf, q)
        if proto == 0x0021:
            return q + 2, 4
        if proto == 0x0057:
            return q + 2, 6
        return -2, 0
    return -4, 0


@njit(cache=True)
def _reset_l3(cols: np.ndarray, addr: np.ndarray, i: int) -> None:
    cols[i, C_STATUS] = S_OK
    cols[i, C_IPVER] = 0
    cols[i, C_PROTO] = 0
    cols[i, C_SPORT] = 0
    cols[i, C_DPORT] = 0
    cols[i, C_FLAGS] = 0
    cols[i, C_SEQ] = 0
    cols[i, C_IPLEN] = 0
    cols[i, C_PAYOFF] = 0
    cols[i, C_PAYLEN] = 0
    cols[i, C_PAYCAP] = 0
    cols[i, C_FRAG] = 0
    cols[i, C_IPID] = 0
    for k in range(4):
        addr[i, k] = 0


@njit(cache=True)
def _tunnel(
    buf: np.ndarray, end: int, cols: np.ndarray, i: int, tunnels: int
) -> tuple[int, int, int]:
    """The inner packet of a decoded tunnel packet: (l3 start, IP version, tunnel id) or (-1, 0, 0).

    Only unfragmented (or first-fragment) packets with their tunnel header captured qualify.
    """
    if cols[i, C_STATUS] != S_OK or cols[i, C_FRAG] == 2:
        return -1, 0, 0
    proto = cols[i, C_PROTO]
    q = cols[i, C_PAYOFF]
    lim = min(end, q + cols[i, C_PAYCAP])
    if (tunnels & TUNNEL_IP_IN_IP) != 0 and (proto == 4 or proto == 41):
        if q + 1 > lim:
            return -1, 0, 0
        v = buf[q] >> 4
        if (proto == 4 and v == 4) or (proto == 41 and v == 6):
            return q, v, TUNNEL_ID_IP_IN_IP
        return -1, 0, 0
    if proto != 17:
        return -1, 0, 0
    sport = cols[i, C_SPORT]
    dport = cols[i, C_DPORT]
    if (tunnels & TUNNEL_GTP_U) != 0 and (sport == 2152 or dport == 2152):
        # GTPv1 (version bits 001, protocol type 1) carrying a T-PDU (message type 0xff).
        if q + 8 > lim:
            return -1, 0, 0
        fl = buf[q]
        if (fl >> 5) != 1 or (fl & 0x10) == 0 or buf[q + 1] != 0xFF:
            return -1, 0, 0
        off = q + 8
        if (fl & 0x07) != 0:
            off += 4  # sequence number, N-PDU number, next extension header type
            if off > lim:
                return -1, 0, 0
            nxt = buf[off - 1] if (fl & 0x04) != 0 else 0
            while nxt != 0:
                if off + 1 > lim:
                    return -1, 0, 0
                n4 = buf[off] * 4
                if n4 == 0 or off + n4 > lim:
                    return -1, 0, 0
                nxt = buf[off + n4 - 1]
                off += n4
        if off >= lim:
            return -1, 0, 0
        v = buf[off] >> 4
        if v == 4 or v == 6:
            return off, v, TUNNEL_ID_GTP
        return -1, 0, 0
    if (tunnels & TUNNEL_CAPWAP) != 0 and (sport == 5247 or dport == 5247):
        # RFC 5415 header (preamble version 0, type 0), HLEN in 4-byte words; with the T bit the
        # payload is an IEEE 802.11 frame: a data frame's 24-byte header (+6 with four addresses,
        # +2 for QoS data), then LLC/SNAP with the Ethernet type.
        if q + 8 > lim or buf[q] != 0:
            return -1, 0, 0
        hlen = (buf[q + 1] >> 3) * 4
        if hlen < 8 or (buf[q + 2] & 0x01) == 0:  # T bit: native (802.11) frame format
            return -1, 0, 0
        off = q + hlen
        if off + 2 > lim:
            return -1, 0, 0
        fc = buf[off]
        fl = buf[off + 1]
        if (fc & 0x0C) != 0x08:
            # Some access points send the frame control field byte-swapped.
            fc = buf[off + 1]
            fl = buf[off]
            if (fc & 0x0C) != 0x08:  # not a data frame (management frames carry no IP)
                return -1, 0, 0
        wlen = 24
        if (fl & 0x03) == 0x03:  # to-DS and from-DS: a fourth address
            wlen += 6
        if (fc & 0x80) != 0:  # QoS data subtype
            wlen += 2
        off += wlen
        if off + 8 > lim or buf[off] != 0xAA or buf[off + 1] != 0xAA:
            return -1, 0, 0
        et = _be16(buf, off + 6)
        if et == 0x0800:
            return off + 8, 4, TUNNEL_ID_CAPWAP
        if et == 0x86DD:
            return off + 8, 6, TUNNEL_ID_CAPWAP
        return -1, 0, 0
    if (tunnels & TUNNEL_TZSP) != 0 and (sport == 37008 or dport == 37008):
        # TZSP version 1, type 0 (received tag list), encapsulating Ethernet (1); tags up to END.
        if q + 4 > lim or buf[q] != 1 or buf[q + 1] != 0 or _be16(buf, q + 2) != 1:
            return -1, 0, 0
        off = q + 4
        while True:
            if off >= lim:
                return -1, 0, 0
            tag = buf[off]
            if tag == 1:
                off += 1
                break
            if tag == 0:
                off += 1
                continue
            if off + 2 > lim:
                return -1, 0, 0
            off += 2 + buf[off + 1]
        if off + 14 > lim:
            return -1, 0, 0
        l3, ver = _ethertype_l3(buf, off + 12, lim, cols, i)
        if l3 < 0:
            return -1, 0, 0
        return l3, ver, TUNNEL_ID_TZSP
    return -1, 0, 0


@njit(cache=True)
def decode_batch(
    buf: np.ndarray, cols: np.ndarray, addr: np.ndarray, n: int, tunnels: int = 0
) -> None:
    """Fill the header columns of packets 0..n-1 (zeroed arrays; C_OFF, C_CAPLEN, C_LINKTYPE in).

    `tunnels` (TUNNEL_* bits) selects the tunnels whose inner packet replaces the outer one.
    """
    for i in range(n):
        p = cols[i, C_OFF]
        end = p + cols[i, C_CAPLEN]
        lt = cols[i, C_LINKTYPE]
        # Buffers are reused: reset this row's outputs (adjacent memory, cheap).
        for c in range(C_STATUS, N_COLS):
            if c != C_FILEOFF:
                cols[i, c] = 0
        for c in range(4):
            addr[i, c] = 0
        if end <= p:
            cols[i, C_STATUS] = S_EMPTY
            continue
        l3, ver = _link(buf, p, end, lt, cols, i)
        depth = 0
        while True:
            if l3 == -4:
                cols[i, C_STATUS] = S_LINKTYPE
                break
            if l3 == -1:
                cols[i, C_STATUS] = S_TRUNC_L2
                break
            if l3 == -2:
                cols[i, C_STATUS] = S_NOT_IP
                break
            if ver == ARP_L3:
                # Not IP (no flow), but ARP sweeps are reconnaissance: keep who asked for whom.
                cols[i, C_STATUS] = S_NOT_IP
                _arp(buf, l3, end, cols, addr, i)
                break
            if l3 == -3:
                cols[i, C_STATUS] = S_BAD_IP
                break
            if ver == 4:
                _ipv4(buf, l3, end, cols, addr, i)
            else:
                _ipv6(buf, l3, end, cols, addr, i)
            if tunnels == 0 or depth >= _MAX_TUNNEL_DEPTH:
                break
            # The inner packet is bounded by the outer one's captured payload.
            lim = min(end, cols[i, C_PAYOFF] + cols[i, C_PAYCAP])
            vlan = cols[i, C_VLAN]
            nvlan = cols[i, C_VLANCOUNT]
            nl3, nver, tid = _tunnel(buf, end, cols, i, tunnels)
            if nl3 < 0:
                cols[i, C_VLAN] = vlan
                cols[i, C_VLANCOUNT] = nvlan
                break
            _reset_l3(cols, addr, i)
            cols[i, C_TUNNEL] = tid
            end = lim
            l3 = nl3
            ver = nver
            depth += 1
