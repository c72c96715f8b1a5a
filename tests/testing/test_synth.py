"""The synthetic captures are valid according to independent tools (tcpdump, tshark, dpkt)."""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import dpkt
import pytest

from tapetum.testing import (
    LINKTYPE_RAW,
    LINUX,
    MACOS,
    WINDOWS,
    CaptureBuilder,
    Host,
    Interface,
    Packet,
    dns_lookup,
    horizontal_scan,
    http_session,
    ntp_exchange,
    ping,
    scan_ports,
    ssh_session,
    tcp_failed,
    tcp_session,
    tls,
    tls_session,
    udp_exchange,
    vertical_scan,
    write_capture,
)
from tapetum.testing.mix import mixed_traffic
from tapetum.testing.tls import CertKind, Version
from tapetum.testing.wire import checksum, l2_header_length

TCPDUMP = shutil.which("tcpdump")
TSHARK = shutil.which("tshark")
needs_tcpdump = pytest.mark.skipif(TCPDUMP is None, reason="tcpdump not installed")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed")

START = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)
GATEWAY = Host("10.9.0.1", LINUX, latency_ms=0.1)
SERVER = Host("10.9.0.10", LINUX, latency_ms=0.2)
LINUX_PC = Host("10.9.0.21", LINUX, latency_ms=0.3)
WINDOWS_PC = Host("10.9.0.22", WINDOWS, latency_ms=0.4)
MAC = Host("10.9.0.23", MACOS, latency_ms=1.2)
ATTACKER = Host("10.9.0.66", LINUX, latency_ms=0.3)
WEB = Host("192.0.2.80", LINUX).behind(GATEWAY, hops=12, latency_ms=20)
WEB_IIS = Host("198.51.100.7", WINDOWS).behind(GATEWAY, hops=15, latency_ms=35)
CLIENT6 = Host("2001:db8:9::21", LINUX, latency_ms=0.3)
WEB6 = Host("2001:db8:ff::80", LINUX, mac=GATEWAY.mac, latency_ms=20)
VLAN_PC = Host("10.9.100.5", WINDOWS, latency_ms=0.3, vlan=(100,))
VLAN_DNS = Host("10.9.100.1", LINUX, latency_ms=0.1, vlan=(100,))
QINQ_PC = Host("10.9.200.5", LINUX, latency_ms=0.3, vlan=(300, 200))
QINQ_DNS = Host("10.9.200.1", LINUX, latency_ms=0.1, vlan=(300, 200))
VPN_PC = Host("10.9.50.5", LINUX, latency_ms=5.0, interface=1)

SNIS: dict[str, tuple[Version, CertKind]] = {
    "www.example.org": ("1.3", "ca"),
    "legacy.example.net": ("1.2", "ca"),
    "selfsigned.example.com": ("1.2", "self-signed"),
    "expired.example.com": ("1.2", "expired"),
    "v6.example.org": ("1.3", "ca"),
}
SCAN_PORTS = scan_ports(random.Random(5), 60)
OPEN_PORTS = {22, 80, 443}
SWEEP_LIVE = {"10.9.0.10": SERVER, "10.9.0.21": LINUX_PC, "10.9.0.22": WINDOWS_PC}


@dataclass
class Scenario:
    path: Path
    packets: int
    tcp_sessions: int
    sessions: int


