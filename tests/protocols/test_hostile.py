"""Hostile input: random bytes and mutated real payloads never make a parser raise or hang.

Every parser is reached through `ProtocolAnalyzer` (ports and first bytes choose it). Besides
"no exception", the analyzer's `parser_errors` statistic must stay at zero: it counts
exceptions that escaped a parser and were caught only by the analyzer's last-resort guard,
i.e. defects, as opposed to malformed input the parsers recognised themselves.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tapetum.protocols.analyzer import ProtocolAnalyzer
from tapetum.protocols.base import Segment
from tapetum.records import AppEvent, FlowRef, HttpEvent
from tests.protocols.helpers import flow_ref, tcp, udp

HOSTILE = settings(
    max_examples=150,
    deadline=2_000,  # milliseconds per example: "bounded time"
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: (ip protocol, server port, first bytes that select a parser by content)
TARGETS = [
    (17, 53, b""),
    (17, 5353, b""),
    (6, 53, b""),
    (6, 443, b"\x16\x03\x01"),
    (6, 80, b"GET "),
    (6, 80, b"HTTP/1.1 "),
    (6, 22, b"SSH-2.0-"),
    (17, 443, b"\xc3\x00\x00\x00\x01"),
    (17, 443, b"\xc0\xff\x00\x00\x1d"),
]


def _check(analyzer: ProtocolAnalyzer) -> list[AppEvent]:
    analyzer.close()
    events = analyzer.drain()
    assert analyzer.stats.get("parser_errors", 0) == 0, analyzer.warnings
    assert len(analyzer.warnings) <= 100
    return events


@HOSTILE
@given(
    target=st.sampled_from(TARGETS),
    chunks=st.lists(st.tuples(st.booleans(), st.binary(max_size=600)), min_size=1, max_size=12),
)
def test_random_bytes_never_raise(
    target: tuple[int, int, bytes], chunks: list[tuple[bool, bytes]]
) -> None:
    proto, port, magic = target
    analyzer = ProtocolAnalyzer(max_bytes_per_direction=4_096)
    flow = flow_ref(dest_port=port, proto="TCP" if proto == 6 else "UDP")
    seq = {True: 1, False: 1}
    for i, (from_orig, data) in enumerate(chunks):
        payload = (magic + data) if i == 0 else data
        if proto == 6:
            analyzer.feed(flow, tcp(payload, seq[from_orig], from_orig=from_orig, ts_ns=i))
            seq[from_orig] += len(payload)
        else:
            analyzer.feed(flow, udp(payload, from_orig=from_orig, ts_ns=i))
    _check(analyzer)


@HOSTILE
@given(
    seqs=st.lists(
        st.tuples(
            st.booleans(), st.integers(0, 2**32 - 1), st.integers(0, 0xFF), st.binary(max_size=64)
        ),
        max_size=40,
    )
)
def test_random_tcp_sequence_numbers_and_flags_never_raise(
    seqs: list[tuple[bool, int, int, bytes]],
) -> None:
    analyzer = ProtocolAnalyzer(max_bytes_per_direction=2_048)
    flow = flow_ref(dest_port=80)
    for i, (from_orig, seq, flags, data) in enumerate(seqs):
        payload = b"GET / HTTP/1.1\r\n" + data if i == 0 else data
        analyzer.feed(flow, tcp(payload, seq, from_orig=from_orig, flags=flags, ts_ns=i))
    _check(analyzer)


def _sample_payloads(
    segments_of: Callable[[Path], Iterator[tuple[FlowRef, Segment]]], path: Path, limit: int
) -> list[tuple[FlowRef, Segment]]:
    picked = []
    for flow, segment in segments_of(path):
        if segment.payload:
            picked.append((flow, segment))
            if len(picked) >= limit:
                break
    return picked


REAL = [
    ("zeek", "wikipedia", "wikipedia.pcap"),
    ("zeek", "ssh_basic", "ssh.pcap"),
    ("nfstream", "pcaps", "443-firefox.pcap"),
    ("nfstream", "pcaps", "tls_long_cert.pcap"),
    ("nfstream", "pcaps", "quic-29.pcap"),
    ("nfstream", "pcaps", "quic_frags_ch_in_multiple_packets.pcapng"),
    ("nfstream", "pcaps", "dns_long_domainname.pcap"),
]


@pytest.mark.parametrize("parts", REAL, ids=[p[-1] for p in REAL])
def test_mutated_real_payloads_never_raise(
    parts: tuple[str, ...],
    capture: Callable[..., Path],
    segments_of: Callable[[Path], Iterator[tuple[FlowRef, Segment]]],
) -> None:
    segments = _sample_payloads(segments_of, capture(*parts), 60)

    @HOSTILE
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        analyzer = ProtocolAnalyzer(max_bytes_per_direction=8_192)
        for flow, segment in segments:
            payload = bytearray(segment.payload)
            action = data.draw(st.sampled_from(["keep", "flip", "cut", "insert", "zero"]))
            if payload and action == "flip":
                for _ in range(data.draw(st.integers(1, 8))):
                    where = data.draw(st.integers(0, len(payload) - 1))
                    payload[where] = data.draw(st.integers(0, 255))
            elif action == "cut":
                payload = payload[: data.draw(st.integers(0, len(payload)))]
            elif action == "insert":
                where = data.draw(st.integers(0, len(payload)))
                payload[where:where] = data.draw(st.binary(min_size=1, max_size=32))
            elif payload and action == "zero":
                start = data.draw(st.integers(0, len(payload) - 1))
                payload[start : start + 16] = bytes(len(payload[start : start + 16]))
            mutated = Segment(
                flow_uid=segment.flow_uid,
                ts_ns=segment.ts_ns,
                from_orig=segment.from_orig,
                ip_proto=segment.ip_proto,
                payload=bytes(payload),
                tcp_seq=segment.tcp_seq,
                tcp_flags=segment.tcp_flags,
                file_offset=segment.file_offset,
            )
            analyzer.feed(flow, mutated)
        _check(analyzer)

    run()


def _pointer_chain_message(links: int, answers: int) -> bytes:
    """A response whose first answer's rdata is a chain of `links` pointers, each to the one
    before it; the names of the `answers` answers after it point at the chain's end, so each
    walks the whole chain (pointers may only point backwards, hence answers, not questions).
    """
    chain_start = 12 + 1 + 10  # after answer 1's root name and fixed fields
    rdata = bytearray()
    for i in range(links):
        target = 12 if i == 0 else chain_start + 2 * (i - 1)
        rdata += bytes([0xC0 | target >> 8, target & 0xFF])
    last = chain_start + 2 * (links - 1)
    body = bytearray(struct.pack("!HHHHHH", 1, 0x8000, 0, 1 + answers, 0, 0))
    body += b"\x00" + struct.pack("!HHIH", 10, 1, 0, len(rdata)) + rdata
    for _ in range(answers):
        body += bytes([0xC0 | last >> 8, last & 0xFF]) + struct.pack("!HHIH", 1, 1, 0, 4) + bytes(4)
    return bytes(body)


def test_compression_pointer_chains_cost_bounded_time() -> None:
    message = _pointer_chain_message(links=8_000, answers=60)
    analyzer = ProtocolAnalyzer()
    started = time.perf_counter()
    for i in range(20):
        analyzer.feed(flow_ref(dest_port=53, proto="UDP"), udp(message, ts_ns=i))
    assert time.perf_counter() - started < 1.0
    events = _check(analyzer)
    assert analyzer.counters.malformed == {"dns": 20}  # the step budget cut each one short
    assert len(events) == 20


def test_header_block_a_byte_at_a_time_costs_linear_time() -> None:
    analyzer = ProtocolAnalyzer()
    flow = flow_ref(dest_port=80)
    head = b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 15_000 + b"\r\n\r\n"
    started = time.perf_counter()
    for i in range(len(head)):
        analyzer.feed(flow, tcp(head[i : i + 1], 1 + i))
    assert time.perf_counter() - started < 2.0
    [event] = _check(analyzer)
    assert isinstance(event, HttpEvent) and event.url == "/"


def test_certificate_chain_in_one_byte_records_costs_linear_time() -> None:
    message = b"\x0b" + (60_000).to_bytes(3, "big") + (59_997).to_bytes(3, "big")
    message += (59_994).to_bytes(3, "big") + bytes(59_994)
    stream = b"".join(b"\x16\x03\x03\x00\x01" + message[i : i + 1] for i in range(len(message)))
    analyzer = ProtocolAnalyzer()
    flow = flow_ref()
    analyzer.feed(flow, tcp(b"\x16\x03\x01\x00\x04\x01\x00\x00\x00", 1))  # empty ClientHello
    started = time.perf_counter()
    for i in range(0, len(stream), 1_460):
        analyzer.feed(flow, tcp(stream[i : i + 1_460], 1 + i, from_orig=False))
    assert time.perf_counter() - started < 2.0
    _check(analyzer)
