"""The reader on one real capture in many file formats and link layers, checked against peers.

Variants of Zeek's wikipedia.pcap come from real tools (editcap, tcpdump, gzip) and from
hand-written struct code (big-endian pcap, Linux cooked SLL/SLL2, raw IP, BSD null/loopback,
802.1Q/QinQ tags, IPv6 with extension headers, pcapng with mixed interfaces and SPBs). For each,
the flows Tapetum finds must equal those of the original: same 5-tuples, packet counts per
direction, VLAN ids where tagged, and start/end times to the ns (the source is µs, so every
variant that carries time carries it exactly). Packet counts and per-packet times are also
checked against tshark's frame.time_epoch.
"""

from __future__ import annotations

import gzip
import ipaddress
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.sources.helpers import (
    DATA,
    LT_ETHERNET,
    LT_LOOP,
    LT_NULL,
    LT_RAW,
    LT_SLL,
    LT_SLL2,
    FlowRow,
    Record,
    epb,
    flow_rows,
    idb,
    ip_payload,
    ipv4_to_ipv6_with_extensions,
    null_frame,
    packet_times,
    read_pcap,
    shb,
    sll,
    sll2,
    spb,
    ts_after_resolution,
    tshark_count,
    tshark_times,
    vlan_tagged,
    write_pcap,
)

ORIGINAL = DATA / "zeek" / "wikipedia" / "wikipedia.pcap"
HAVE_TOOLS = all(shutil.which(t) for t in ("editcap", "tcpdump", "tshark"))


@dataclass
class Variant:
    path: Path
    #: Transform of the original flow rows into what this variant must give.
    expect: Callable[[list[FlowRow]], list[FlowRow]]
    #: Timestamps carried (False for SPB-only pcapng, which has none).
    has_time: bool = True


def _same(rows: list[FlowRow]) -> list[FlowRow]:
    return rows


def _with_vlan(vlan: int) -> Callable[[list[FlowRow]], list[FlowRow]]:
    return lambda rows: sorted((*r[:5], vlan, *r[6:]) for r in rows)


def _shift(ns: int) -> Callable[[list[FlowRow]], list[FlowRow]]:
    return lambda rows: sorted((*r[:8], r[8] + ns, r[9] + ns) for r in rows)


def _no_time(rows: list[FlowRow]) -> list[FlowRow]:
    return sorted((*r[:8], 0, 0) for r in rows)


def _v4_to_v6(rows: list[FlowRow]) -> list[FlowRow]:
    def addr(a: str) -> str:
        v4 = int(ipaddress.IPv4Address(a))
        return str(ipaddress.IPv6Address((0x20010DB8 << 96) | v4))

    return sorted(
        (addr(r[0]), r[1], addr(r[2]), *r[3:]) for r in rows if "." in r[0] and r[4] in (6, 17)
    )


