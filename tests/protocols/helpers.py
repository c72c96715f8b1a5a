"""Builders of synthetic protocol messages and segments for the protocol tests."""

from __future__ import annotations

import struct
from collections.abc import Iterable

from tapetum.protocols.base import Segment
from tapetum.records import FlowRef

SYN, ACK, PSH = 0x02, 0x10, 0x08


def flow_ref(
    uid: int = 1,
    *,
    src_port: int = 40000,
    dest_port: int = 443,
    proto: str = "TCP",
) -> FlowRef:
    return FlowRef(
        flow_id=uid,
        community_id="",
        src_ip="10.0.0.1",
        src_port=src_port,
        dest_ip="10.0.0.2",
        dest_port=dest_port,
        proto=proto,
    )


def tcp(
    payload: bytes,
    seq: int,
    *,
    from_orig: bool = True,
    uid: int = 1,
    ts_ns: int = 1_000,
    flags: int = ACK | PSH,
    file_offset: int = -1,
) -> Segment:
    return Segment(
        flow_uid=uid,
        ts_ns=ts_ns,
        from_orig=from_orig,
        ip_proto=6,
        payload=payload,
        tcp_seq=seq & 0xFFFFFFFF,
        tcp_flags=flags,
        file_offset=file_offset,
    )


def udp(payload: bytes, *, from_orig: bool = True, uid: int = 1, ts_ns: int = 1_000) -> Segment:
    return Segment(flow_uid=uid, ts_ns=ts_ns, from_orig=from_orig, ip_proto=17, payload=payload)


def _u16s(values: Iterable[int]) -> bytes:
    values = list(values)
    return struct.pack(f"!{len(values)}H", *values)


def extension(ext_type: int, data: bytes) -> bytes:
    return struct.pack("!HH", ext_type, len(data)) + data


def client_hello(
    *,
    ciphers: list[int],
    extensions: list[int],
    sni: str | None = None,
    alpns: list[bytes] | None = None,
    versions: list[int] | None = None,
    signature_algorithms: list[int] | None = None,
    groups: list[int] | None = None,
    point_formats: list[int] | None = None,
    legacy_version: int = 0x0303,
) -> bytes:
    """A ClientHello handshake message whose extensions appear in `extensions` order.

    Extensions with content we model (SNI, ALPN, versions, signature algorithms, groups,
    point formats) get that content; any other type is sent empty.
    """
    blocks = []
    for ext_type in extensions:
        if ext_type == 0 and sni is not None:
            name = sni.encode()
            entry = b"\x00" + struct.pack("!H", len(name)) + name
            data = struct.pack("!H", len(entry)) + entry
        elif ext_type == 16 and alpns is not None:
            entries = b"".join(bytes([len(a)]) + a for a in alpns)
            data = struct.pack("!H", len(entries)) + entries
        elif ext_type == 43 and versions is not None:
            data = bytes([2 * len(versions)]) + _u16s(versions)
        elif ext_type == 13 and signature_algorithms is not None:
            data = struct.pack("!H", 2 * len(signature_algorithms)) + _u16s(signature_algorithms)
        elif ext_type == 10 and groups is not None:
            data = struct.pack("!H", 2 * len(groups)) + _u16s(groups)
        elif ext_type == 11 and point_formats is not None:
            data = bytes([len(point_formats)]) + bytes(point_formats)
        else:
            data = b""
        blocks.append(extension(ext_type, data))
    ext_bytes = b"".join(blocks)
    body = (
        struct.pack("!H", legacy_version)
        + bytes(32)
        + b"\x00"
        + struct.pack("!H", 2 * len(ciphers))
        + _u16s(ciphers)
        + b"\x01\x00"
        + struct.pack("!H", len(ext_bytes))
        + ext_bytes
    )
    return b"\x01" + len(body).to_bytes(3, "big") + body


def server_hello(
    *,
    cipher: int,
    extensions: list[tuple[int, bytes]] = (),  # type: ignore[assignment]
    legacy_version: int = 0x0303,
) -> bytes:
    ext_bytes = b"".join(extension(t, d) for t, d in extensions)
    body = (
        struct.pack("!H", legacy_version)
        + bytes(range(32))
        + b"\x00"
        + struct.pack("!H", cipher)
        + b"\x00"
        + struct.pack("!H", len(ext_bytes))
        + ext_bytes
    )
    return b"\x02" + len(body).to_bytes(3, "big") + body


def certificate_message(*ders: bytes) -> bytes:
    entries = b"".join(len(d).to_bytes(3, "big") + d for d in ders)
    body = len(entries).to_bytes(3, "big") + entries
    return b"\x0b" + len(body).to_bytes(3, "big") + body


def tls_records(handshake: bytes, *, content_type: int = 22, size: int = 16_384) -> bytes:
    """`handshake` cut into TLS records of at most `size` bytes."""
    out = bytearray()
    for start in range(0, len(handshake), size):
        chunk = handshake[start : start + size]
        out += bytes([content_type, 3, 3]) + struct.pack("!H", len(chunk)) + chunk
    return bytes(out)


def dns_name(name: str) -> bytes:
    out = bytearray()
    for label in name.split(".") if name else []:
        out += bytes([len(label)]) + label.encode()
    return bytes(out + b"\x00")


def dns_query(ident: int, name: str, qtype: int = 1, flags: int = 0x0100) -> bytes:
    return (
        struct.pack("!HHHHHH", ident, flags, 1, 0, 0, 0)
        + dns_name(name)
        + struct.pack("!HH", qtype, 1)
    )


def dns_response(
    ident: int,
    name: str,
    qtype: int,
    answers: list[tuple[int, int, bytes]],
    *,
    rcode: int = 0,
    flags: int = 0x8180,
) -> bytes:
    """A response with one question; answers are (type, ttl, rdata) owned by a pointer to it."""
    body = struct.pack("!HHHHHH", ident, flags | rcode, 1, len(answers), 0, 0)
    body += dns_name(name) + struct.pack("!HH", qtype, 1)
    for rrtype, ttl, rdata in answers:
        body += b"\xc0\x0c" + struct.pack("!HHIH", rrtype, 1, ttl, len(rdata)) + rdata
    return body
