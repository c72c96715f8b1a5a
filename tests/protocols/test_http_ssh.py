"""HTTP/1.x request/response pairing and SSH banners."""

from __future__ import annotations

from tapetum.protocols.analyzer import ProtocolAnalyzer
from tapetum.protocols.ssh import parse_banner
from tapetum.records import HttpEvent, SshEndpoint, SshEvent
from tests.protocols.helpers import flow_ref, tcp


def _http(client: list[bytes], server: list[bytes], *, interleave: bool = False) -> list[HttpEvent]:
    analyzer = ProtocolAnalyzer()
    flow = flow_ref(dest_port=8000)
    seq = {True: 1, False: 1}
    order = [(True, c) for c in client] + [(False, s) for s in server]
    if interleave:
        order = [
            x for pair in zip(order[: len(client)], order[len(client) :], strict=True) for x in pair
        ]
    for ts, (from_orig, data) in enumerate(order, start=1):
        analyzer.feed(flow, tcp(data, seq[from_orig], from_orig=from_orig, ts_ns=ts))
        seq[from_orig] += len(data)
    analyzer.close()
    events = analyzer.drain()
    assert all(isinstance(e, HttpEvent) for e in events)
    assert analyzer.counters.malformed == {}
    return events  # type: ignore[return-value]


def test_pipelined_requests_pair_fifo_with_bodies_skipped() -> None:
    requests = (
        b"GET /a HTTP/1.1\r\nHost: h\r\nUser-Agent: ua/1\r\nReferer: http://r/\r\n\r\n"
        b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
        b"Authorization: Basic dTpw\r\n\r\nhello"
        b"HEAD /c HTTP/1.0\r\nHost: h:8000\r\n\r\n"
    )
    responses = [
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 4\r\n\r\nbody",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        b"0\r\nX-Trailer: 1\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 999\r\n\r\n",  # HEAD: no body follows
    ]
    events = _http([requests], responses)
    assert [(e.http_method, e.url, e.status) for e in events] == [
        ("GET", "/a", 200),
        ("POST", "/b", 201),
        ("HEAD", "/c", 404),
    ]
    first, second, third = events
    assert (first.hostname, first.http_user_agent, first.http_refer) == ("h", "ua/1", "http://r/")
    assert (first.length, first.http_content_type, first.protocol) == (4, "text/html", "HTTP/1.1")
    assert second.authorization_basic and not first.authorization_basic
    assert (third.hostname, third.protocol, third.length) == ("h:8000", "HTTP/1.0", 999)
    assert all(e.ts_ns == 1 for e in events)  # all three requests came in the first segment


def test_request_timestamps_follow_the_segments_they_start_in() -> None:
    events = _http(
        [b"GET /1 HTTP/1.1\r\n\r\n", b"GET /2 HTTP/1.1\r\n\r\n"],
        [b"HTTP/1.1 204 No Content\r\n\r\n", b"HTTP/1.1 204 No Content\r\n\r\n"],
        interleave=True,
    )
    assert [(e.url, e.ts_ns) for e in events] == [("/1", 1), ("/2", 3)]


def test_unanswered_requests_are_emitted_at_the_end() -> None:
    events = _http([b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"], [])
    [event] = events
    assert (event.url, event.status, event.length) == ("/x", None, None)


def test_upgrade_ends_parsing() -> None:
    events = _http(
        [b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", b"\x81\x05hello"],
        [b"HTTP/1.1 101 Switching Protocols\r\n\r\n", b"\x81\x02ok"],
    )
    assert [(e.url, e.status) for e in events] == [("/ws", 101)]


def test_flow_seen_from_the_server_first_is_read_the_right_way_round() -> None:
    analyzer = ProtocolAnalyzer()
    flow = flow_ref(src_port=80, dest_port=50000)  # oriented server -> client
    analyzer.feed(flow, tcp(b"GET /late HTTP/1.1\r\n\r\n", 1, from_orig=False, ts_ns=1))
    analyzer.feed(flow, tcp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1, ts_ns=2))
    [event] = analyzer.drain()
    assert isinstance(event, HttpEvent) and (event.url, event.status) == ("/late", 200)


def test_garbage_after_a_request_stops_that_direction() -> None:
    analyzer = ProtocolAnalyzer()
    flow = flow_ref(dest_port=80)
    analyzer.feed(flow, tcp(b"GET / HTTP/1.1\r\n\r\n\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09", 1))
    analyzer.close()
    [event] = analyzer.drain()
    assert isinstance(event, HttpEvent)
    assert analyzer.counters.malformed == {"http": 1}


def test_oversized_header_block_is_given_up() -> None:
    analyzer = ProtocolAnalyzer()
    flow = flow_ref(dest_port=80)
    head = b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000
    for i in range(0, len(head), 1000):
        analyzer.feed(flow, tcp(head[i : i + 1000], 1 + i))
    analyzer.close()
    assert analyzer.drain() == []
    assert analyzer.counters.malformed == {"http": 1}


def test_ssh_banner_parts() -> None:
    assert parse_banner(b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13") == SshEndpoint(
        proto_version="2.0", software_version="OpenSSH_9.6p1", comments="Ubuntu-3ubuntu13"
    )
    assert parse_banner(b"SSH-1.99-Cisco-1.25") == SshEndpoint(
        proto_version="1.99", software_version="Cisco-1.25", comments=None
    )


def test_ssh_lines_before_the_server_banner_are_skipped() -> None:
    analyzer = ProtocolAnalyzer()
    flow = flow_ref(dest_port=22)
    analyzer.feed(flow, tcp(b"SSH-2.0-client\r\n", 1, ts_ns=1))
    server = b"Welcome\r\nSSH-2.0-serv"
    analyzer.feed(flow, tcp(server, 1, from_orig=False, ts_ns=2))
    analyzer.feed(flow, tcp(b"er 1\r\n\x00\x00\x01", 1 + len(server), from_orig=False, ts_ns=3))
    [event] = analyzer.drain()
    assert isinstance(event, SshEvent)
    assert event.server == SshEndpoint(proto_version="2.0", software_version="server", comments="1")
    assert event.client is not None and event.client.software_version == "client"


def test_ssh_with_one_banner_only_is_emitted_at_the_end() -> None:
    analyzer = ProtocolAnalyzer()
    flow = flow_ref(dest_port=22)
    analyzer.feed(flow, tcp(b"SSH-2.0-OpenSSH_8.0\r\n", 1, from_orig=False, ts_ns=4))
    assert analyzer.drain() == []
    analyzer.close()
    [event] = analyzer.drain()
    assert isinstance(event, SshEvent) and event.client is None and event.ts_ns == 4
