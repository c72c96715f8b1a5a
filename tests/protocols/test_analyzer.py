"""The dispatcher: parser choice, TCP reassembly, bounds, flushing, warnings."""

from __future__ import annotations

from tapetum.protocols.analyzer import ProtocolAnalyzer
from tapetum.records import DnsEvent, HttpEvent, SshEvent, TlsEvent
from tests.protocols.helpers import (
    ACK,
    SYN,
    client_hello,
    dns_query,
    dns_response,
    flow_ref,
    tcp,
    tls_records,
    udp,
)

HELLO = tls_records(
    client_hello(ciphers=[0x1301, 0xC02F], extensions=[0, 16], sni="a.example", alpns=[b"h2"])
)
REQUEST = b"GET /x HTTP/1.1\r\nHost: a.example\r\n\r\n"


def _events(analyzer: ProtocolAnalyzer) -> list[object]:
    analyzer.close()
    return list(analyzer.drain())


def test_tls_hello_reassembled_from_out_of_order_and_repeated_segments() -> None:
    analyzer = ProtocolAnalyzer()
    flow = flow_ref()
    isn = 5_000
    a, b, c = HELLO[:7], HELLO[7:40], HELLO[40:]
    analyzer.feed(flow, tcp(b"", isn, flags=SYN, ts_ns=10))
    analyzer.feed(flow, tcp(c, isn + 1 + 40, ts_ns=30))
    analyzer.feed(flow, tcp(a, isn + 1, ts_ns=20))
    analyzer.feed(flow, tcp(a + b[:5], isn + 1, ts_ns=40))  # retransmission, partly new
    analyzer.feed(flow, tcp(b, isn + 1 + 7, ts_ns=50))
    [event] = _events(analyzer)
    assert isinstance(event, TlsEvent)
    assert event.sni == "a.example"
    assert event.client_alpns == ("h2",)
    assert event.ts_ns == 20  # the first packet of the handshake
    assert analyzer.stats == {}


def test_sequence_numbers_wrap_around() -> None:
    analyzer = ProtocolAnalyzer()
    flow = flow_ref()
    isn = 0xFFFFFFF0
    analyzer.feed(flow, tcp(b"", isn, flags=SYN))
    analyzer.feed(flow, tcp(HELLO[:30], isn + 1))
    analyzer.feed(flow, tcp(HELLO[30:], isn + 31))  # wraps past 2**32
    [event] = _events(analyzer)
    assert isinstance(event, TlsEvent) and event.sni == "a.example"


def test_a_hole_never_filled_stops_that_direction_only() -> None:
    analyzer = ProtocolAnalyzer(max_bytes_per_direction=1_000)
    flow = flow_ref(dest_port=80)
    analyzer.feed(flow, tcp(REQUEST, 100))
    analyzer.feed(flow, tcp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 900, from_orig=False))
    # The client's next request is lost; what follows waits, then overflows the bound.
    for i in range(70):
        analyzer.feed(flow, tcp(b"x" * 20, 100 + len(REQUEST) + 100 + 20 * i))
    assert analyzer.stats["tcp_gaps"] == 1
    events = _events(analyzer)
    assert [e.status for e in events if isinstance(e, HttpEvent)] == [200]


def test_flow_of_no_interest_is_ignored_after_both_first_payloads() -> None:
    analyzer = ProtocolAnalyzer()
    flow = flow_ref(dest_port=443)
    analyzer.feed(flow, tcp(b"\x00\x01binary", 1))
    analyzer.feed(flow, tcp(b"\x05\x06more", 1, from_orig=False))
    analyzer.feed(flow, tcp(HELLO, 12))  # too late: the flow is already of no interest
    assert _events(analyzer) == []
    assert analyzer.counters.malformed == {}


def test_one_side_may_be_recognised_after_the_other_did_not_match() -> None:
    analyzer = ProtocolAnalyzer()
    flow = flow_ref(dest_port=2222)
    analyzer.feed(flow, tcp(b"SSH-2.0-OpenSSH_9.6 Ubuntu-3\r\n", 1, from_orig=False, ts_ns=5))
    analyzer.feed(flow, tcp(b"SSH-2.0-Go\r\n", 1, ts_ns=9))
    [event] = _events(analyzer)
    assert isinstance(event, SshEvent)
    assert event.ts_ns == 5
    assert event.client is not None and event.client.software_version == "Go"
    assert event.server is not None and event.server.comments == "Ubuntu-3"


def test_first_payload_of_one_byte_waits_for_more() -> None:
    analyzer = ProtocolAnalyzer()
    flow = flow_ref(dest_port=8080)
    analyzer.feed(flow, tcp(REQUEST[:1], 1, ts_ns=1))
    analyzer.feed(flow, tcp(REQUEST[1:], 2, ts_ns=2))
    [event] = _events(analyzer)
    assert isinstance(event, HttpEvent)
    assert (event.http_method, event.url, event.ts_ns) == ("GET", "/x", 1)


