"""Capture building blocks for reader tests: parse real pcaps, re-frame their packets, write pcap
and pcapng by hand (every byte order, resolution and block type we need), and summarise flows.

Written with struct on purpose: the point is to feed the reader byte layouts produced by an
independent implementation of the file formats, and to reach layouts (big-endian pcap, pcapng with
mixed interfaces and SPBs) that common writers do not produce.
"""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np

from tapetum.flows.meter import FlowBatch, FlowMeter, MeterConfig
from tapetum.sources.decode import C_TS
from tapetum.sources.pcap import CaptureReader

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"

LT_NULL = 0
LT_ETHERNET = 1
LT_RAW = 101
LT_LOOP = 108
LT_SLL = 113
LT_SLL2 = 276


@dataclass(frozen=True, slots=True)
class Record:
    ts_ns: int
    wirelen: int
    data: bytes


def read_pcap(path: Path) -> tuple[int, list[Record]]:
    """A classic pcap's link type and records (either byte order, µs or ns)."""
    raw = path.read_bytes()
    magic = raw[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        order = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        order = ">"
    else:
        raise ValueError(f"{path}: not a classic pcap")
    nanos = struct.unpack(order + "I", magic)[0] == 0xA1B23C4D
    linktype = struct.unpack_from(order + "I", raw, 20)[0] & 0x0FFFFFFF
    pos = 24
    out: list[Record] = []
    while pos + 16 <= len(raw):
        sec, frac, caplen, wirelen = struct.unpack_from(order + "IIII", raw, pos)
        data = raw[pos + 16 : pos + 16 + caplen]
        out.append(Record(sec * 10**9 + (frac if nanos else frac * 1000), wirelen, data))
        pos += 16 + caplen
    return linktype, out


def write_pcap(
    path: Path,
    linktype: int,
    records: Iterable[Record],
    *,
    nanos: bool = False,
    big_endian: bool = False,
    snaplen: int = 262144,
) -> Path:
    order = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    parts = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for r in records:
        sec, rem = divmod(r.ts_ns, 10**9)
        frac = rem if nanos else rem // 1000
        parts.append(struct.pack(order + "IIII", sec, frac, len(r.data), r.wirelen) + r.data)
    path.write_bytes(b"".join(parts))
    return path


def _opt(code: int, value: bytes) -> bytes:
    pad = (-len(value)) % 4
    return struct.pack("<HH", code, len(value)) + value + b"\0" * pad


def _block(btype: int, body: bytes) -> bytes:
    body += b"\0" * ((-len(body)) % 4)
    total = 12 + len(body)
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


def shb() -> bytes:
    return _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + _opt(0, b""))


def idb(linktype: int, tsresol: int | None = None, snaplen: int = 262144) -> bytes:
    """Interface description; tsresol is the raw if_tsresol byte (6: µs, 9: ns, 0x80|n: 2^-n)."""
    opts = b""
    if tsresol is not None:
        opts = _opt(9, bytes([tsresol])) + _opt(0, b"")
    return _block(1, struct.pack("<HHI", linktype, 0, snaplen) + opts)


def units_per_second(tsresol: int | None) -> int:
    if tsresol is None:
        return 10**6
    return 2 ** (tsresol & 0x7F) if tsresol & 0x80 else 10 ** (tsresol & 0x7F)


def epb(iface: int, ts_ns: int, data: bytes, wirelen: int, tsresol: int | None) -> bytes:
    units = ts_ns * units_per_second(tsresol) // 10**9
    body = struct.pack("<IIIII", iface, units >> 32, units & 0xFFFFFFFF, len(data), wirelen)
    return _block(6, body + data)


def spb(data: bytes, wirelen: int) -> bytes:
    return _block(3, struct.pack("<I", wirelen) + data)


def ts_after_resolution(ts_ns: int, tsresol: int | None) -> int:
    """The time a reader must report for ts_ns written at that resolution (truncated, then in ns;
    binary resolutions are not exact in ns, so this is floor(units * 1e9 / units_per_second))."""
    ups = units_per_second(tsresol)
    units = ts_ns * ups // 10**9
    return units * 10**9 // ups


# -- re-framing -----------------------------------------------------------------------------------


def ethertype_and_l3(frame: bytes) -> tuple[int, bytes]:
    """(ethertype, payload) of an untagged Ethernet frame."""
    return struct.unpack_from(">H", frame, 12)[0], frame[14:]


