"""Real TLS handshakes for synthetic captures.

A client and a server `ssl.SSLObject` talk through `ssl.MemoryBIO`s in memory; we record the bytes
each side writes, in order. Those records are what OpenSSL really sends (ClientHello with SNI and
ALPN, certificates, key exchange), so protocol parsers and tshark see a genuine handshake. Only the
TCP/IP framing around them is synthetic.

OpenSSL cannot be seeded, so client/server randoms, key shares and signatures differ between runs.
Record lengths do not: keys are RSA-2048 (fixed-size signatures), the key exchange is X25519, and
certificates use fixed serial numbers and dates, so TCP sequence numbers and timing stay
identical for a given seed. Transcripts are cached per process because a handshake costs ~2 ms.
"""

from __future__ import annotations

import datetime as dt
import functools
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: "ca": signed by the synthetic CA and valid; "self-signed": issuer == subject;
#: "expired": CA-signed but notAfter before the capture date.
CertKind = Literal["ca", "self-signed", "expired"]
#: "modern": OpenSSL defaults up to TLS 1.3; "legacy": a TLS 1.2-only client with a short,
#: different cipher list, so captures hold more than one client fingerprint (JA3/JA4).
ClientProfile = Literal["modern", "legacy"]
Version = Literal["1.2", "1.3"]

CA_NAME = "Tapetum Synthetic Root CA"


@dataclass(frozen=True, slots=True)
class Transcript:
    """Handshake records in the order they were written: (from_client, bytes)."""

    flights: tuple[tuple[bool, bytes], ...]
    version: str
    cipher: str
    alpn: str | None
    sni: str
    cert_kind: CertKind


@functools.cache
def _key(name: str) -> rsa.RSAPrivateKey:
    # One key per role per process: key generation dominates the cost otherwise.
    del name
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


@functools.cache
def ca_certificate(valid_at: dt.date) -> x509.Certificate:
    start = dt.datetime.combine(valid_at, dt.time(), dt.UTC)
    key = _key("ca")
    return (
        x509.CertificateBuilder()
        .subject_name(_name(CA_NAME, "Tapetum Test PKI"))
        .issuer_name(_name(CA_NAME, "Tapetum Test PKI"))
        .public_key(key.public_key())
        .serial_number(0x7A9E70)
        .not_valid_before(start - dt.timedelta(days=1500))
        .not_valid_after(start + dt.timedelta(days=2000))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )


@functools.cache
def server_certificate(sni: str, kind: CertKind, valid_at: dt.date) -> tuple[bytes, ...]:
    """PEM certificate chain (leaf first) for `sni`, as of the capture date `valid_at`."""
    start = dt.datetime.combine(valid_at, dt.time(), dt.UTC)
    if kind == "expired":
        not_before, not_after = start - dt.timedelta(days=455), start - dt.timedelta(days=90)
    else:
        not_before, not_after = start - dt.timedelta(days=40), start + dt.timedelta(days=50)
    key = _key("leaf")
    serial = 0x100000 + int.from_bytes(sni.encode()[:8].ljust(8, b"\x00"), "big") % 0xFFFFF
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(sni))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(sni)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    pem = serialization.Encoding.PEM
    if kind == "self-signed":
        leaf = builder.issuer_name(_name(sni)).sign(key, hashes.SHA256())
        return (leaf.public_bytes(pem),)
    ca = ca_certificate(valid_at)
    leaf = builder.issuer_name(ca.subject).sign(_key("ca"), hashes.SHA256())
    return leaf.public_bytes(pem), ca.public_bytes(pem)


def _server_context(
    sni: str, kind: CertKind, valid_at: dt.date, version: Version
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.maximum_version = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2", "http/1.1"])
    key_pem = _key("leaf").private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # load_cert_chain only reads files.
    with tempfile.TemporaryDirectory(prefix="tapetum-tls-") as directory:
        cert_path, key_path = Path(directory, "chain.pem"), Path(directory, "key.pem")
        cert_path.write_bytes(b"".join(server_certificate(sni, kind, valid_at)))
        key_path.write_bytes(key_pem)
        context.load_cert_chain(cert_path, key_path)
    return context


def _client_context(profile: ClientProfile, alpn: tuple[str, ...]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # The synthetic PKI is not trusted and some certificates are bad on purpose; the bytes on the
    # wire do not depend on whether the client checked them.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if profile == "legacy":
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:AES128-SHA")
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


@functools.cache
def handshake(
    sni: str,
    *,
    version: Version = "1.3",
    alpn: tuple[str, ...] = ("h2", "http/1.1"),
    cert_kind: CertKind = "ca",
    client: ClientProfile = "modern",
    valid_at: dt.date = dt.date(2026, 3, 2),
) -> Transcript:
    """Run one handshake in memory and return the records both sides wrote (cached)."""
    server_context = _server_context(sni, cert_kind, valid_at, version)
    client_context = _client_context(client, alpn)
    to_client, from_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    to_server, from_server = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_client = client_context.wrap_bio(to_client, from_client, server_hostname=sni)
    tls_server = server_context.wrap_bio(to_server, from_server, server_side=True)
    flights: list[tuple[bool, bytes]] = []
    client_done = server_done = False
    for _ in range(8):
        if not client_done:
            client_done = _step(tls_client)
        if data := from_client.read():
            flights.append((True, data))
            to_server.write(data)
        if not server_done:
            server_done = _step(tls_server)
        data = from_server.read()
        if data:
            flights.append((False, data))
            to_client.write(data)
        if client_done and server_done and not data:
            break
    else:
        raise RuntimeError(f"TLS handshake for {sni} did not finish")
    cipher = tls_client.cipher()
    return Transcript(
        flights=tuple(flights),
        version=tls_client.version() or "",
        cipher=cipher[0] if cipher else "",
        alpn=tls_client.selected_alpn_protocol(),
        sni=sni,
        cert_kind=cert_kind,
    )


def _step(tls: ssl.SSLObject) -> bool:
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        return False
    return True


def clear_cache() -> None:
    """Forget keys, certificates and transcripts, as a new process would (for tests)."""
    for cached in (_key, ca_certificate, server_certificate, handshake):
        cached.cache_clear()