def build(seed: int) -> tuple[CaptureBuilder, int]:
    """Every traffic type once or more; returns the builder and the TCP sessions it makes."""
    b = CaptureBuilder(seed=seed, start=START)
    tcp = 0
    b.add(
        0.0,
        dns_lookup,
        LINUX_PC,
        GATEWAY,
        "www.example.org",
        a=[WEB.ip],
        aaaa=[WEB6.ip],
        cname="edge.example.net",
    )
    b.add(0.1, dns_lookup, WINDOWS_PC, GATEWAY, "nosuchhost.example", nxdomain=True, qtypes=("A",))
    b.add(0.2, http_session, WINDOWS_PC, WEB_IIS, host="www.example.net", requests=3, post=True)
    b.add(0.3, http_session, MAC, WEB, host="www.example.org", requests=2)
    tcp += 2
    for index, (sni, (version, kind)) in enumerate(SNIS.items()):
        client, server = (CLIENT6, WEB6) if sni.startswith("v6") else (LINUX_PC, WEB)
        b.add(
            0.5 + index * 0.2,
            tls_session,
            client,
            server,
            sni=sni,
            version=version,
            cert_kind=kind,
            requests=2,
        )
        tcp += 1
    b.add(
        1.5,
        tls_session,
        WINDOWS_PC,
        WEB,
        sni="www.example.org",
        client_profile="legacy",
        download=400_000,
    )
    tcp += 1
    b.add(2.0, ssh_session, LINUX_PC, SERVER, duration=8.0)
    b.add(2.1, ssh_session, MAC, SERVER, duration=3.0, post_quantum=True)
    tcp += 2
    b.add(3.0, tcp_session, LINUX_PC, SERVER, 8000, [(b"hello\n", b"world\n")], ending="rst")
    b.add(3.0, tcp_session, VPN_PC, SERVER, 9000, [(b"ping\n", b"pong\n" * 500)])
    tcp += 2
    b.add(3.5, tcp_failed, WINDOWS_PC, SERVER, 3389, kind="unanswered")
    b.add(3.5, tcp_failed, WINDOWS_PC, SERVER, 3389, kind="refused")
    b.add(3.5, tcp_failed, WINDOWS_PC, SERVER, 3389, kind="syn-reset")
    tcp += 3
    b.add(4.0, ping, LINUX_PC, GATEWAY, count=3)
    b.add(4.0, ping, WINDOWS_PC, GATEWAY, count=2)
    b.add(4.0, ping, CLIENT6, WEB6, count=2)
    b.add(4.5, ntp_exchange, SERVER, GATEWAY, polls=2, interval=2.0)
    b.add(
        5.0, dns_lookup, VLAN_PC, VLAN_DNS, "printer.corp.example", a=["10.9.100.9"], qtypes=("A",)
    )
    b.add(5.0, dns_lookup, QINQ_PC, QINQ_DNS, "voip.corp.example", a=["10.9.200.9"], qtypes=("A",))
    b.add(
        5.5, udp_exchange, LINUX_PC, SERVER, 5004, bytes(range(256)) * 16, b"ok"
    )  # 4096 bytes: 3 fragments
    b.add(5.6, dns_lookup, LINUX_PC, GATEWAY, "big.example.org", qtypes=("TXT",), extra_txt=2000)
    b.add(6.0, vertical_scan, ATTACKER, SERVER, SCAN_PORTS, open_ports=OPEN_PORTS)
    tcp += len(SCAN_PORTS)
    targets = [f"10.9.0.{n}" for n in range(1, 31)]
    b.add(9.0, horizontal_scan, ATTACKER, targets, 22, live=SWEEP_LIVE, open_on={"10.9.0.10"})
    tcp += len(SWEEP_LIVE)
    return b, tcp


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    builder, tcp = build(seed=7)
    sessions = len(builder._sessions)
    path = tmp_path_factory.mktemp("synth") / "scenario.pcap"
    writer = builder.write(path)
    return Scenario(path, writer.packets, tcp, sessions)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=True)


def tshark_fields(
    path: Path, *fields: str, display_filter: str = "", options: tuple[str, ...] = ()
) -> list[list[str]]:
    assert TSHARK is not None
    args = [TSHARK, "-r", str(path), "-T", "fields", *options]
    if display_filter:
        args += ["-Y", display_filter]
    for field in fields:
        args += ["-e", field]
    return [line.split("\t") for line in run(*args).stdout.splitlines()]


def read_frames(path: Path) -> list[tuple[float, bytes]]:
    with open(path, "rb") as handle:
        return [(ts, bytes(buf)) for ts, buf in dpkt.pcap.Reader(handle)]


# --------------------------------------------------------------------------------------------
# tcpdump