def ip_payload(frame: bytes) -> bytes | None:
    et, l3 = ethertype_and_l3(frame)
    if et not in (0x0800, 0x86DD):
        return None
    # Drop Ethernet padding: the IP total length says where the packet ends.
    if et == 0x0800:
        return l3[: struct.unpack_from(">H", l3, 2)[0]]
    return l3[: 40 + struct.unpack_from(">H", l3, 4)[0]]


def sll(frame: bytes) -> bytes:
    et, l3 = ethertype_and_l3(frame)
    return struct.pack(">HHH8sH", 0, 1, 6, frame[6:12] + b"\0\0", et) + l3


def sll2(frame: bytes) -> bytes:
    et, l3 = ethertype_and_l3(frame)
    return struct.pack(">HHIHBB8s", et, 0, 2, 1, 0, 6, frame[6:12] + b"\0\0") + l3


def null_frame(ip: bytes, *, network_order: bool) -> bytes:
    family = 2 if ip[0] >> 4 == 4 else 30  # AF_INET; AF_INET6 as on macOS
    return struct.pack(">I" if network_order else "<I", family) + ip


def vlan_tagged(frame: bytes, tags: Sequence[tuple[int, int]]) -> bytes:
    """Insert (tpid, vlan id) tags, outermost first, after the MAC addresses."""
    out = frame[:12]
    for tpid, vid in tags:
        out += struct.pack(">HH", tpid, vid)
    return out + frame[12:]


def ipv4_to_ipv6_with_extensions(ip: bytes) -> bytes | None:
    """An IPv4 TCP/UDP packet as IPv6 (2001:db8::a.b.c.d) behind hop-by-hop, destination
    options and an atomic fragment header, transport header and payload unchanged."""
    if ip[0] >> 4 != 4 or ip[9] not in (6, 17):
        return None
    ihl = (ip[0] & 0x0F) * 4
    total = struct.unpack_from(">H", ip, 2)[0]
    l4 = ip[ihl:total]
    proto = ip[9]
    hop = bytes([60, 0]) + b"\x01\x04\0\0\0\0"  # next: dest opts; PadN
    dst = bytes([44, 0]) + b"\x01\x04\0\0\0\0"  # next: fragment; PadN
    frag = struct.pack(">BBHI", proto, 0, 0, 0x1234)  # offset 0, M=0: an atomic fragment
    ext = hop + dst + frag
    prefix = bytes.fromhex("20010db8000000000000000000000000")[:12]
    src = prefix + ip[12:16]
    dst_addr = prefix + ip[16:20]
    hdr = struct.pack(">IHBB", 6 << 28, len(ext) + len(l4), 0, 64) + src + dst_addr
    return hdr + ext + l4


# -- what the reader and meter make of a file ------------------------------------------------------


FlowRow = tuple[str, int, str, int, int, int, int, int, int, int]


def flow_rows(
    path: Path, config: MeterConfig | None = None, **reader_kwargs: object
) -> list[FlowRow]:
    """Sorted (src, sport, dst, dport, proto, vlan, pkts to server, pkts to client, start ns,
    end ns) of every flow in a capture."""
    meter = FlowMeter(config or MeterConfig())
    batches: list[FlowBatch] = []
    with CaptureReader(path, **reader_kwargs) as reader:  # type: ignore[arg-type]
        for batch in reader:
            batches += meter.process(batch)[1]
    batches += meter.flush()
    rows: list[FlowRow] = []
    for fb in batches:
        n = fb.num
        for k in range(len(fb)):
            rows.append((
                fb.src_ip[k], int(n["src_port"][k]), fb.dest_ip[k], int(n["dest_port"][k]),
                int(n["proto"][k]), int(n["vlan"][k]), int(n["pkts_toserver"][k]),
                int(n["pkts_toclient"][k]), int(n["start_ns"][k]), int(n["end_ns"][k]),
            ))  # fmt: skip
    return sorted(rows)


def packet_times(path: Path) -> list[int]:
    """Per-packet timestamps (ns) as the reader reports them, in file order."""
    out: list[np.ndarray] = []
    with CaptureReader(path) as reader:
        for batch in reader:
            out.append(batch.cols[: batch.n, C_TS].copy())
    return np.concatenate(out).tolist() if out else []


def tshark_times(path: Path) -> list[int]:
    """tshark's frame.time_epoch per packet, in ns."""
    out = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [int(Decimal(line) * 10**9) for line in out.split()]


def tshark_count(path: Path) -> int:
    """How many packets tshark reads (frame.number: also for blocks without a time)."""
    out = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.number"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return len(out.split())
