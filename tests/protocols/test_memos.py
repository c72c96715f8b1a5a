"""What the protocol stage remembers across flows gives exactly what computing afresh gives.

The analyzer keeps bounded memos (certificates, hello fingerprints, DNS messages that differ
only in their ID) and DNS decoding reuses a name already read in the same message. These tests
hold each shortcut to the slow path it replaces, on crafted and generated inputs.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from tapetum.protocols._parser import BoundedCache, MalformedError
from tapetum.protocols.analyzer import ProtocolAnalyzer
from tapetum.protocols.dns import NAME_STEPS_PER_MESSAGE, DnsMemo, _read_name, parse_message
from tapetum.protocols.tls import (
    Handshake,
    TlsMemo,
    parse_certificate,
    parse_client_hello,
    parse_server_hello,
)
from tapetum.records import DnsEvent, TlsEvent
from tests.protocols.helpers import (
    certificate_message,
    client_hello,
    dns_query,
    dns_response,
    flow_ref,
    server_hello,
    tcp,
    tls_records,
    udp,
)
from tests.protocols.test_tls_quic import _certificate, _tls

# -- the memo itself --------------------------------------------------------------------------


def test_bounded_cache_keeps_to_its_entries_and_weight() -> None:
    cache: BoundedCache[int, str] = BoundedCache(max_entries=3, max_weight=10)
    for key in range(5):
        cache.put(key, str(key), weight=1)
    assert len(cache) == 3 and cache.get(0) is None and cache.get(4) == "4"
    cache.put(9, "heavy", weight=9)  # room is made by dropping the oldest entries
    assert cache.get(9) == "heavy" and len(cache) <= 2
    cache.put(10, "too heavy", weight=11)  # heavier than the whole cache: not kept
    assert cache.get(10) is None and cache.get(9) == "heavy"
    cache.put(9, "lighter", weight=1)  # replacing an entry replaces its weight
    for key in range(20, 22):
        cache.put(key, "x", weight=4)
    assert cache.get(9) == "lighter"


# -- DNS ----------------------------------------------------------------------------------------


def _parsed(buf: bytes) -> tuple[object, ...]:
    try:
        m = parse_message(buf)
    except MalformedError as exc:
        return ("error", str(exc))
    return (m.ident, m.flags, m.qname, m.qtype, m.answers, m.error)


def _via_memo(memo: DnsMemo, buf: bytes) -> tuple[object, ...]:
    try:
        m = memo.parse(buf)
    except MalformedError as exc:
        return ("error", str(exc))
    return (m.ident, m.flags, m.qname, m.qtype, m.answers, m.error)


def test_dns_memo_answers_messages_that_differ_in_their_id() -> None:
    memo = DnsMemo()
    cname = b"\x03www\xc0\x0c"
    for ident in (1, 2, 0xFFFF):
        response = dns_response(ident, "a.example", 1, [(5, 60, cname), (1, 60, bytes(4))])
        assert _via_memo(memo, response) == _parsed(response)
    assert len(memo.parsed) == 1
    broken = dns_query(7, "a.example")[:-3]  # the question's type and class cut short
    for ident in (7, 8):
        message = struct.pack("!H", ident) + broken[2:]
        result = _via_memo(memo, message)
        assert result == _parsed(message) and result[0] == "error"
    assert len(memo.parsed) == 2


def test_dns_memo_does_not_keep_a_message_whose_names_read_its_id() -> None:
    # The question is a pointer to offset 1: the ID's second byte is read as a label length,
    # so the name depends on the ID (the flags 0x0100 then give the label and its end).
    memo = DnsMemo()
    names = []
    for ident in (0x0000, 0x0001, 0x0000):
        message = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + b"\xc0\x01\x00\x01\x00\x01"
        result = _via_memo(memo, message)
        assert result == _parsed(message)
        names.append(result[2])
    assert names == ["", "\\x01", ""]
    assert len(memo.parsed) == 0


@st.composite
def _names_message(draw: st.DrawFn) -> tuple[bytes, list[int], int]:
    """A buffer of names (labels ending in a zero or a pointer, often to an earlier name's
    start, sometimes into the header), the offsets where they start, and a step budget."""
    buf = bytearray(draw(st.binary(min_size=12, max_size=12)))
    starts: list[int] = []
    for _ in range(draw(st.integers(1, 12))):
        starts.append(len(buf))
        for _ in range(draw(st.integers(0, 5))):
            size = draw(st.sampled_from([1, 3, 20, 63]))
            buf += bytes([size]) + draw(st.binary(min_size=size, max_size=size))
        end = draw(st.sampled_from(["zero", "earlier", "earlier", "anywhere", "reserved"]))
        if end == "zero" or (end == "earlier" and len(starts) == 1):
            buf.append(0)
        elif end == "earlier":
            buf += struct.pack("!H", 0xC000 | draw(st.sampled_from(starts[:-1])))
        elif end == "anywhere":
            buf += struct.pack("!H", 0xC000 | draw(st.integers(0, len(buf) + 2)))
        else:
            buf.append(draw(st.sampled_from([0x40, 0x80])))
    budget = draw(st.sampled_from([NAME_STEPS_PER_MESSAGE, 40, 12, 5]))
    return bytes(buf), starts, budget


def _decode_all(buf: bytes, starts: list[int], steps: int, reuse: bool) -> list[object]:
    names: dict[int, tuple[str, int, int]] | None = {} if reuse else None
    out: list[object] = []
    for start in starts:
        try:
            name, end, steps = _read_name(buf, start, steps, names)
        except MalformedError as exc:
            out.append(str(exc))
            break  # as in a message: an error ends the section
        out.append((name, end, steps))
    return out


@settings(max_examples=400, deadline=None)
@given(_names_message())
def test_reusing_a_decoded_name_ends_as_decoding_it_again(
    case: tuple[bytes, list[int], int],
) -> None:
    # Same names, same ends, same step budget left, and the same error at the same name
    # (budget exhausted, more than 255 bytes, bad pointers) as decoding every name in full.
    buf, starts, budget = case
    assert _decode_all(buf, starts, budget, reuse=True) == _decode_all(
        buf, starts, budget, reuse=False
    )


def test_dns_events_are_the_same_when_the_memo_answers() -> None:
    def events(repeat: int) -> list[DnsEvent]:
        analyzer = ProtocolAnalyzer()
        for uid in range(1, repeat + 1):
            flow = flow_ref(uid, dest_port=53, proto="UDP")
            query = dns_query(uid, "a.example")
            response = dns_response(uid, "a.example", 1, [(1, 300, bytes([192, 0, 2, uid]))])
            analyzer.feed(flow, udp(query, uid=uid, ts_ns=10 * uid))
            analyzer.feed(flow, udp(response, uid=uid, from_orig=False, ts_ns=10 * uid + 3))
        analyzer.close()
        return analyzer.drain()  # type: ignore[return-value]

    many = events(5)
    assert [e.id for e in many] == [1, 2, 3, 4, 5]
    assert [e.answers[0].rdata for e in many] == [f"192.0.2.{i}" for i in range(1, 6)]
    assert all(e.rtt_ms == 3e-6 for e in many)


# -- TLS ----------------------------------------------------------------------------------------


def test_fingerprint_memo_gives_the_fingerprints_computed_afresh() -> None:
    hellos = [
        client_hello(ciphers=[0x1301, 0x0A0A, 0xC02F], extensions=[0, 16, 43, 13],
                     sni="a.example", alpns=[b"h2"], versions=[0x0304, 0x0303],
                     signature_algorithms=[0x0403, 0x0804]),
        client_hello(ciphers=[0x1301, 0xC02F], extensions=[0, 16, 43, 13],
                     sni="b.example", alpns=[b"h2"], versions=[0x0304, 0x0303],
                     signature_algorithms=[0x0403, 0x0804]),
        client_hello(ciphers=[0x1301, 0xC02F], extensions=[0, 10, 11], sni="c.example",
                     groups=[29, 23], point_formats=[0]),
    ]  # fmt: skip
    servers = [
        server_hello(cipher=0x1301, extensions=[(43, b"\x03\x04")]),
        server_hello(cipher=0xC02F, extensions=[(16, b"\x00\x03\x02h2")]),
    ]
    memo = TlsMemo()
    flow = flow_ref()
    for transport in ("tls", "quic", "tls"):
        for raw_client in hellos:
            for raw_server in servers:
                hs = Handshake()
                hs.ts_ns = 1
                hs.client_hello = parse_client_hello(raw_client[4:])
                hs.server_hello = parse_server_hello(raw_server[4:])
                assert hs.event(flow, transport, memo) == hs.event(flow, transport)
    assert len(memo.clients) == 2 * 3 and len(memo.servers) == 2


def test_certificate_memo_gives_the_description_and_the_error_again() -> None:
    memo = TlsMemo()
    der = _certificate("a.example")
    assert memo.certificate(der) == memo.certificate(der) == parse_certificate(der)
    assert len(memo.certificates) == 1
    for _ in range(2):
        try:
            memo.certificate(b"\x30\x03\x02\x01\x00")
        except MalformedError as exc:
            message = str(exc)
        else:
            raise AssertionError("a broken certificate must raise")
        assert message.startswith("certificate does not parse")


def test_flows_sharing_a_certificate_get_the_same_certificate_fields() -> None:
    der = _certificate("shared.example")
    client = tls_records(client_hello(ciphers=[0xC02F], extensions=[0], sni="a.example"))
    server = tls_records(server_hello(cipher=0xC02F) + certificate_message(der))
    alone, _ = _tls([client], [server])
    analyzer = ProtocolAnalyzer()
    for uid in (1, 2, 3):
        analyzer.feed(flow_ref(uid), tcp(client, 1, uid=uid))
        analyzer.feed(flow_ref(uid), tcp(server, 1, uid=uid, from_orig=False))
    events = analyzer.drain()
    assert len(events) == 3
    fields = ("subject", "issuerdn", "serial", "fingerprint", "notbefore", "notafter", "san")
    for event in events:
        assert isinstance(event, TlsEvent)
        for name in (*fields, "self_signed", "ja3_hash", "ja4", "ja3s_hash"):
            assert getattr(event, name) == getattr(alone[0], name)
