"""TLS handshake state (certificates, TLS 1.3, retries) and QUIC Initial decryption."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import struct

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from tapetum.protocols import quic
from tapetum.protocols.analyzer import ProtocolAnalyzer
from tapetum.protocols.tls import HELLO_RETRY_RANDOM, parse_certificate
from tapetum.records import TlsEvent
from tests.protocols.helpers import (
    certificate_message,
    client_hello,
    flow_ref,
    server_hello,
    tcp,
    tls_records,
    udp,
)

HELLO = client_hello(ciphers=[0x1301, 0xC02F], extensions=[0, 16, 43], sni="a.example",
                     alpns=[b"h2"], versions=[0x0304, 0x0303])  # fmt: skip
START = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def _certificate(
    subject: str, issuer: str | None = None, key: ec.EllipticCurvePrivateKey | None = None
) -> bytes:
    own_key = ec.generate_private_key(ec.SECP256R1())
    signer = key or own_key
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer or subject)]))
        .public_key(own_key.public_key())
        .serial_number(0x8001)
        .not_valid_before(START)
        .not_valid_after(START + dt.timedelta(days=90))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("a.example"), x509.DNSName("b.example")]),
            critical=False,
        )
        .sign(signer, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def _tls(client: list[bytes], server: list[bytes]) -> tuple[list[TlsEvent], ProtocolAnalyzer]:
    analyzer = ProtocolAnalyzer()
    flow = flow_ref()
    seq = {True: 1, False: 1}
    for ts, (from_orig, data) in enumerate(
        [(True, c) for c in client] + [(False, s) for s in server], start=1
    ):
        analyzer.feed(flow, tcp(data, seq[from_orig], from_orig=from_orig, ts_ns=ts))
        seq[from_orig] += len(data)
    before_close = analyzer.drain()
    analyzer.close()
    return before_close + analyzer.drain(), analyzer  # type: ignore[return-value]


def test_certificate_description() -> None:
    der = _certificate("a.example")
    info = parse_certificate(der)
    assert (info.subject, info.issuerdn) == ("CN=a.example", "CN=a.example")
    assert info.serial == "00:80:01"  # the DER integer's bytes, with its sign byte
    assert info.fingerprint == hashlib.sha1(der, usedforsecurity=False).digest().hex(":")
    assert (info.notbefore, info.notafter) == ("2024-01-02T03:04:05", "2024-04-01T03:04:05")
    assert info.san == ("a.example", "b.example")
    assert info.self_signed is True


def test_self_signed_needs_the_signature_not_only_the_names() -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    assert parse_certificate(_certificate("leaf", "Some CA", ca_key)).self_signed is False
    # Same subject and issuer, but signed by another key: not self-signed.
    assert parse_certificate(_certificate("x", "x", ca_key)).self_signed is False


def test_tls12_event_after_certificate_split_over_records_and_segments() -> None:
    der = _certificate("a.example")
    flight = tls_records(
        server_hello(cipher=0xC02F, extensions=[(16, b"\x00\x03\x02h2")])
        + certificate_message(der, _certificate("intermediate"))
        + b"\x0e\x00\x00\x00",
        size=300,
    )
    events, analyzer = _tls(
        [tls_records(HELLO)], [flight[i : i + 200] for i in range(0, len(flight), 200)]
    )
    [event] = events
    assert event.version == "TLS 1.2"
    assert event.cipher_suite == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    assert event.server_alpns == ("h2",)
    assert event.client_versions == ("TLS 1.3", "TLS 1.2")
    assert event.subject == "CN=a.example" and event.self_signed is True
    assert analyzer.counters.parsed == {"tls": 1} and analyzer.counters.malformed == {}


def test_tls13_event_right_after_the_server_hello() -> None:
    sh = server_hello(cipher=0x1302, extensions=[(43, b"\x03\x04")])
    events, _ = _tls([tls_records(HELLO)], [tls_records(sh) + b"\x14\x03\x03\x00\x01\x01"])
    [event] = events
    assert (event.version, event.cipher_suite, event.subject) == (
        "TLS 1.3", "TLS_AES_256_GCM_SHA384", None,
    )  # fmt: skip


def test_hello_retry_request_is_not_the_final_server_hello() -> None:
    retry = bytearray(server_hello(cipher=0x1301, extensions=[(43, b"\x03\x04")]))
    retry[6:38] = HELLO_RETRY_RANDOM
    final = server_hello(cipher=0x1303, extensions=[(43, b"\x03\x04")])
    compat_ccs = b"\x14\x03\x03\x00\x01\x01"  # TLS 1.3 middlebox compatibility
    events, _ = _tls(
        [tls_records(HELLO), tls_records(HELLO)],
        [tls_records(bytes(retry)) + compat_ccs, tls_records(final)],
    )
    [event] = events
    assert event.cipher_suite == "TLS_CHACHA20_POLY1305_SHA256"


def test_only_the_first_certificate_of_a_long_chain_is_needed() -> None:
    analyzer = ProtocolAnalyzer(max_bytes_per_direction=8_192)
    flow = flow_ref()
    der = _certificate("first.example")
    chain = certificate_message(der, *([bytes(4_000)] * 10))  # far beyond the byte limit
    flight = tls_records(server_hello(cipher=0xC02F) + chain)
    analyzer.feed(flow, tcp(tls_records(HELLO), 1))
    for i in range(0, len(flight), 1_400):
        analyzer.feed(flow, tcp(flight[i : i + 1_400], 1 + i, from_orig=False))
    [event] = analyzer.drain()
    assert isinstance(event, TlsEvent) and event.subject == "CN=first.example"


def test_server_seen_first_still_reads_client_and_server_right() -> None:
    analyzer = ProtocolAnalyzer()
    flow = flow_ref(src_port=443, dest_port=50000)
    sh = server_hello(cipher=0x1301, extensions=[(43, b"\x03\x04")])
    analyzer.feed(flow, tcp(tls_records(HELLO), 1, from_orig=False, ts_ns=1))
    analyzer.feed(flow, tcp(tls_records(sh), 1, from_orig=True, ts_ns=2))
    [event] = analyzer.drain()
    assert isinstance(event, TlsEvent)
    assert (event.sni, event.version) == ("a.example", "TLS 1.3")


def test_not_tls_after_a_tls_looking_start_is_counted() -> None:
    events, analyzer = _tls([b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00" + b"\xff" * 10], [])
    assert analyzer.counters.malformed == {"tls": 1}
    assert events == []


# -- QUIC -----------------------------------------------------------------------------------

RFC9001_DCID = bytes.fromhex("8394c8f03e515708")


def test_initial_key_schedule_matches_rfc9001_appendix_a1() -> None:
    salt = quic.VERSIONS[1].salt
    initial = hmac.digest(salt, RFC9001_DCID, "sha256")
    assert initial.hex() == "7db5df06e7a69e432496adedb00851923595221596ae2ae9fb8115c1e9ed0a44"
    client = quic._expand_label(initial, b"client in", 32)
    assert client.hex() == "c00cf151ca5be075ed0ebfb5c80323c42d6b7db67881289af4008f1f6c357aea"
    assert quic._expand_label(client, b"quic key", 16).hex() == "1f369613dd76d5467730efcbe3b1a22d"
    assert quic._expand_label(client, b"quic iv", 12).hex() == "fa044b2f42a3fd3b46fb255c"
    assert quic._expand_label(client, b"quic hp", 16).hex() == "9f50449e04a0e810283a1e9933adedd2"
    server = quic._expand_label(initial, b"server in", 32)
    assert quic._expand_label(server, b"quic key", 16).hex() == "cf3a5331653c364c88f0f379b6067e37"
    assert quic._expand_label(server, b"quic iv", 12).hex() == "0ac1493ca1905853b0bba03e"


def _varint(value: int) -> bytes:
    return struct.pack("!H", 0x4000 | value) if value >= 64 else bytes([value])


def _initial(frames: bytes, packet_number: int, dcid: bytes = RFC9001_DCID) -> bytes:
    """A v1 client Initial protected as RFC 9001 section 5 says (the inverse of the parser)."""
    salt = quic.VERSIONS[1].salt
    secret = quic._expand_label(hmac.digest(salt, dcid, "sha256"), b"client in", 32)
    key = quic._expand_label(secret, b"quic key", 16)
    iv = quic._expand_label(secret, b"quic iv", 12)
    hp = quic._expand_label(secret, b"quic hp", 16)
    payload = frames + bytes(max(0, 1_100 - len(frames)))  # PADDING
    pn = packet_number.to_bytes(4, "big")
    length = len(pn) + len(payload) + 16
    header = bytes([0xC3]) + struct.pack("!I", 1) + bytes([len(dcid)]) + dcid + b"\x00"
    header += b"\x00" + struct.pack("!H", 0x4000 | length) + pn
    nonce = (int.from_bytes(iv, "big") ^ packet_number).to_bytes(12, "big")
    sealed = AESGCM(key).encrypt(nonce, payload, header)
    pn_offset = len(header) - 4
    sample = sealed[:16]  # 4 bytes after the packet number's start: it is 4 bytes long
    mask = Cipher(algorithms.AES(hp), modes.ECB()).encryptor().update(sample)
    protected = bytearray(header)
    protected[0] ^= mask[0] & 0x0F
    for i in range(4):
        protected[pn_offset + i] ^= mask[1 + i]
    return bytes(protected) + sealed


def _crypto(offset: int, data: bytes) -> bytes:
    return b"\x06" + _varint(offset) + _varint(len(data)) + data


def test_quic_client_hello_over_two_initials_with_frames_out_of_order() -> None:
    hello = client_hello(ciphers=[0x1301], extensions=[0, 16, 43, 57], sni="q.example",
                         alpns=[b"h3"], versions=[0x0304])  # fmt: skip
    cut1, cut2 = 20, 60
    first = _initial(_crypto(cut2, hello[cut2:]) + b"\x01" + _crypto(0, hello[:cut1]), 0)
    second = _initial(b"\x00\x00" + _crypto(cut1, hello[cut1:cut2]), 1)
    analyzer = ProtocolAnalyzer()
    flow = flow_ref(dest_port=443, proto="UDP")
    analyzer.feed(flow, udp(first, ts_ns=7))
    analyzer.feed(flow, udp(second, ts_ns=8))
    analyzer.feed(flow, udp(second, ts_ns=9))  # a retransmission changes nothing
    analyzer.close()
    [event] = analyzer.drain()
    assert isinstance(event, TlsEvent)
    assert (event.transport, event.sni, event.client_alpns, event.ts_ns) == (
        "quic",
        "q.example",
        ("h3",),
        7,
    )
    assert event.ja4 is not None and event.ja4.startswith("q13d0104h3_")
    assert analyzer.counters.malformed == {}


def test_quic_packet_that_does_not_decrypt_is_counted() -> None:
    packet = bytearray(_initial(_crypto(0, b"\x01\x00\x00\x00"), 0))
    packet[-1] ^= 1  # breaks the AEAD tag
    analyzer = ProtocolAnalyzer()
    analyzer.feed(flow_ref(dest_port=443, proto="UDP"), udp(bytes(packet)))
    analyzer.close()
    assert analyzer.drain() == []
    assert analyzer.counters.malformed == {"quic": 1}


@pytest.mark.parametrize("version", [0x00000001, 0x6B3343CF, 0xFF00001D, 0x1A2A3A4A])
def test_long_header_initials_are_recognised(version: int) -> None:
    first = 0xD0 if version == 0x6B3343CF else 0xC0  # v2 renumbered the Initial type
    packet = bytes([first]) + struct.pack("!I", version) + b"\x08" + bytes(8) + b"\x00" * 20
    assert quic.looks_like_initial(packet)
    assert not quic.looks_like_initial(bytes([0x40]) + packet[1:])
    assert not quic.looks_like_initial(bytes([first]) + struct.pack("!I", 0x12345678) + packet[5:])
