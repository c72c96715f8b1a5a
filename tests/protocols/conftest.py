"""Fixtures: real captures turned into the (FlowRef, Segment) pairs the analyzer takes.

The project's own pcap reader and flow table are written in parallel, so these tests read
captures with dpkt: flows are keyed by their unordered 5-tuple, oriented by their first packet
(a SYN+ACK first means the sender is the responder), and numbered in order of appearance.
Helpers reach the tests as fixtures (a test module importing `conftest` would depend on which
conftest comes first on sys.path).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import dpkt
import pytest

from tapetum.protocols.analyzer import ProtocolAnalyzer
from tapetum.protocols.base import Segment
from tapetum.records import AppEvent, FlowRef
from tests.conftest import DATA, data_path

PCAPS = DATA / "nfstream" / "pcaps"

_PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"}


def _ip_text(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if len(raw) == 16 else socket.AF_INET, raw)


def _network_layer(datalink: int, buf: bytes) -> object | None:
    if datalink == dpkt.pcap.DLT_EN10MB:
        return dpkt.ethernet.Ethernet(buf).data
    if datalink == dpkt.pcap.DLT_LINUX_SLL:
        return dpkt.sll.SLL(buf).data
    if datalink in (dpkt.pcap.DLT_NULL, dpkt.pcap.DLT_LOOP):
        return dpkt.loopback.Loopback(buf).data
    if datalink == dpkt.pcap.DLT_PPP:
        if buf[:2] == b"\xff\x03":  # HDLC address and control
            buf = buf[2:]
        if buf[:2] == b"\x00\x21":
            return dpkt.ip.IP(buf[2:])
        if buf[:2] == b"\x00\x57":
            return dpkt.ip6.IP6(buf[2:])
        return None
    if datalink in (dpkt.pcap.DLT_RAW, 12, 14, 228, 229):
        if buf and buf[0] >> 4 == 4:
            return dpkt.ip.IP(buf)
        if buf and buf[0] >> 4 == 6:
            return dpkt.ip6.IP6(buf)
    return None


def iter_segments(path: Path) -> Iterator[tuple[FlowRef, Segment]]:
    """Every TCP and UDP packet of a capture as a (FlowRef, Segment) pair, in file order."""
    flows: dict[tuple[object, ...], tuple[FlowRef, tuple[bytes, int]]] = {}
    with path.open("rb") as handle:
        is_pcap = handle.read(4) in _PCAP_MAGICS
        handle.seek(0)
        reader = dpkt.pcap.Reader(handle) if is_pcap else dpkt.pcapng.Reader(handle)
        datalink = reader.datalink()
        offset = 24
        for ts, buf in reader:
            file_offset = offset if is_pcap else -1
            offset += 16 + len(buf)
            try:
                ip = _network_layer(datalink, buf)
            except (dpkt.UnpackError, IndexError, ValueError):
                continue
            if isinstance(ip, dpkt.ip.IP):
                if ip.mf or ip.offset:
                    continue  # fragments: not reassembled here
                proto = ip.p
            elif isinstance(ip, dpkt.ip6.IP6):
                proto = ip.nxt
            else:
                continue
            transport = ip.data
            if proto == 6 and isinstance(transport, dpkt.tcp.TCP):
                flags = transport.flags
                seq = transport.seq
            elif proto == 17 and isinstance(transport, dpkt.udp.UDP):
                flags = 0
                seq = 0
            else:
                continue
            src = (bytes(ip.src), transport.sport)
            dst = (bytes(ip.dst), transport.dport)
            key = (proto, *sorted((src, dst)))
            known = flows.get(key)
            if known is None:
                # SYN+ACK seen first: the sender answers, the other side originated.
                orig, resp = (dst, src) if flags & 0x12 == 0x12 else (src, dst)
                ref = FlowRef(
                    flow_id=len(flows) + 1,
                    community_id="",
                    src_ip=_ip_text(orig[0]),
                    src_port=orig[1],
                    dest_ip=_ip_text(resp[0]),
                    dest_port=resp[1],
                    proto="TCP" if proto == 6 else "UDP",
                )
                known = flows[key] = (ref, orig)
            ref, orig = known
            yield (
                ref,
                Segment(
                    flow_uid=ref.flow_id,
                    ts_ns=round(ts * 1_000_000_000),
                    from_orig=src == orig,
                    ip_proto=proto,
                    payload=bytes(transport.data),
                    tcp_seq=seq,
                    tcp_flags=flags,
                    file_offset=file_offset,
                ),
            )


def analyze(path: Path, **options: int) -> tuple[list[AppEvent], ProtocolAnalyzer]:
    """Run a whole capture through a fresh analyzer; return its events and the analyzer."""
    analyzer = ProtocolAnalyzer(**options)
    events: list[AppEvent] = []
    for flow, segment in iter_segments(path):
        analyzer.feed(flow, segment)
        events.extend(analyzer.drain())
    analyzer.close()
    events.extend(analyzer.drain())
    return events, analyzer


def tshark_fields(path: Path, display_filter: str, fields: list[str]) -> list[list[str]]:
    """Rows of `tshark -T fields` output: one list per packet, one string per field.

    Every occurrence of a field is kept, joined with "|" (JA3 strings contain commas).
    """
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed")
    command = [tshark, "-n", "-r", str(path), "-Y", display_filter, "-T", "fields"]
    command += ["-E", "occurrence=a", "-E", "aggregator=|"]
    for field in fields:
        command += ["-e", field]
    output = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300).stdout
    return [line.split("\t") for line in output.splitlines()]


def tshark_pdml(path: Path, display_filter: str) -> bytes:
    """`tshark -T pdml` output (for fields whose -T fields form loses structure)."""
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed")
    command = [tshark, "-n", "-r", str(path), "-Y", display_filter, "-T", "pdml"]
    return subprocess.run(command, check=True, capture_output=True, timeout=300).stdout


def read_zeek_log(path: Path) -> list[dict[str, str]]:
    """Rows of a Zeek TSV log as dicts keyed by field name."""
    fields: list[str] = []
    rows: list[dict[str, str]] = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            rows.append(dict(zip(fields, line.split("\t"), strict=True)))
    return rows


@pytest.fixture
def capture() -> Callable[..., Path]:
    """`capture("nfstream", "pcaps", "x.pcap")`: the path, or skip when it is missing."""
    return data_path


@pytest.fixture
def analyze_capture() -> Callable[..., tuple[list[AppEvent], ProtocolAnalyzer]]:
    return analyze


@pytest.fixture
def segments_of() -> Callable[[Path], Iterator[tuple[FlowRef, Segment]]]:
    return iter_segments


@pytest.fixture
def tshark() -> Callable[[Path, str, list[str]], list[list[str]]]:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    return tshark_fields


@pytest.fixture
def pdml() -> Callable[[Path, str], bytes]:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    return tshark_pdml


@pytest.fixture
def zeek_log() -> Callable[[Path], list[dict[str, str]]]:
    return read_zeek_log
