"""DNS parsing: names, compression, record data, pairing, TCP framing, caps."""

from __future__ import annotations

import struct
import time

import pytest

from tapetum.protocols._parser import MalformedError
from tapetum.protocols.analyzer import ProtocolAnalyzer
from tapetum.protocols.dns import MAX_PENDING, parse_message, rcode_name, read_name, rrtype_name
from tapetum.records import DnsEvent
from tests.protocols.helpers import dns_name, dns_query, dns_response, flow_ref, tcp, udp


def _run(
    *segments: object, port: int = 53, proto: str = "UDP"
) -> tuple[list[DnsEvent], ProtocolAnalyzer]:
    analyzer = ProtocolAnalyzer()
    flow = flow_ref(dest_port=port, proto=proto)
    for segment in segments:
        analyzer.feed(flow, segment)  # type: ignore[arg-type]
    analyzer.close()
    events = analyzer.drain()
    assert all(isinstance(e, DnsEvent) for e in events)
    return events, analyzer  # type: ignore[return-value]


def test_names_types_and_rcodes() -> None:
    assert rrtype_name(28) == "AAAA"
    assert rrtype_name(65) == "HTTPS"
    assert rrtype_name(10) == "NULL"
    assert rrtype_name(65000) == "TYPE65000"
    assert [rcode_name(c) for c in (0, 1, 2, 3, 4, 5)] == [
        "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
    ]  # fmt: skip
    assert rcode_name(15) == "RCODE15"


def test_record_data_formats() -> None:
    soa = dns_name("ns.example") + dns_name("host.example") + struct.pack("!IIIII", 1, 2, 3, 4, 5)
    answers = [
        (1, 10, bytes([192, 0, 2, 7])),
        (28, 20, bytes.fromhex("20010db8000000000000000000000001")),
        (5, 30, b"\xc0\x0c"),  # CNAME pointing at the question name
        (15, 40, b"\x00\x0a" + dns_name("mx.example")),
        (16, 50, b"\x05v=spf\x05 -all\x00"),
        (33, 60, struct.pack("!HHH", 1, 2, 443) + dns_name("srv.example")),
        (6, 70, soa),
        (99, 80, b"\x02ok"),
        (46, 90, b"\xde\xad\xbe\xef"),
    ]
    message = dns_response(1, "q.example", 255, answers)
    parsed = parse_message(message)
    assert parsed.error is None
    assert [(a.rrtype, a.ttl, a.rdata) for a in parsed.answers] == [
        ("A", 10, "192.0.2.7"),
        ("AAAA", 20, "2001:db8::1"),
        ("CNAME", 30, "q.example"),
        ("MX", 40, "10 mx.example"),
        ("TXT", 50, "v=spf -all"),
        ("SRV", 60, "1 2 443 srv.example"),
        ("SOA", 70, "ns.example host.example 1 2 3 4 5"),
        ("SPF", 80, "ok"),
        ("RRSIG", 90, "deadbeef"),
    ]
    assert all(a.rrname == "q.example" for a in parsed.answers)


def test_unprintable_label_bytes_are_escaped() -> None:
    name, end = read_name(b"\x03a\x00b\x03c\xffd\x00", 0)
    assert (name, end) == ("a\\x00b.c\\xffd", 9)


@pytest.mark.parametrize(
    "message",
    [
        # a pointer to itself
        struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c" + b"\x00\x01\x00\x01",
        # two pointers pointing at each other
        struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x01a\xc0\x0e\x01b\xc0\x0c\x00\x01\x00\x01",
        # a pointer forwards
        struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x20" + bytes(40),
        # a label past the end
        struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x3fabc",
        # reserved label type
        struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x80abc\x00\x00\x01\x00\x01",
        # too short for a header
        b"\x00\x01\x02",
    ],
)
def test_hostile_names_raise_malformed_quickly(message: bytes) -> None:
    started = time.perf_counter()
    with pytest.raises(MalformedError):
        parse_message(message)
    assert time.perf_counter() - started < 0.5