def tcpdump_count(path: Path, *extra: str) -> int:
    assert TCPDUMP is not None
    result = run(TCPDUMP, "-nn", "-r", str(path), *extra)
    warnings = [
        line for line in result.stderr.splitlines() if not line.startswith("reading from file")
    ]
    assert warnings == [], warnings
    return len(result.stdout.splitlines())


@needs_tcpdump
def test_tcpdump_reads_every_packet_without_warnings(scenario: Scenario) -> None:
    assert tcpdump_count(scenario.path) == scenario.packets
    # -vv makes tcpdump verify IP/TCP/UDP checksums and print "bad cksum" / "incorrect" if wrong.
    verbose = run(TCPDUMP, "-nn", "-vv", "-r", str(scenario.path)).stdout
    assert "bad cksum" not in verbose
    assert "incorrect" not in verbose


@needs_tcpdump
@pytest.mark.parametrize("fmt", ["pcap-ns", "pcapng"])
def test_tcpdump_reads_nanosecond_and_pcapng(tmp_path: Path, fmt: str) -> None:
    builder, _ = build(seed=7)
    path = tmp_path / f"capture.{fmt}"
    packets = list(builder.packets())
    write_capture(path, packets, "pcapng" if fmt == "pcapng" else "pcap-ns")
    assert tcpdump_count(path) == len(packets)
    stamps = run(
        TCPDUMP, "-nn", "-tt", "--time-stamp-precision=nano", "-r", str(path)
    ).stdout.splitlines()
    first = packets[0].ts_ns
    assert stamps[0].split()[0] == f"{first // 1_000_000_000}.{first % 1_000_000_000:09d}"


# --------------------------------------------------------------------------------------------
# tshark


@needs_tshark
def test_tshark_counts_the_intended_tcp_sessions(scenario: Scenario) -> None:
    streams = {row[0] for row in tshark_fields(scenario.path, "tcp.stream", display_filter="tcp")}
    assert len(streams) == scenario.tcp_sessions
    conversations = run(TSHARK, "-r", str(scenario.path), "-qz", "conv,tcp").stdout
    assert conversations.count("<->") == scenario.tcp_sessions


@needs_tshark
def test_tshark_finds_no_tcp_anomalies_except_intended_retransmissions(scenario: Scenario) -> None:
    rows = tshark_fields(
        scenario.path,
        "tcp.dstport",
        "tcp.analysis.flags",
        display_filter="tcp.analysis.flags && !tcp.analysis.window_update",
    )
    # Only the unanswered SYN's two retransmissions (to 3389) are expected.
    assert [row[0] for row in rows] == ["3389", "3389"]
    checksums = tshark_fields(
        scenario.path,
        "frame.number",
        display_filter="ip.checksum.status == 0 || tcp.checksum.status == 0 "
        "|| udp.checksum.status == 0 || icmp.checksum.status == 0 "
        "|| icmpv6.checksum.status == 0 || _ws.malformed",
        options=(
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "tcp.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
        ),
    )
    assert checksums == []


@needs_tshark
def test_tshark_sees_real_tls_handshakes_with_our_snis_and_certificates(scenario: Scenario) -> None:
    rows = tshark_fields(
        scenario.path,
        "tls.handshake.extensions_server_name",
        "tls.handshake.extensions_alpn_str",
        display_filter="tls.handshake.type == 1",
    )
    assert {row[0] for row in rows} == set(SNIS)
    assert all("h2" in row[1] for row in rows)
    versions = tshark_fields(
        scenario.path,
        "tls.handshake.type",
        "tls.handshake.version",
        display_filter="tls.handshake.type == 2",
    )
    assert {row[1] for row in versions} == {"0x0303"}  # 1.3 ServerHello says 1.2 (legacy_version)
    # TLS 1.2 shows certificates: the self-signed one has a single certificate whose issuer is
    # its subject; the expired one ended before the capture date.
    by_stream: dict[str, str] = {}
    for stream, sni in tshark_fields(
        scenario.path,
        "tcp.stream",
        "tls.handshake.extensions_server_name",
        display_filter="tls.handshake.type == 1",
    ):
        by_stream[stream] = sni
    certificates = tshark_fields(
        scenario.path,
        "tcp.stream",
        "x509sat.uTF8String",
        "x509af.utcTime",
        display_filter="tls.handshake.type == 11",
    )
    seen = {by_stream[stream]: (names, times) for stream, names, times in certificates}
    assert seen["selfsigned.example.com"][0] == "selfsigned.example.com,selfsigned.example.com"
    not_after = seen["expired.example.com"][1].split(",")[1]
    assert not_after < START.strftime("%Y-%m-%d")
    assert "Tapetum Synthetic Root CA" in seen["legacy.example.net"][0]


