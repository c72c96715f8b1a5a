"""Flow meter behaviour on hand-built packets: expiry, orientation, keys, growth, eviction,
fragments, determinism, memory."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from tapetum.flows import table as T
from tapetum.flows.key import addr_bytes, addr_parse, community_id
from tapetum.flows.meter import FlowBatch, FlowMeter, MeterConfig
from tapetum.sources.pcap import CaptureReader
from tests.sources.helpers import LT_ETHERNET, Record, write_pcap

NS = 1_000_000_000
SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10
MAC = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02"


def ipv4(src: str, dst: str, proto: int, l4: bytes, *, ident: int = 1, frag: int = 0) -> bytes:
    hdr = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident, frag, 64, proto, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )  # fmt: skip
    return MAC + b"\x08\x00" + hdr + l4


def tcp(src: str, sport: int, dst: str, dport: int, flags: int, payload: bytes = b"") -> bytes:
    seg = struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 8192, 0, 0) + payload
    return ipv4(src, dst, 6, seg)


def udp(src: str, sport: int, dst: str, dport: int, payload: bytes = b"x") -> bytes:
    return ipv4(src, dst, 17, struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload)


def icmp(src: str, dst: str, typ: int, code: int = 0) -> bytes:
    return ipv4(src, dst, 1, struct.pack(">BBHHH", typ, code, 0, 7, 1) + b"ping")


def run(
    tmp_path: Path,
    packets: Sequence[tuple[float, bytes]],
    config: MeterConfig | None = None,
    *,
    batch_packets: int = 65_536,
) -> tuple[FlowMeter, list[FlowBatch]]:
    path = write_pcap(
        tmp_path / "t.pcap",
        LT_ETHERNET,
        [Record(round(t * NS), len(f), f) for t, f in packets],
    )
    meter = FlowMeter(config or MeterConfig())
    out: list[FlowBatch] = []
    with CaptureReader(path, batch_packets=batch_packets) as reader:
        for batch in reader:
            out += meter.process(batch)[1]
    out += meter.flush()
    return meter, [fb for fb in out if len(fb)]


def rows(batches: list[FlowBatch]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for fb in batches:
        for k in range(len(fb)):
            row: dict[str, object] = {name: int(v[k]) for name, v in fb.num.items()}
            row.update(src=fb.src_ip[k], dst=fb.dest_ip[k], history=fb.history[k],
                       state=fb.conn_state[k], cid=fb.community_id[k],
                       reason=fb.reason_names()[k])  # fmt: skip
            out.append(row)
    return sorted(out, key=lambda r: (r["start_ns"], r["flow_id"]))  # type: ignore[arg-type,return-value]


def total_packets(flows: list[dict[str, object]]) -> int:
    return sum(int(f["pkts_toserver"]) + int(f["pkts_toclient"]) for f in flows)  # type: ignore[call-overload]


# -- expiry ----------------------------------------------------------------------------------------


def test_idle_timeout_splits_a_silent_flow(tmp_path: Path) -> None:
    a, b = "10.0.0.1", "10.0.0.2"
    pk = [(0.0, udp(a, 5000, b, 53)), (1.0, udp(b, 53, a, 5000)),
          (1.0 + 61, udp(a, 5000, b, 53)), (1.0 + 62, udp(b, 53, a, 5000))]  # fmt: skip
    _, fbs = run(tmp_path, pk)  # UDP idle: 60 s
    flows = rows(fbs)
    assert len(flows) == 2
    assert [(f["pkts_toserver"], f["pkts_toclient"]) for f in flows] == [(1, 1), (1, 1)]
    assert flows[0]["reason"] == "timeout"
    # Within the timeout it stays one flow.
    _, fbs = run(tmp_path, [(0.0, pk[0][1]), (59.0, pk[1][1]), (118.0, pk[2][1])])
    assert len(rows(fbs)) == 1


def test_active_timeout_splits_a_long_flow(tmp_path: Path) -> None:
    a, b = "10.0.0.1", "10.0.0.2"
    pk = [(float(t), udp(a, 5000, b, 9999)) for t in range(25)]
    _, fbs = run(tmp_path, pk, MeterConfig(active_s=10.0))
    flows = rows(fbs)
    assert len(flows) == 3
    assert total_packets(flows) == 25
    assert all(int(f["end_ns"]) - int(f["start_ns"]) <= 10 * NS for f in flows)  # type: ignore[call-overload]
    assert [f["reason"] for f in flows[:2]] == ["active_timeout", "active_timeout"]


def test_closed_connection_then_new_syn_is_two_flows(tmp_path: Path) -> None:
    c, s = "10.0.0.1", "10.0.0.2"
    conn = [
        tcp(c, 40000, s, 80, SYN), tcp(s, 80, c, 40000, SYN | ACK), tcp(c, 40000, s, 80, ACK),
        tcp(c, 40000, s, 80, PSH | ACK, b"GET /"), tcp(s, 80, c, 40000, PSH | ACK, b"200"),
        tcp(c, 40000, s, 80, FIN | ACK), tcp(s, 80, c, 40000, FIN | ACK),
        tcp(c, 40000, s, 80, ACK),
    ]  # fmt: skip
    pk = [(0.1 * k, f) for k, f in enumerate(conn)] + [
        (2.0 + 0.1 * k, f) for k, f in enumerate(conn)
    ]
    _, fbs = run(tmp_path, pk)
    flows = rows(fbs)
    assert len(flows) == 2
    assert [f["history"] for f in flows] == ["ShADdFf", "ShADdFf"]
    assert [f["state"] for f in flows] == ["SF", "SF"]
    assert flows[0]["reason"] == "tcp_reuse"
    # NFStream semantics: FIN/RST do not end flows, so it is one flow.
    _, fbs = run(tmp_path, pk, MeterConfig(tcp_close_ends_flow=False))
    assert len(rows(fbs)) == 1


def test_syn_ack_first_flips_the_originator(tmp_path: Path) -> None:
    c, s = "10.0.0.1", "10.0.0.2"
    pk = [(0.0, tcp(s, 443, c, 51000, SYN | ACK)), (0.1, tcp(c, 51000, s, 443, ACK)),
          (0.2, tcp(c, 51000, s, 443, PSH | ACK, b"hello"))]  # fmt: skip
    _, fbs = run(tmp_path, pk)
    (f,) = rows(fbs)
    assert f["history"] == "^hAD"
    assert (f["src"], f["src_port"], f["dst"], f["dest_port"]) == (c, 51000, s, 443)
    assert (f["pkts_toserver"], f["pkts_toclient"]) == (2, 1)


def test_icmp_echo_request_and_reply_are_one_flow(tmp_path: Path) -> None:
    a, b = "192.168.0.89", "192.168.0.1"
    pk = [(0.0, icmp(a, b, 8)), (0.01, icmp(b, a, 0)), (1.0, icmp(a, b, 8)), (1.01, icmp(b, a, 0))]
    _, fbs = run(tmp_path, pk)
    (f,) = rows(fbs)
    assert (f["src"], f["dst"], f["proto"]) == (a, b, 1)
    assert (f["pkts_toserver"], f["pkts_toclient"]) == (2, 2)
    # The Community ID spec's own vector for this pair (baseline_deflt.json).
    assert f["cid"] == "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="
    # An unrelated ICMP type between the same hosts is its own flow, unless keyed by hosts only.
    pk.append((2.0, icmp(b, a, 3, 1)))
    assert len(rows(run(tmp_path, pk)[1])) == 2
    assert len(rows(run(tmp_path, pk, MeterConfig(icmp_type_in_key=False))[1])) == 1


# -- community_id ----------------------------------------------------------------------------------


BASELINE = json.loads(Path(__file__).with_name("community_id_baseline.json").read_text())


@pytest.mark.parametrize("vector", BASELINE["vectors"], ids=lambda v: f"{v['proto']}-{v['saddr']}")
def test_community_id_matches_the_spec_baseline(vector: dict[str, object]) -> None:
    src = addr_bytes(*addr_parse(str(vector["saddr"])))
    dst = addr_bytes(*addr_parse(str(vector["daddr"])))
    proto = int(vector["proto"])  # type: ignore[call-overload]
    sport = int(vector["sport"] or 0)  # type: ignore[call-overload]
    dport = int(vector["dport"] or 0)  # type: ignore[call-overload]
    assert community_id(src, dst, proto, sport, dport) == vector["communityid"]
    assert community_id(src, dst, proto, sport, dport, seed=1) == vector["communityid_seed1"]


def test_meter_community_id_for_a_tcp_flow(tmp_path: Path) -> None:
    c, s = "128.232.110.120", "66.35.250.204"  # baseline vector, both directions
    pk = [(0.0, tcp(c, 34855, s, 80, SYN)), (0.1, tcp(s, 80, c, 34855, SYN | ACK))]
    (f,) = rows(run(tmp_path, pk)[1])
    assert f["cid"] == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
    (f,) = rows(run(tmp_path, pk, MeterConfig(seed=1))[1])
    assert f["cid"] == "1:3V71V58M3Ksw/yuFALMcW0LAHvc="


# -- capacity ------------------------------------------------------------------------------------


def _many_flows(n: int, t0: float = 0.0, step: float = 1e-4) -> list[tuple[float, bytes]]:
    return [
        (
            t0 + k * step,
            udp(f"10.{k >> 16 & 255}.{k >> 8 & 255}.{k & 255}", 1000 + k % 50000, "10.255.0.1", 53),
        )
        for k in range(n)
    ]


def test_table_growth_loses_nothing(tmp_path: Path) -> None:
    pk = _many_flows(5000)
    pk += [(1.0 + t, f) for t, f in _many_flows(5000)]  # a second packet on every flow
    meter, fbs = run(tmp_path, pk, MeterConfig(initial_flows=64), batch_packets=1024)
    flows = rows(fbs)
    assert len(flows) == 5000 and total_packets(flows) == 10_000
    assert all(f["pkts_toserver"] == 2 for f in flows)
    assert meter.counters.grows > 0 and meter.counters.evicted == 0
    assert meter.counters.peak_active_flows == 5000


def test_max_flows_evicts_but_accounts_every_packet(tmp_path: Path) -> None:
    pk = _many_flows(3000)
    meter, fbs = run(tmp_path, pk, MeterConfig(initial_flows=64, max_flows=256), batch_packets=512)
    flows = rows(fbs)
    assert total_packets(flows) == 3000
    assert len(flows) == 3000  # distinct 5-tuples: eviction never merges or drops
    assert meter.counters.evicted > 0
    assert sum(f["reason"] == "evicted" for f in flows) == meter.counters.evicted
    assert meter.cap <= 256


# -- fragments -------------------------------------------------------------------------------------


def test_ipv4_fragments_join_their_flow(tmp_path: Path) -> None:
    a, b = "10.0.0.1", "10.0.0.2"
    payload = bytes(range(256)) * 8
    seg = struct.pack(">HHHH", 5353, 53, 8 + len(payload), 0) + payload
    first, rest = seg[:1480], seg[1480:]
    pk = [
        (0.0, ipv4(a, b, 17, first, ident=77, frag=0x2000)),  # MF, offset 0
        (0.001, ipv4(a, b, 17, rest, ident=77, frag=1480 // 8)),  # offset 185, last
        (0.1, udp(b, 53, a, 5353)),
    ]
    meter, fbs = run(tmp_path, pk)
    (f,) = rows(fbs)
    assert (f["src_port"], f["dest_port"]) == (5353, 53)
    assert (f["pkts_toserver"], f["pkts_toclient"]) == (2, 1)
    assert f["ip_bytes_toserver"] == 2 * 20 + len(seg)
    assert meter.counters.fragments_unmatched == 0
    # NFStream semantics: later fragments are not metered (and counted as skipped).
    meter, fbs = run(tmp_path, pk, MeterConfig(meter_later_fragments=False))
    (f,) = rows(fbs)
    assert (f["pkts_toserver"], f["pkts_toclient"]) == (1, 1)
    assert meter.counters.skipped_packets == 1


# -- determinism and memory ------------------------------------------------------------------------


def test_same_input_twice_gives_identical_flows(tmp_path: Path) -> None:
    pk = [*_many_flows(2000), (5.0, icmp("10.0.0.1", "10.0.0.2", 8))]
    one = rows(run(tmp_path, pk, MeterConfig(initial_flows=64), batch_packets=300)[1])
    two = rows(run(tmp_path, pk, MeterConfig(initial_flows=64), batch_packets=300)[1])
    assert one == two
    assert len({f["flow_id"] for f in one}) == len(one)
    # Batch boundaries do not change the result either.
    three = rows(run(tmp_path, pk, MeterConfig(initial_flows=64), batch_packets=65_536)[1])
    assert three == one


def test_pool_does_not_grow_when_flows_expire_continuously(tmp_path: Path) -> None:
    # 200k short flows, one at a time, 10 ms apart: with a 1 s UDP idle timeout at most ~100 are
    # alive at once, so the pool must stay at its small initial size.
    n = 200_000
    a = np.arange(n)
    # Vectorised frame building: same UDP packet, only the source address and port differ.
    base = bytearray(udp("10.0.0.0", 0, "10.255.0.1", 53))
    frames = np.frombuffer(bytes(base) * n, dtype=np.uint8).reshape(n, len(base)).copy()
    frames[:, 14 + 12 + 1] = (a >> 16) & 255
    frames[:, 14 + 12 + 2] = (a >> 8) & 255
    frames[:, 14 + 12 + 3] = a & 255
    frames[:, 14 + 20] = ((1000 + a % 60000) >> 8) & 255
    frames[:, 14 + 20 + 1] = (1000 + a % 60000) & 255
    recs = [Record(k * 10_000_000, frames.shape[1], frames[k].tobytes()) for k in range(n)]
    path = write_pcap(tmp_path / "many.pcap", LT_ETHERNET, recs)
    meter = FlowMeter(MeterConfig(udp_idle_s=1.0, initial_flows=256))
    total = 0
    with CaptureReader(path) as reader:
        for batch in reader:
            total += sum(len(fb) for fb in meter.process(batch)[1])
    total += sum(len(fb) for fb in meter.flush())
    assert total == n
    assert meter.cap == 256 and meter.counters.grows == 0
    assert meter.counters.peak_active_flows < 256
    assert int(meter.meta[T.M_HIGH]) <= 256