def test_name_longer_than_255_bytes_is_refused() -> None:
    long_name = ".".join(["a" * 63] * 5)
    with pytest.raises(MalformedError, match="255"):
        read_name(dns_name(long_name), 0)


def test_truncated_answer_section_keeps_what_was_read() -> None:
    message = dns_response(
        5, "a.example", 1, [(1, 1, b"\x01\x02\x03\x04"), (1, 1, b"\x05\x06\x07\x08")]
    )
    events, analyzer = _run(udp(message[:-3], from_orig=False))
    [event] = events
    assert [a.rdata for a in event.answers] == ["1.2.3.4"]
    assert analyzer.counters.malformed == {"dns": 1}


def test_query_and_answer_pairing_by_id_and_name() -> None:
    events, _ = _run(
        udp(dns_query(1, "A.Example"), ts_ns=100),
        udp(dns_query(2, "b.example"), ts_ns=200),
        udp(dns_response(1, "a.example", 1, [], rcode=3), from_orig=False, ts_ns=300),
    )
    assert [(e.id, e.type, e.rcode, e.ts_ns) for e in events] == [
        (1, "answer", "NXDOMAIN", 100),
        (2, "query", None, 200),
    ]
    assert events[0].flags == ("qr", "rd", "ra")
    assert events[1].flags == ("rd",)


def test_a_repeated_query_logs_the_first_as_unanswered() -> None:
    events, _ = _run(
        udp(dns_query(1, "a.example"), ts_ns=1), udp(dns_query(1, "a.example"), ts_ns=2)
    )
    assert [(e.type, e.ts_ns) for e in events] == [("query", 1), ("query", 2)]


def test_pending_queries_are_capped_per_flow() -> None:
    segments = [udp(dns_query(i, "a.example"), ts_ns=i) for i in range(MAX_PENDING + 5)]
    analyzer = ProtocolAnalyzer()
    flow = flow_ref(dest_port=53, proto="UDP")
    for segment in segments:
        analyzer.feed(flow, segment)
    early = analyzer.drain()
    assert [e.id for e in early] == [0, 1, 2, 3, 4]
    assert analyzer.stats["dns_pending_overflow"] == 5
    analyzer.close()
    assert len(analyzer.drain()) == MAX_PENDING


def test_mdns_answer_without_question_is_named_by_its_first_record() -> None:
    body = struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 0) + dns_name("printer.local")
    body += struct.pack("!HHIH", 1, 0x8001, 120, 4) + bytes([10, 0, 0, 9])
    events, _ = _run(udp(body), port=5353)
    [event] = events
    assert (event.rrname, event.rrtype, event.type) == ("printer.local", "A", "answer")
    assert event.answers[0].rdata == "10.0.0.9"


def test_dns_over_tcp_framing() -> None:
    q1, q2 = dns_query(1, "a.example"), dns_query(2, "b.example")
    r1 = dns_response(1, "a.example", 1, [(1, 5, b"\x01\x01\x01\x01")])
    r2 = dns_response(2, "b.example", 1, [])
    framed = [struct.pack("!H", len(m)) + m for m in (q1, q2, r1, r2)]
    client = framed[0] + framed[1]  # two messages in one segment
    server = framed[2] + framed[3]
    events, _ = _run(
        tcp(client, 1, ts_ns=10),
        tcp(server[:5], 1, from_orig=False, ts_ns=20),  # split inside the first response
        tcp(server[5:], 6, from_orig=False, ts_ns=30),
        proto="TCP",
    )
    assert [(e.id, e.type, e.ts_ns) for e in events] == [(1, "answer", 10), (2, "answer", 10)]
    assert events[0].rtt_ms == pytest.approx(10e-6)  # from the first byte of each message
    assert events[0].answers[0].rdata == "1.1.1.1"


def test_garbage_on_port_53_is_counted_not_raised() -> None:
    events, analyzer = _run(udp(b"\xff" * 40), udp(b"GET / HTTP/1.1\r\n\r\n"))
    assert events == []
    assert analyzer.counters.malformed["dns"] == 2