@needs_tshark
def test_tshark_decodes_vlan_qinq_fragments_ipv6_and_scans(scenario: Scenario) -> None:
    vlan = tshark_fields(scenario.path, "vlan.id", display_filter="vlan && !ieee8021ad")
    assert len(vlan) == 2 and {row[0] for row in vlan} == {"100"}
    qinq = tshark_fields(scenario.path, "ieee8021ad.id", "vlan.id", display_filter="ieee8021ad")
    assert len(qinq) == 2 and {tuple(row) for row in qinq} == {("300", "200")}
    fragments = tshark_fields(
        scenario.path,
        "ip.id",
        "ip.frag_offset",
        display_filter="ip.flags.mf == 1 || ip.frag_offset > 0",
    )
    assert len(fragments) == 3 + 2  # the 4 KB datagram and the 2 KB TXT answer
    reassembled = tshark_fields(
        scenario.path, "udp.dstport", "dns.txt", display_filter="ip.fragment.count > 0"
    )
    assert len(reassembled) == 2
    assert "5004" in {row[0] for row in reassembled}
    assert any(row[1] for row in reassembled)  # the TXT answer decodes after reassembly
    assert len(tshark_fields(scenario.path, "frame.number", display_filter="ipv6 && tcp")) > 10
    assert (
        len(tshark_fields(scenario.path, "frame.number", display_filter="icmpv6.type == 129")) == 2
    )
    synacks = tshark_fields(
        scenario.path,
        "tcp.srcport",
        display_filter="ip.src == 10.9.0.10 && ip.dst == 10.9.0.66 && tcp.flags == 0x012",
    )
    assert {row[0] for row in synacks} == {str(port) for port in OPEN_PORTS & set(SCAN_PORTS)} | {
        "22"
    }
    arp = tshark_fields(scenario.path, "arp.opcode", display_filter="arp")
    assert collections.Counter(row[0] for row in arp) == {"1": 30, "2": len(SWEEP_LIVE)}
    ssh = tshark_fields(scenario.path, "ssh.protocol", display_filter="ssh.protocol")
    assert {row[0] for row in ssh} == {"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"}


@needs_tshark
def test_pcapng_with_ethernet_and_raw_ip_interfaces(tmp_path: Path) -> None:
    builder, _ = build(seed=7)
    packets = list(builder.packets())
    on_raw = sum(1 for p in packets if p.interface == 1)
    assert on_raw > 0
    path = tmp_path / "two-interfaces.pcapng"
    write_capture(path, packets, "pcapng", (Interface("eth0"), Interface("tun0", LINKTYPE_RAW)))
    rows = tshark_fields(
        path, "frame.interface_id", "frame.interface_name", "ip.src", "_ws.malformed"
    )
    assert len(rows) == len(packets)
    raw = [row for row in rows if row[0] == "1"]
    assert len(raw) == on_raw
    assert {row[1] for row in raw} == {"tun0"}
    assert all(row[2] and not row[3] for row in raw)  # bare IP decodes as IP


# --------------------------------------------------------------------------------------------
# Pure Python checks


def test_checksum_matches_dpkt() -> None:
    for data in (b"", b"\x00", b"\xff\xff", b"\x45\x00\x00\x1c" * 5, bytes(range(255))):
        assert checksum(data) == dpkt.in_cksum(data)


