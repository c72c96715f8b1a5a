"""Traffic with protocol anomalies, for the protocol and intel detectors' tests.

- `tls_cert_session`: a real OpenSSL handshake whose server certificate is chosen freely: for a
  name other than the SNI (SNI mismatch), self-signed, expired or not yet valid, with or without
  SANs. TLS 1.2 by default, since TLS 1.3 encrypts the certificate.
- `http_basic_auth_session`: HTTP/1.1 requests carrying `Authorization: Basic` in cleartext.
- Services on ports of other services need nothing new: `ssh_session(port=443)`,
  `tls_session(port=22)`, `http_session(port=443)`.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tapetum.testing import tls as tls_handshakes
from tapetum.testing.synth import Ctx, TcpConnection, http_request, http_response, tcp_session
from tapetum.testing.wire import Host, Packet

#: "ca": valid and CA-signed; "self-signed"; "expired": notAfter 90 days before the capture;
#: "not-yet-valid": notBefore 30 days after the capture.
CertKind = Literal["ca", "self-signed", "expired", "not-yet-valid"]


@functools.cache
def _leaf_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def certificate_chain(
    common_name: str, sans: tuple[str, ...], kind: CertKind, valid_at: dt.date
) -> tuple[bytes, ...]:
    """PEM chain (leaf first) for a certificate naming `common_name` and `sans`."""
    start = dt.datetime.combine(valid_at, dt.time(), dt.UTC)
    not_before, not_after = start - dt.timedelta(days=40), start + dt.timedelta(days=50)
    if kind == "expired":
        not_before, not_after = start - dt.timedelta(days=455), start - dt.timedelta(days=90)
    elif kind == "not-yet-valid":
        not_before, not_after = start + dt.timedelta(days=30), start + dt.timedelta(days=400)
    key = _leaf_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .public_key(key.public_key())
        .serial_number(0x200000 + sum(common_name.encode()) % 0xFFFF)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False
        )
    pem = serialization.Encoding.PEM
    if kind == "self-signed":
        return (builder.issuer_name(subject).sign(key, hashes.SHA256()).public_bytes(pem),)
    ca = tls_handshakes.ca_certificate(valid_at)
    leaf = builder.issuer_name(ca.subject).sign(tls_handshakes._key("ca"), hashes.SHA256())
    return leaf.public_bytes(pem), ca.public_bytes(pem)


@functools.cache
def cert_handshake(
    sni: str,
    common_name: str,
    sans: tuple[str, ...],
    kind: CertKind,
    valid_at: dt.date,
    version: tls_handshakes.Version = "1.2",
    legacy_client: bool = False,
) -> tuple[tuple[bool, bytes], ...]:
    """Records of one in-memory OpenSSL handshake: (from_client, bytes) in order (cached)."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.maximum_version = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
    key_pem = _leaf_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with tempfile.TemporaryDirectory(prefix="tapetum-anomaly-") as directory:
        cert_path, key_path = Path(directory, "chain.pem"), Path(directory, "key.pem")
        cert_path.write_bytes(b"".join(certificate_chain(common_name, sans, kind, valid_at)))
        key_path.write_bytes(key_pem)
        server.load_cert_chain(cert_path, key_path)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE  # the certificates are bad on purpose
    if legacy_client:
        client.maximum_version = ssl.TLSVersion.TLSv1_2
        client.set_ciphers("ECDHE-RSA-AES256-GCM-SHA384:AES256-SHA")
    to_client, from_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    to_server, from_server = ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(to_client, from_client, server_hostname=sni)
    s = server.wrap_bio(to_server, from_server, server_side=True)
    flights: list[tuple[bool, bytes]] = []
    done = [False, False]
    sides = ((c, from_client, to_server), (s, from_server, to_client))
    for _ in range(8):
        moved = False
        for k, (end, out, peer_in) in enumerate(sides):
            if not done[k]:
                try:
                    end.do_handshake()
                    done[k] = True
                except ssl.SSLWantReadError:
                    pass
            data = out.read()
            if data:
                moved = True
                flights.append((k == 0, data))
                peer_in.write(data)
        if all(done) and not moved:
            break
    else:
        raise RuntimeError(f"TLS handshake for {sni} did not finish")
    return tuple(flights)


def tls_cert_session(
    ctx: Ctx,
    client: Host,
    server: Host,
    *,
    sni: str,
    cert_name: str | None = None,
    sans: tuple[str, ...] | None = None,
    cert_kind: CertKind = "ca",
    version: tls_handshakes.Version = "1.2",
    legacy_client: bool = False,
    port: int = 443,
    requests: int = 1,
) -> Iterator[Packet]:
    """TLS session whose server certificate names `cert_name` (default: the SNI) with `sans`
    (default: the certificate name), of the given kind, then encrypted request/responses."""
    name = cert_name or sni
    flights = cert_handshake(
        sni, name, (name,) if sans is None else sans, cert_kind, ctx.valid_at, version,
        legacy_client,
    )  # fmt: skip
    rng = ctx.rng
    conn = TcpConnection(ctx, client, server, port)
    yield from conn.open()
    for from_client, flight in flights:
        delay = rng.uniform(0.0001, 0.0006) if from_client else rng.uniform(0.0008, 0.003)
        yield from conn.send(flight, from_client=from_client, delay=delay)
    for _ in range(requests):
        size = rng.randint(200, 900)
        record = b"\x17\x03\x03" + size.to_bytes(2, "big") + ctx.noise.take(rng, size)
        yield from conn.send(record, from_client=True, delay=rng.uniform(0.0002, 0.5))
        size = rng.randint(500, 9000)
        record = b"\x17\x03\x03" + size.to_bytes(2, "big") + ctx.noise.take(rng, size)
        yield from conn.send(record, from_client=False, delay=rng.uniform(0.002, 0.05))
    yield from conn.close(by_client=True, delay=rng.uniform(0.05, 2.0))


def http_basic_auth_session(
    ctx: Ctx,
    client: Host,
    server: Host,
    *,
    host: str,
    user: str = "admin",
    password: str = "Winter2026!",
    path: str = "/admin/",
    port: int = 80,
    requests: int = 1,
) -> Iterator[Packet]:
    """HTTP/1.1 requests with `Authorization: Basic base64(user:password)` in cleartext."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    exchanges = []
    for _ in range(requests):
        request = http_request(ctx, host, path=path, agent="curl/8.5.0")
        request = request.replace(
            b"\r\nUser-Agent:", f"\r\nAuthorization: Basic {token}\r\nUser-Agent:".encode(), 1
        )
        response = b"".join(http_response(ctx, path, ctx.rng.randint(300, 3000), host=host))
        exchanges.append((request, response))
    yield from tcp_session(ctx, client, server, port, exchanges)