def test_least_recently_fed_flow_is_evicted_and_flushed() -> None:
    analyzer = ProtocolAnalyzer(max_flows=2)
    for uid in (1, 2, 3):
        flow = flow_ref(uid, dest_port=53, proto="UDP")
        analyzer.feed(flow, udp(dns_query(uid, f"q{uid}.example"), uid=uid, ts_ns=uid))
    assert analyzer.stats["flows_evicted"] == 1
    [flushed] = analyzer.drain()
    assert isinstance(flushed, DnsEvent)
    assert (flushed.rrname, flushed.type) == ("q1.example", "query")
    assert analyzer.flow_count == 2


def test_flow_ended_flushes_and_forgets() -> None:
    analyzer = ProtocolAnalyzer()
    flow = flow_ref(7, dest_port=53, proto="UDP")
    analyzer.feed(flow, udp(dns_query(1, "a.example"), uid=7))
    assert analyzer.drain() == []
    analyzer.flow_ended(7)
    [event] = analyzer.drain()
    assert isinstance(event, DnsEvent) and event.type == "query"
    assert analyzer.flow_count == 0
    analyzer.flow_ended(7)  # unknown flows are fine
    assert analyzer.drain() == []


def test_dns_answer_on_the_server_port_only_and_rtt() -> None:
    analyzer = ProtocolAnalyzer()
    # Oriented from the server: the query is the responder's packet.
    flow = flow_ref(3, src_port=53, dest_port=33333, proto="UDP")
    query = dns_query(9, "a.example")
    answer = dns_response(9, "a.example", 1, [(1, 60, bytes([192, 0, 2, 1]))])
    analyzer.feed(flow, udp(query, uid=3, from_orig=False, ts_ns=1_000_000))
    analyzer.feed(flow, udp(answer, uid=3, from_orig=True, ts_ns=3_500_000))
    [event] = analyzer.drain()
    assert isinstance(event, DnsEvent)
    assert (event.type, event.rcode, event.rtt_ms, event.ts_ns) == (
        "answer",
        "NOERROR",
        2.5,
        1_000_000,
    )
    assert event.answers[0].rdata == "192.0.2.1"


def test_warnings_name_the_file_offset_and_are_capped() -> None:
    analyzer = ProtocolAnalyzer()
    flow = flow_ref(dest_port=53, proto="UDP")
    for i in range(150):
        segment = udp(b"\x00\x01\x02", ts_ns=i)
        analyzer.feed(flow, type(segment)(**{**_fields(segment), "file_offset": 24 + i}))
    assert analyzer.counters.malformed == {"dns": 150}
    assert len(analyzer.warnings) == 100
    assert analyzer.warnings[0].startswith("dns: flow 1 at file offset 24: ")


def _fields(segment: object) -> dict[str, object]:
    names = ("flow_uid", "ts_ns", "from_orig", "ip_proto", "payload", "tcp_seq", "tcp_flags")
    return {name: getattr(segment, name) for name in names}


def test_drain_returns_each_event_once_in_completion_order() -> None:
    analyzer = ProtocolAnalyzer()
    dns = flow_ref(1, dest_port=53, proto="UDP")
    web = flow_ref(2, dest_port=80)
    analyzer.feed(dns, udp(dns_query(1, "a.example"), uid=1, ts_ns=1))
    analyzer.feed(web, tcp(REQUEST, 1, uid=2, ts_ns=2))
    analyzer.feed(web, tcp(b"HTTP/1.1 204 No Content\r\n\r\n", 1, uid=2, from_orig=False, ts_ns=3))
    analyzer.feed(dns, udp(dns_response(1, "a.example", 1, []), uid=1, from_orig=False, ts_ns=4))
    events = analyzer.drain()
    assert [type(e).__name__ for e in events] == ["HttpEvent", "DnsEvent"]
    assert analyzer.drain() == []


def test_handshake_larger_than_the_byte_limit_is_given_up() -> None:
    analyzer = ProtocolAnalyzer(max_bytes_per_direction=4_096)
    flow = flow_ref()
    huge = b"\x01" + (1 << 20).to_bytes(3, "big") + bytes(10_000)
    analyzer.feed(flow, tcp(tls_records(huge), 1))
    assert analyzer.stats.get("tls_message_over_byte_limit") == 1
    assert _events(analyzer) == []


def test_non_tcp_udp_and_empty_segments_are_ignored() -> None:
    analyzer = ProtocolAnalyzer()
    flow = flow_ref()
    analyzer.feed(flow, tcp(b"", 1, flags=ACK))
    segment = udp(b"abc")
    analyzer.feed(flow, type(segment)(**{**_fields(segment), "ip_proto": 1}))
    assert analyzer.flow_count == 0


def test_wants_turns_false_once_a_flow_needs_nothing_more() -> None:
    analyzer = ProtocolAnalyzer()
    ssh, other = flow_ref(1, dest_port=22), flow_ref(2, dest_port=9999)
    assert analyzer.wants(1) and analyzer.wants(2)
    analyzer.feed(ssh, tcp(b"SSH-2.0-a\r\n", 1, uid=1))
    assert analyzer.wants(1)
    analyzer.feed(ssh, tcp(b"SSH-2.0-b\r\n", 1, uid=1, from_orig=False))
    assert not analyzer.wants(1)  # both banners seen: done
    analyzer.feed(other, tcp(b"\x00junk", 1, uid=2))
    analyzer.feed(other, tcp(b"\x00junk", 1, uid=2, from_orig=False))
    assert not analyzer.wants(2)  # nothing matched either side