def _build(tmp: Path) -> dict[str, Variant]:
    linktype, records = read_pcap(ORIGINAL)
    assert linktype == LT_ETHERNET
    v: dict[str, Variant] = {}

    def tool(name: str, *cmd: str) -> Path:
        out = tmp / name
        subprocess.run([*cmd, str(out)], check=True, capture_output=True)
        return out

    v["editcap-nsecpcap"] = Variant(
        tool("ns.pcap", "editcap", "-F", "nsecpcap", str(ORIGINAL)), _same
    )
    v["editcap-pcapng"] = Variant(
        tool("ng.pcapng", "editcap", "-F", "pcapng", str(ORIGINAL)), _same
    )
    v["tcpdump-rewrite"] = Variant(tool("td.pcap", "tcpdump", "-r", str(ORIGINAL), "-w"), _same)
    gz = tmp / "w.pcap.gz"
    gz.write_bytes(gzip.compress(ORIGINAL.read_bytes()))
    v["gzip"] = Variant(gz, _same)
    v["big-endian"] = Variant(
        write_pcap(tmp / "be.pcap", LT_ETHERNET, records, big_endian=True), _same
    )
    shifted = [Record(r.ts_ns + 789, r.wirelen, r.data) for r in records]
    v["big-endian-ns+789"] = Variant(
        write_pcap(tmp / "bens.pcap", LT_ETHERNET, shifted, nanos=True, big_endian=True),
        _shift(789),
    )

    def reframed(fn: Callable[[bytes], bytes | None]) -> list[Record]:
        out = []
        for r in records:
            data = fn(r.data)
            if data is not None:
                out.append(Record(r.ts_ns, len(data), data))
        return out

    v["sll"] = Variant(write_pcap(tmp / "sll.pcap", LT_SLL, reframed(sll)), _same)
    v["sll2"] = Variant(write_pcap(tmp / "sll2.pcap", LT_SLL2, reframed(sll2)), _same)
    v["raw-ip"] = Variant(write_pcap(tmp / "raw.pcap", LT_RAW, reframed(ip_payload)), _same)
    v["bsd-null"] = Variant(
        write_pcap(
            tmp / "null.pcap",
            LT_NULL,
            reframed(lambda f: (ip := ip_payload(f)) and null_frame(ip, network_order=False)),
        ),
        _same,
    )
    v["bsd-loop"] = Variant(
        write_pcap(
            tmp / "loop.pcap",
            LT_LOOP,
            reframed(lambda f: (ip := ip_payload(f)) and null_frame(ip, network_order=True)),
        ),
        _same,
    )
    v["802.1q"] = Variant(
        write_pcap(tmp / "q.pcap", LT_ETHERNET, reframed(lambda f: vlan_tagged(f, [(0x8100, 42)]))),
        _with_vlan(42 << 12),
    )
    v["qinq"] = Variant(
        write_pcap(
            tmp / "qinq.pcap",
            LT_ETHERNET,
            reframed(lambda f: vlan_tagged(f, [(0x88A8, 100), (0x8100, 42)])),
        ),
        _with_vlan((100 << 12) | 42),
    )
    v["ipv6-extension-headers"] = Variant(
        write_pcap(
            tmp / "v6ext.pcap",
            LT_RAW,
            reframed(lambda f: (ip := ip_payload(f)) and ipv4_to_ipv6_with_extensions(ip)),
        ),
        _v4_to_v6,
    )
    # pcapng: Ethernet interface in µs, raw-IP interface in ns; IP packets alternate between them.
    blocks = [shb(), idb(LT_ETHERNET, 6), idb(LT_RAW, 9)]
    for k, r in enumerate(records):
        ip = ip_payload(r.data)
        if ip is not None and k % 2:
            blocks.append(epb(1, r.ts_ns, ip, len(ip), 9))
        else:
            blocks.append(epb(0, r.ts_ns, r.data, r.wirelen, 6))
    mixed = tmp / "mixed.pcapng"
    mixed.write_bytes(b"".join(blocks))
    v["pcapng-two-interfaces"] = Variant(mixed, _same)
    spbs = tmp / "spb.pcapng"
    spbs.write_bytes(
        b"".join([shb(), idb(LT_ETHERNET)] + [spb(r.data, r.wirelen) for r in records])
    )
    v["pcapng-spb"] = Variant(spbs, _no_time, has_time=False)
    return v


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Variant]:
    if not ORIGINAL.exists():
        pytest.skip(f"Zeek sample capture not available: {ORIGINAL.resolve()}")
    if not HAVE_TOOLS:
        pytest.skip("editcap, tcpdump and tshark are needed as peers")
    return _build(tmp_path_factory.mktemp("formats"))


@pytest.fixture(scope="module")
def original_flows() -> list[FlowRow]:
    if not ORIGINAL.exists():
        pytest.skip(f"Zeek sample capture not available: {ORIGINAL.resolve()}")
    rows = flow_rows(ORIGINAL)
    assert len(rows) == 34  # as in Zeek's conn.log for this capture
    return rows


NAMES = [
    "editcap-nsecpcap", "editcap-pcapng", "tcpdump-rewrite", "gzip", "big-endian",
    "big-endian-ns+789", "sll", "sll2", "raw-ip", "bsd-null", "bsd-loop", "802.1q", "qinq",
    "ipv6-extension-headers", "pcapng-two-interfaces", "pcapng-spb",
]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_variant_gives_the_original_flows(
    name: str, variants: dict[str, Variant], original_flows: list[FlowRow]
) -> None:
    v = variants[name]
    got = flow_rows(v.path)
    want = v.expect(original_flows)
    assert got == want


@pytest.mark.parametrize("name", NAMES)
def test_packet_count_and_times_match_tshark(name: str, variants: dict[str, Variant]) -> None:
    v = variants[name]
    ours = packet_times(v.path)
    assert len(ours) == tshark_count(v.path)
    if v.has_time:
        assert ours == tshark_times(v.path)
    else:
        assert set(ours) == {0}  # SPBs carry no time and none came before them


def test_binary_tsresol_matches_tshark(tmp_path: Path) -> None:
    """if_tsresol 2^-20 (not a whole number of ns per unit): the same rounding as tshark."""
    if not ORIGINAL.exists() or not HAVE_TOOLS:
        pytest.skip("sample capture or tshark not available")
    _, records = read_pcap(ORIGINAL)
    path = tmp_path / "bin.pcapng"
    path.write_bytes(
        b"".join(
            [shb(), idb(LT_ETHERNET, 0x94)]
            + [epb(0, r.ts_ns, r.data, r.wirelen, 0x94) for r in records]
        )
    )
    ours = packet_times(path)
    assert ours == [ts_after_resolution(r.ts_ns, 0x94) for r in records]
    # tshark prints ns: it may round where we truncate; never more than 1 ns apart.
    assert all(abs(a - b) <= 1 for a, b in zip(ours, tshark_times(path), strict=True))