def test_frames_have_correct_checksums_and_are_time_ordered(scenario: Scenario) -> None:
    frames = read_frames(scenario.path)
    assert len(frames) == scenario.packets
    assert [ts for ts, _ in frames] == sorted(ts for ts, _ in frames)
    tcp_segments = 0
    for _, frame in frames:
        assert len(frame) >= 60
        packet = frame[l2_header_length(frame) :]
        if packet[0] >> 4 != 4 or not isinstance(dpkt.ethernet.Ethernet(frame).data, dpkt.ip.IP):
            continue
        # Verify on the raw bytes, independently of how dpkt would re-serialise them.
        assert checksum(packet[:20]) == 0
        if packet[9] == 6:
            segment = packet[20 : int.from_bytes(packet[2:4], "big")]
            pseudo = packet[12:20] + bytes((0, 6)) + len(segment).to_bytes(2, "big")
            assert checksum(pseudo + segment) == 0
            tcp_segments += 1
    assert tcp_segments > 500


def test_same_seed_same_bytes_except_tls_payload(tmp_path: Path) -> None:
    first, second, third = tmp_path / "a.pcap", tmp_path / "b.pcap", tmp_path / "c.pcap"
    build(seed=11)[0].write(first)
    build(seed=11)[0].write(second)
    # In one process TLS transcripts are cached, so the capture is byte-identical.
    assert first.read_bytes() == second.read_bytes()
    # A new process runs new handshakes: only their bytes differ.
    tls.clear_cache()
    build(seed=11)[0].write(third)
    a, b = read_frames(first), read_frames(third)
    assert len(a) == len(b)
    differing = 0
    for (ts_a, frame_a), (ts_b, frame_b) in zip(a, b, strict=True):
        assert ts_a == ts_b and len(frame_a) == len(frame_b)
        if frame_a == frame_b:
            continue
        differing += 1
        # Only TLS handshake bytes (OpenSSL randomness) may differ: the TCP payload on port 443
        # and therefore the TCP checksum. Everything before the payload but the checksum is equal.
        eth_a, eth_b = dpkt.ethernet.Ethernet(frame_a), dpkt.ethernet.Ethernet(frame_b)
        tcp_a, tcp_b = eth_a.data.data, eth_b.data.data
        assert isinstance(tcp_a, dpkt.tcp.TCP) and 443 in (tcp_a.sport, tcp_a.dport)
        assert tcp_a.data != tcp_b.data
        tcp_a.sum = tcp_b.sum = 0
        header_a = bytes(tcp_a)[: len(bytes(tcp_a)) - len(tcp_a.data)]
        header_b = bytes(tcp_b)[: len(bytes(tcp_b)) - len(tcp_b.data)]
        assert header_a == header_b
    assert differing > 0  # OpenSSL did run for real


def test_different_seed_different_capture(tmp_path: Path) -> None:
    a, b = build(seed=1)[0], build(seed=2)[0]
    assert [p.ts_ns for p in a.packets()] != [p.ts_ns for p in b.packets()]


def test_mixed_traffic_streams_in_time_order() -> None:
    stream = mixed_traffic(3, sessions_per_second=200.0, clients=300)
    packets = list(itertools.islice(stream, 20_000))
    stamps = [p.ts_ns for p in packets]
    assert stamps == sorted(stamps)
    assert stream.flows > 200
    sizes = collections.Counter(
        "small" if len(p.frame) <= 80 else "full" if len(p.frame) >= 1500 else "mid"
        for p in packets
    )
    assert sizes["small"] > 0.2 * len(packets) and sizes["full"] > 0.2 * len(packets)


def test_merger_rejects_out_of_order_sessions() -> None:
    builder = CaptureBuilder(seed=1)

    def backwards(ctx: object) -> list[Packet]:
        del ctx
        frame = bytes(60)
        return [Packet(builder.start_ns + 10, frame), Packet(builder.start_ns + 5, frame)]

    builder.add(0.0, backwards)
    with pytest.raises(RuntimeError, match="out of time order"):
        list(builder.packets())
