"""TLS handshake metadata: SNI, ALPN, versions, JA3/JA3S, JA4, and the server certificate.

Records are reassembled per direction (a handshake message may span records and TCP segments),
then handshake messages are cut out of the handshake byte stream. Parsing stops in a direction
at its ChangeCipherSpec or first application-data record: what follows is encrypted.

Fingerprints:
- JA3 / JA3S follow the Salesforce reference: decimal values joined by "-", GREASE values
  (RFC 8701) removed from ciphers, extensions and groups, MD5 of the string.
- JA4 follows the FoxIO specification (technical_details/JA4.md): GREASE ignored everywhere
  (also in signature algorithms, as FoxIO's implementations do since their fix d66336ef); the
  ALPN part uses the specification's rule for non-alphanumeric bytes (hex first/last
  characters) and for one-character values (the character twice). FoxIO's code has since
  diverged on these two edge cases ("9" for non-ASCII, "x0" for "x"); we follow the text.

One `TlsEvent` per flow: once the server's cleartext handshake is over (Certificate seen,
ServerHelloDone, TLS 1.3 negotiated, or the server switched to encryption), or at the end of the
flow with whatever was seen.
"""

from __future__ import annotations

import hashlib
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from tapetum.protocols._parser import BoundedCache, EventSink, MalformedError, Parser, printable
from tapetum.records import FlowRef, TlsEvent

#: RFC 8701 GREASE values: 0x0a0a, 0x1a1a, ... 0xfafa.
GREASE = frozenset(0x0A0A + 0x1010 * i for i in range(16))

EXT_SERVER_NAME = 0
EXT_SUPPORTED_GROUPS = 10
EXT_EC_POINT_FORMATS = 11
EXT_SIGNATURE_ALGORITHMS = 13
EXT_ALPN = 16
EXT_SUPPORTED_VERSIONS = 43

#: ServerHello.random of a HelloRetryRequest (RFC 8446 section 4.1.3).
HELLO_RETRY_RANDOM = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
)

#: Largest TLS record body accepted (2**14 plus the ciphertext expansion allowance).
MAX_RECORD = 2**14 + 2048

_HEADER_HH = struct.Struct("!HH").unpack_from

VERSION_NAMES: dict[int, str] = {
    0x0002: "SSLv2",
    0x0200: "SSLv2",
    0x0300: "SSLv3",
    0x0301: "TLS 1.0",
    0x0302: "TLS 1.1",
    0x0303: "TLS 1.2",
    0x0304: "TLS 1.3",
    0xFEFF: "DTLS 1.0",
    0xFEFD: "DTLS 1.2",
    0xFEFC: "DTLS 1.3",
}

_JA4_VERSIONS: dict[int, str] = {
    0x0304: "13",
    0x0303: "12",
    0x0302: "11",
    0x0301: "10",
    0x0300: "s3",
    0x0002: "s2",
    0xFEFF: "d1",
    0xFEFD: "d2",
    0xFEFC: "d3",
}

#: IANA names of the cipher suites seen in practice; others are shown as "0x1234".
CIPHER_NAMES: dict[int, str] = {
    0x0000: "TLS_NULL_WITH_NULL_NULL",
    0x0004: "TLS_RSA_WITH_RC4_128_MD5",
    0x0005: "TLS_RSA_WITH_RC4_128_SHA",
    0x000A: "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    0x0013: "TLS_DHE_DSS_WITH_3DES_EDE_CBC_SHA",
    0x0016: "TLS_DHE_RSA_WITH_3DES_EDE_CBC_SHA",
    0x002F: "TLS_RSA_WITH_AES_128_CBC_SHA",
    0x0032: "TLS_DHE_DSS_WITH_AES_128_CBC_SHA",
    0x0033: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
    0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA",
    0x0038: "TLS_DHE_DSS_WITH_AES_256_CBC_SHA",
    0x0039: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA",
    0x003C: "TLS_RSA_WITH_AES_128_CBC_SHA256",
    0x003D: "TLS_RSA_WITH_AES_256_CBC_SHA256",
    0x0040: "TLS_DHE_DSS_WITH_AES_128_CBC_SHA256",
    0x0041: "TLS_RSA_WITH_CAMELLIA_128_CBC_SHA",
    0x0067: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256",
    0x006A: "TLS_DHE_DSS_WITH_AES_256_CBC_SHA256",
    0x006B: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256",
    0x0084: "TLS_RSA_WITH_CAMELLIA_256_CBC_SHA",
    0x0088: "TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA",
    0x009C: "TLS_RSA_WITH_AES_128_GCM_SHA256",
    0x009D: "TLS_RSA_WITH_AES_256_GCM_SHA384",
    0x009E: "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
    0x009F: "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    0x00A2: "TLS_DHE_DSS_WITH_AES_128_GCM_SHA256",
    0x00A3: "TLS_DHE_DSS_WITH_AES_256_GCM_SHA384",
    0x00FF: "TLS_EMPTY_RENEGOTIATION_INFO_SCSV",
    0x1301: "TLS_AES_128_GCM_SHA256",
    0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256",
    0x1304: "TLS_AES_128_CCM_SHA256",
    0x1305: "TLS_AES_128_CCM_8_SHA256",
    0x5600: "TLS_FALLBACK_SCSV",
    0xC004: "TLS_ECDH_ECDSA_WITH_AES_128_CBC_SHA",
    0xC005: "TLS_ECDH_ECDSA_WITH_AES_256_CBC_SHA",
    0xC007: "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    0xC008: "TLS_ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA",
    0xC009: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    0xC00A: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    0xC00E: "TLS_ECDH_RSA_WITH_AES_128_CBC_SHA",
    0xC00F: "TLS_ECDH_RSA_WITH_AES_256_CBC_SHA",
    0xC011: "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    0xC012: "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    0xC013: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    0xC014: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    0xC023: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    0xC024: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    0xC025: "TLS_ECDH_ECDSA_WITH_AES_128_CBC_SHA256",
    0xC026: "TLS_ECDH_ECDSA_WITH_AES_256_CBC_SHA384",
    0xC027: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    0xC028: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
    0xC029: "TLS_ECDH_RSA_WITH_AES_128_CBC_SHA256",
    0xC02A: "TLS_ECDH_RSA_WITH_AES_256_CBC_SHA384",
    0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    0xC02C: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    0xC02D: "TLS_ECDH_ECDSA_WITH_AES_128_GCM_SHA256",
    0xC02E: "TLS_ECDH_ECDSA_WITH_AES_256_GCM_SHA384",
    0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    0xC031: "TLS_ECDH_RSA_WITH_AES_128_GCM_SHA256",
    0xC032: "TLS_ECDH_RSA_WITH_AES_256_GCM_SHA384",
    0xC09C: "TLS_RSA_WITH_AES_128_CCM",
    0xC09D: "TLS_RSA_WITH_AES_256_CCM",
    0xC0AC: "TLS_ECDHE_ECDSA_WITH_AES_128_CCM",
    0xC0AD: "TLS_ECDHE_ECDSA_WITH_AES_256_CCM",
    0xC0AE: "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8",
    0xC0AF: "TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8",
    0xCCA8: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCA9: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCAA: "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
}


def version_name(version: int) -> str:
    name = VERSION_NAMES.get(version)
    if name is not None:
        return name
    if version & 0xFF00 == 0x7F00:  # TLS 1.3 drafts
        return f"TLS 1.3 draft {version & 0xFF}"
    return f"0x{version:04x}"


def cipher_name(cipher: int) -> str:
    return CIPHER_NAMES.get(cipher) or f"0x{cipher:04x}"


_U16_LISTS: dict[int, Callable[[bytes, int], tuple[int, ...]]] = {}


def _u16_list(data: bytes, off: int, length: int) -> tuple[int, ...]:
    if length & 1:
        raise MalformedError("odd length for a list of 16-bit values")
    unpack = _U16_LISTS.get(length)
    if unpack is None:
        unpack = struct.Struct(f"!{length >> 1}H").unpack_from
        if len(_U16_LISTS) < 512:  # compiled formats for the lengths seen, a bounded memo
            _U16_LISTS[length] = unpack
    return unpack(data, off)


class ClientHello(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A ClientHello's fields that events read.

    (A Struct: one is built per handshake. Its fields hold only numbers, text and bytes, so
    the garbage collector need not track it.)
    """

    legacy_version: int
    ciphers: tuple[int, ...]
    #: Extension types in the order sent, GREASE included.
    extensions: tuple[int, ...]
    sni: str | None
    alpns: tuple[bytes, ...]
    supported_versions: tuple[int, ...]
    groups: tuple[int, ...]
    point_formats: tuple[int, ...]
    signature_algorithms: tuple[int, ...]


class ServerHello(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    legacy_version: int
    cipher: int
    extensions: tuple[int, ...]
    #: From supported_versions when present, else the legacy version.
    selected_version: int
    alpn: bytes | None
    retry_request: bool


#: The ClientHello extensions whose content is read; the others are only listed.
_CLIENT_EXTENSIONS_READ = frozenset(
    (
        EXT_SERVER_NAME,
        EXT_ALPN,
        EXT_SUPPORTED_VERSIONS,
        EXT_SUPPORTED_GROUPS,
        EXT_EC_POINT_FORMATS,
        EXT_SIGNATURE_ALGORITHMS,
    )
)


def parse_client_hello(body: bytes) -> ClientHello:
    """Parse a ClientHello handshake body (after the 4-byte handshake header)."""
    n = len(body)
    if n < 35:
        raise MalformedError(f"ClientHello of {n} bytes is too short")
    legacy = (body[0] << 8) | body[1]
    off = 35 + body[34]  # after the session id
    if off + 2 > n:
        raise MalformedError("ClientHello truncated before its cipher suites")
    cs_len = (body[off] << 8) | body[off + 1]
    off += 2
    if off + cs_len > n:
        raise MalformedError("ClientHello cipher suites run past the message")
    ciphers = _u16_list(body, off, cs_len)
    off += cs_len
    if off >= n:
        raise MalformedError("ClientHello truncated before its compression methods")
    off += 1 + body[off]
    if off > n:
        raise MalformedError("ClientHello compression methods run past the message")
    extensions: list[int] = []
    sni: str | None = None
    alpns: list[bytes] = []
    versions: tuple[int, ...] = ()
    groups: tuple[int, ...] = ()
    point_formats: tuple[int, ...] = ()
    sig_algs: tuple[int, ...] = ()
    if off + 2 <= n:
        ext_end = off + 2 + ((body[off] << 8) | body[off + 1])
        off += 2
        if ext_end > n:
            raise MalformedError("ClientHello extensions run past the message")
        add_extension = extensions.append
        while off + 4 <= ext_end:
            etype, elen = _HEADER_HH(body, off)
            off += 4
            stop = off + elen
            if stop > ext_end:
                raise MalformedError(f"extension {etype} runs past the extension block")
            add_extension(etype)
            if etype not in _CLIENT_EXTENSIONS_READ:
                off = stop
                continue
            # (Lengths are read with arithmetic and `min` spelled out: this runs per handshake.)
            if etype == EXT_SERVER_NAME and elen >= 5 and sni is None:
                # server_name_list: (name_type, host_name) entries; take the first host_name.
                pos = off + 2
                list_end = pos + ((body[off] << 8) | body[off + 1])
                if list_end > stop:
                    list_end = stop
                while pos + 3 <= list_end:
                    name_type = body[pos]
                    name_len = (body[pos + 1] << 8) | body[pos + 2]
                    pos += 3
                    if pos + name_len > list_end:
                        raise MalformedError("server name runs past its extension")
                    if name_type == 0:
                        sni = printable(body[pos : pos + name_len])
                        break
                    pos += name_len
            elif etype == EXT_ALPN and elen >= 2:
                pos = off + 2
                list_end = pos + ((body[off] << 8) | body[off + 1])
                if list_end > stop:
                    list_end = stop
                while pos < list_end:
                    plen = body[pos]
                    pos += 1
                    if pos + plen > list_end:
                        raise MalformedError("ALPN protocol runs past its extension")
                    alpns.append(body[pos : pos + plen])
                    pos += plen
            elif etype == EXT_SUPPORTED_VERSIONS and elen >= 1:
                size = body[off]
                versions = _u16_list(body, off + 1, size if size < elen else elen - 1)
            elif etype == EXT_SUPPORTED_GROUPS and elen >= 2:
                size = (body[off] << 8) | body[off + 1]
                groups = _u16_list(body, off + 2, size if size < elen - 1 else elen - 2)
            elif etype == EXT_EC_POINT_FORMATS and elen >= 1:
                size = body[off]
                point_formats = tuple(body[off + 1 : off + 1 + (size if size < elen else elen - 1)])
            elif etype == EXT_SIGNATURE_ALGORITHMS and elen >= 2:
                size = (body[off] << 8) | body[off + 1]
                sig_algs = _u16_list(body, off + 2, size if size < elen - 1 else elen - 2)
            off = stop
    return ClientHello(
        legacy_version=legacy,
        ciphers=ciphers,
        extensions=tuple(extensions),
        sni=sni,
        alpns=tuple(alpns),
        supported_versions=versions,
        groups=groups,
        point_formats=point_formats,
        signature_algorithms=sig_algs,
    )


def parse_server_hello(body: bytes) -> ServerHello:
    """Parse a ServerHello handshake body (after the 4-byte handshake header)."""
    n = len(body)
    if n < 38:
        raise MalformedError(f"ServerHello of {n} bytes is too short")
    legacy = (body[0] << 8) | body[1]
    retry = body[2:34] == HELLO_RETRY_RANDOM
    off = 35 + body[34]  # after the session id
    if off + 3 > n:
        raise MalformedError("ServerHello truncated before its cipher suite")
    cipher = (body[off] << 8) | body[off + 1]
    off += 3  # cipher suite and compression method
    extensions: list[int] = []
    selected = legacy
    alpn: bytes | None = None
    if off + 2 <= n:
        ext_end = off + 2 + ((body[off] << 8) | body[off + 1])
        off += 2
        if ext_end > n:
            raise MalformedError("ServerHello extensions run past the message")
        while off + 4 <= ext_end:
            etype, elen = _HEADER_HH(body, off)
            off += 4
            stop = off + elen
            if stop > ext_end:
                raise MalformedError(f"extension {etype} runs past the extension block")
            extensions.append(etype)
            if etype == EXT_SUPPORTED_VERSIONS and elen == 2:
                selected = (body[off] << 8) | body[off + 1]
            elif etype == EXT_ALPN and elen >= 3:
                plen = body[off + 2]
                if off + 3 + plen <= stop:
                    alpn = body[off + 3 : off + 3 + plen]
            off = stop
    return ServerHello(
        legacy_version=legacy,
        cipher=cipher,
        extensions=tuple(extensions),
        selected_version=selected,
        alpn=alpn,
        retry_request=retry,
    )


def _dash(values: tuple[int, ...] | list[int]) -> str:
    return "-".join(map(str, values))


def ja3(hello: ClientHello) -> tuple[str, str]:
    """JA3 string and its MD5 (Salesforce): version,ciphers,extensions,groups,point formats."""
    text = ",".join(
        (
            str(hello.legacy_version),
            _dash([c for c in hello.ciphers if c not in GREASE]),
            _dash([e for e in hello.extensions if e not in GREASE]),
            _dash([g for g in hello.groups if g not in GREASE]),
            _dash(hello.point_formats),
        )
    )
    return text, hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def ja3s(hello: ServerHello) -> tuple[str, str]:
    """JA3S string and its MD5 (Salesforce): version,cipher,extensions."""
    text = f"{hello.legacy_version},{hello.cipher},{_dash(hello.extensions)}"
    return text, hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _isalnum(byte: int) -> bool:
    return 0x30 <= byte <= 0x39 or 0x41 <= byte <= 0x5A or 0x61 <= byte <= 0x7A


def _ja4_alpn(alpns: tuple[bytes, ...]) -> str:
    if not alpns or not alpns[0]:
        return "00"
    value = alpns[0]
    first, last = value[0], value[-1]
    if _isalnum(first) and _isalnum(last):
        return chr(first) + chr(last)
    hexed = value.hex()
    return hexed[0] + hexed[-1]


def _hash12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def ja4(hello: ClientHello, transport: str = "t") -> str:
    """JA4 per the FoxIO specification; `transport` is "t" (TCP), "q" (QUIC) or "d" (DTLS)."""
    versions = [v for v in hello.supported_versions if v not in GREASE]
    version = max(versions) if versions else hello.legacy_version
    ciphers = [c for c in hello.ciphers if c not in GREASE]
    extensions = [e for e in hello.extensions if e not in GREASE]
    sig_algs = [s for s in hello.signature_algorithms if s not in GREASE]
    part_a = (
        f"{transport}{_JA4_VERSIONS.get(version, '00')}"
        f"{'d' if EXT_SERVER_NAME in extensions else 'i'}"
        f"{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}{_ja4_alpn(hello.alpns)}"
    )
    part_b = _hash12(",".join(sorted(f"{c:04x}" for c in ciphers))) if ciphers else "0" * 12
    hashed_exts = sorted(f"{e:04x}" for e in extensions if e not in (EXT_SERVER_NAME, EXT_ALPN))
    if hashed_exts:
        text = ",".join(hashed_exts)
        if sig_algs:
            text += "_" + ",".join(f"{s:04x}" for s in sig_algs)
        part_c = _hash12(text)
    else:
        part_c = "0" * 12
    return f"{part_a}_{part_b}_{part_c}"


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    subject: str | None
    issuerdn: str | None
    serial: str | None
    fingerprint: str
    notbefore: str | None
    notafter: str | None
    self_signed: bool | None
    san: tuple[str, ...]
    #: Fields that could not be decoded (hostile or broken DER).
    problems: tuple[str, ...] = ()


def _colon_hex(raw: bytes, upper: bool) -> str:
    text = raw.hex(":")
    return text.upper() if upper else text


def parse_certificate(der: bytes) -> CertificateInfo:
    """Describe one DER certificate the way Suricata's `tls` event does.

    Raises `MalformedError` when the DER does not parse at all; a field that cannot be decoded
    is None and named in `problems`.
    """
    fingerprint = _colon_hex(hashlib.sha1(der, usedforsecurity=False).digest(), upper=False)
    problems: list[str] = []

    def read(what: str, get: Callable[[], _T]) -> _T | None:
        # cryptography decodes fields lazily and, on hostile DER, may raise more than
        # ValueError (KeyError for unknown string tags, for one): any failure is a problem
        # with this field of this certificate, nothing more.
        try:
            return get()
        except Exception as exc:
            problems.append(f"certificate {what} undecodable ({type(exc).__name__})")
            return None

    # cryptography warns about some RFC 5280 violations (negative serials...): not our news.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cert = x509.load_der_x509_certificate(der)
        except Exception as exc:  # ValueError, x509.InvalidVersion...: the same to us
            raise MalformedError(f"certificate does not parse: {exc}") from None
        subject = read("subject", lambda: cert.subject.rfc4514_string())
        issuer = read("issuer", lambda: cert.issuer.rfc4514_string())
        serial = read("serial", lambda: _serial_text(cert.serial_number))
        notbefore = read("notBefore", lambda: cert.not_valid_before_utc.strftime(_TIME))
        notafter = read("notAfter", lambda: cert.not_valid_after_utc.strftime(_TIME))
        san = read("subjectAltName", lambda: _dns_names(cert)) or ()
        self_signed = read("signature", lambda: _self_signed(cert))
    return CertificateInfo(
        subject=subject,
        issuerdn=issuer,
        serial=serial,
        fingerprint=fingerprint,
        notbefore=notbefore,
        notafter=notafter,
        self_signed=self_signed,
        san=san,
        problems=tuple(problems),
    )


_TIME = "%Y-%m-%dT%H:%M:%S"
_T = TypeVar("_T")


def _dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return tuple(ext.value.get_values_for_type(x509.DNSName))


def _serial_text(serial: int) -> str:
    # The DER INTEGER's content octets (with the leading 00 of a positive number whose top
    # bit is set), colon separated and upper case, as Suricata prints them.
    raw = serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True)
    return _colon_hex(raw, upper=True)


#: Distinct certificates, client and server hello fingerprints remembered per analyzer.
MEMO_ENTRIES = 4096
#: Rough bytes the remembered values of each kind may hold.
MEMO_BYTES = 16 * 2**20

#: The fingerprint-derived fields of an event for one ClientHello: JA3 string and hash, JA4,
#: client versions and ALPNs.
_ClientPrint = tuple[str, str, str, tuple[str, ...], tuple[str, ...]]
#: The same for a ServerHello: JA3S string and hash, version name, cipher name, ALPN.
_ServerPrint = tuple[str, str, str, str, tuple[str, ...]]


class TlsMemo:
    """What many flows repeat, computed once per analyzer: servers reuse certificates (the
    signature check of a self-signed one is the costly part), and clients of one kind share
    one fingerprint. Keys are exact inputs (a SHA-256 of the certificate's DER, the hello
    fields that fingerprints read), so a hit returns what computing afresh would."""

    __slots__ = ("certificates", "clients", "servers")

    def __init__(self) -> None:
        #: SHA-256 of the DER -> its description, or the message of the error it raised.
        self.certificates: BoundedCache[bytes, CertificateInfo | str] = BoundedCache(
            MEMO_ENTRIES, MEMO_BYTES
        )
        self.clients: BoundedCache[tuple[object, ...], _ClientPrint] = BoundedCache(
            MEMO_ENTRIES, MEMO_BYTES
        )
        self.servers: BoundedCache[tuple[object, ...], _ServerPrint] = BoundedCache(
            MEMO_ENTRIES, MEMO_BYTES
        )

    @staticmethod
    def of(sink: EventSink) -> TlsMemo:
        """The memo of the analyzer that owns `sink`."""
        return sink.memo(TlsMemo)

    def certificate(self, der: bytes) -> CertificateInfo:
        """`parse_certificate(der)`, remembered."""
        key = hashlib.sha256(der).digest()
        known = self.certificates.get(key)
        if known is None:
            try:
                known = parse_certificate(der)
            except MalformedError as exc:
                known = str(exc)
                self.certificates.put(key, known, 256 + len(known))
                raise
            self.certificates.put(key, known, 1024 + 2 * len(der) + 64 * len(known.san))
        elif isinstance(known, str):
            raise MalformedError(known)
        return known


def _client_print(hello: ClientHello, ja4_transport: str) -> _ClientPrint:
    ja3_string, ja3_hash = ja3(hello)
    listed = [v for v in hello.supported_versions if v not in GREASE]
    return (
        ja3_string,
        ja3_hash,
        ja4(hello, ja4_transport),
        tuple(version_name(v) for v in (listed or [hello.legacy_version])),
        tuple(printable(a) for a in hello.alpns),
    )


def _server_print(hello: ServerHello) -> _ServerPrint:
    ja3s_string, ja3s_hash = ja3s(hello)
    return (
        ja3s_string,
        ja3s_hash,
        version_name(hello.selected_version),
        cipher_name(hello.cipher),
        (printable(hello.alpn),) if hello.alpn is not None else (),
    )


def _self_signed(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except InvalidSignature:
        return False
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return True  # names match; the signature cannot be checked with this key type
    return True


class Handshake:
    """What one TLS (or QUIC) handshake has shown so far, and the event it makes."""

    __slots__ = (
        "cert",
        "cert_seen",
        "client_hello",
        "server_hello",
        "ts_ns",
    )

    def __init__(self) -> None:
        self.ts_ns: int | None = None
        self.client_hello: ClientHello | None = None
        self.server_hello: ServerHello | None = None
        self.cert: CertificateInfo | None = None
        self.cert_seen = False

    @property
    def seen_anything(self) -> bool:
        return self.client_hello is not None or self.server_hello is not None

    def event(self, flow: FlowRef, transport: str, memo: TlsMemo | None = None) -> TlsEvent:
        """The event of this handshake; `memo` remembers fingerprints across flows."""
        ch = self.client_hello
        sh = self.server_hello
        cert = self.cert
        ja3_string = ja3_hash = ja3s_string = ja3s_hash = ja4_text = None
        version = cipher_suite = None
        client_versions: tuple[str, ...] = ()
        client_alpns: tuple[str, ...] = ()
        server_alpns: tuple[str, ...] = ()
        if ch is not None:
            ja4_transport = "q" if transport == "quic" else "t"
            if memo is None:
                client = _client_print(ch, ja4_transport)
            else:
                key = (
                    ja4_transport,
                    ch.legacy_version,
                    ch.ciphers,
                    ch.extensions,
                    ch.alpns,
                    ch.supported_versions,
                    ch.groups,
                    ch.point_formats,
                    ch.signature_algorithms,
                )
                known = memo.clients.get(key)
                if known is None:
                    client = _client_print(ch, ja4_transport)
                    weight = 512 + 64 * (
                        len(ch.ciphers)
                        + len(ch.extensions)
                        + len(ch.alpns)
                        + len(ch.supported_versions)
                        + len(ch.groups)
                        + len(ch.point_formats)
                        + len(ch.signature_algorithms)
                    )
                    memo.clients.put(key, client, weight + 2 * sum(map(len, ch.alpns)))
                else:
                    client = known
            ja3_string, ja3_hash, ja4_text, client_versions, client_alpns = client
        if sh is not None:
            if memo is None:
                server = _server_print(sh)
            else:
                skey = (sh.legacy_version, sh.cipher, sh.extensions, sh.selected_version, sh.alpn)
                known_server = memo.servers.get(skey)
                if known_server is None:
                    server = _server_print(sh)
                    weight = 512 + 64 * len(sh.extensions) + 2 * len(sh.alpn or b"")
                    memo.servers.put(skey, server, weight)
                else:
                    server = known_server
            ja3s_string, ja3s_hash, version, cipher_suite, server_alpns = server
        return TlsEvent(
            ts_ns=self.ts_ns if self.ts_ns is not None else 0,
            flow=flow,
            sni=ch.sni if ch is not None else None,
            version=version,
            client_versions=client_versions,
            cipher_suite=cipher_suite,
            client_alpns=client_alpns,
            server_alpns=server_alpns,
            ja3_hash=ja3_hash,
            ja3_string=ja3_string,
            ja3s_hash=ja3s_hash,
            ja3s_string=ja3s_string,
            ja4=ja4_text,
            subject=cert.subject if cert else None,
            issuerdn=cert.issuerdn if cert else None,
            serial=cert.serial if cert else None,
            fingerprint=cert.fingerprint if cert else None,
            notbefore=cert.notbefore if cert else None,
            notafter=cert.notafter if cert else None,
            self_signed=cert.self_signed if cert else None,
            san=cert.san if cert else (),
            transport=transport,
        )


def looks_like_tls(data: bytes) -> bool:
    """A handshake record header: content type 22, version 3.0 to 3.4."""
    return len(data) >= 3 and data[0] == 0x16 and data[1] == 0x03 and data[2] <= 0x04


class _Direction:
    __slots__ = ("handshake", "records", "stopped")

    def __init__(self) -> None:
        self.records = bytearray()
        self.handshake = bytearray()
        self.stopped = False


#: Handshake message types that may appear in cleartext (RFC 5246, 8446, 6066).
_KNOWN_HANDSHAKE_TYPES = frozenset((0, 1, 2, 3, 4, 5, 6, 8, 11, 12, 13, 14, 15, 16, 20, 21, 22))


class TlsParser(Parser):
    """TLS over TCP: record and handshake reassembly per direction."""

    name = "tls"
    __slots__ = (
        "_client",
        "_hs",
        "_memo",
        "_orig_is_client",
        "_server",
        "_server_flight_over",
    )

    def __init__(self, sink: EventSink, flow: FlowRef, flow_uid: int, max_bytes: int) -> None:
        super().__init__(sink, flow, flow_uid, max_bytes)
        self._memo = TlsMemo.of(sink)
        self._client = _Direction()
        self._server = _Direction()
        self._hs = Handshake()
        self._server_flight_over = False
        self._orig_is_client: bool | None = None

    def tcp_data(self, from_orig: bool, data: bytes, ts_ns: int) -> None:
        if self._orig_is_client is None:
            # Which side is the client is read from the first handshake message, so a flow
            # whose first packet seen came from the server is still read right.
            server_first = len(data) > 5 and data[0] == 0x16 and data[5] == 2
            self._orig_is_client = from_orig != server_first
        from_client = from_orig == self._orig_is_client
        d = self._client if from_client else self._server
        if d.stopped:
            return
        hs = self._hs
        if hs.ts_ns is None:
            hs.ts_ns = ts_ns
        records = d.records
        # Records are cut out of `data` itself when nothing is pending (the usual case); only
        # an incomplete record is copied into the direction's buffer.
        if records:
            records += data
            buf: bytes | bytearray = records
        else:
            buf = data
        pos = 0
        size = len(buf)
        while size - pos >= 5 and not d.stopped:
            ctype = buf[pos]
            length = (buf[pos + 3] << 8) | buf[pos + 4]
            if ctype < 20 or ctype > 24 or buf[pos + 1] != 3:
                self._stop(d, f"bytes that are not a TLS record (type {ctype})")
                break
            if length > MAX_RECORD:
                self._stop(d, f"TLS record of {length} bytes exceeds the maximum")
                break
            if size - pos - 5 < length:
                break
            start = pos + 5
            pos = start + length
            if ctype == 22:
                handshake = d.handshake
                if handshake:
                    handshake += buf[start:pos]
                    done = self._handshake_messages(d, from_client, handshake, 0, len(handshake))
                    if done > 0:
                        del handshake[:done]
                else:
                    done = self._handshake_messages(d, from_client, buf, start, pos)
                    if 0 <= done < pos:
                        handshake += buf[done:pos]
            elif ctype == 23 or (ctype == 20 and (from_client or hs.server_hello)):
                # ChangeCipherSpec or application data: the rest of this direction is
                # encrypted. (A server's CCS before its final ServerHello is TLS 1.3's
                # middlebox-compatibility dummy after a HelloRetryRequest: read on.)
                d.stopped = True
                if not from_client:
                    self._server_flight_over = True
        if d.stopped:
            self._quiet_stop(d)
        elif buf is records:
            del records[:pos]
        elif pos < size:
            records += buf[pos:]
        if hs.server_hello is not None and (hs.cert_seen or self._server_flight_over):
            self._emit()  # the server's cleartext handshake is over

    def _stop(self, d: _Direction, reason: str) -> None:
        self._quiet_stop(d)
        self.malformed(reason)

    @staticmethod
    def _quiet_stop(d: _Direction) -> None:
        d.stopped = True
        d.records = bytearray()
        d.handshake = bytearray()

    def _handshake_messages(
        self, d: _Direction, from_client: bool, hs: bytes | bytearray, pos: int, size: int
    ) -> int:
        """Read the complete handshake messages in `hs[pos:size]`; return where the first
        incomplete one starts, or -1 when the direction stopped."""
        while size - pos >= 4:
            mtype = hs[pos]
            mlen = (hs[pos + 1] << 16) | (hs[pos + 2] << 8) | hs[pos + 3]
            if mtype not in _KNOWN_HANDSHAKE_TYPES:
                self._stop(d, f"unknown handshake message type {mtype}")
                return -1
            if size - pos - 4 < mlen:
                if mtype == 11 and not from_client and not self._hs.cert_seen:
                    # A long chain need not be complete: the first certificate is enough.
                    try:
                        self._early_certificate(hs, pos + 4, size)
                    except MalformedError as exc:
                        self._stop(d, str(exc))
                        return -1
                    if self._hs.cert_seen:
                        self._quiet_stop(d)
                        return -1
                    over_limit = size - pos > self.max_bytes
                else:
                    over_limit = mlen > self.max_bytes
                if over_limit:
                    self.sink.bump("tls_message_over_byte_limit")
                    self._quiet_stop(d)
                    return -1
                break
            body = bytes(hs[pos + 4 : pos + 4 + mlen])
            pos += 4 + mlen
            try:
                self._message(mtype, body, from_client)
            except MalformedError as exc:
                self._stop(d, str(exc))
                return -1
            if d.stopped:
                return -1
        return pos

    def _message(self, mtype: int, body: bytes, from_client: bool) -> None:
        hs = self._hs
        if from_client:
            if mtype == 1 and hs.client_hello is None:
                hs.client_hello = parse_client_hello(body)
            return
        if mtype == 2:
            sh = parse_server_hello(body)
            if not sh.retry_request:
                hs.server_hello = sh
                if sh.selected_version == 0x0304 or sh.selected_version & 0xFF00 == 0x7F00:
                    self._server_flight_over = True  # the rest is encrypted
        elif mtype == 11 and not hs.cert_seen:
            self._certificate(body)
        elif mtype == 14:  # ServerHelloDone
            self._server_flight_over = True

    def _certificate(self, body: bytes) -> None:
        self._hs.cert_seen = True
        if len(body) < 6:
            return  # an empty chain
        cert_len = (body[3] << 16) | (body[4] << 8) | body[5]
        if 6 + cert_len > len(body):
            raise MalformedError("certificate runs past its message")
        cert = self._hs.cert = self._memo.certificate(body[6 : 6 + cert_len])
        if cert.problems:
            self.malformed("; ".join(cert.problems))

    def _early_certificate(self, hs: bytes | bytearray, start: int, size: int) -> None:
        # Copies the bytes only once the first certificate is complete: a chain sent in tiny
        # records must not cost a copy of the growing buffer per record.
        if size - start < 6:
            return
        cert_len = (hs[start + 3] << 16) | (hs[start + 4] << 8) | hs[start + 5]
        if 6 + cert_len <= size - start:
            self._certificate(bytes(hs[start : start + 6 + cert_len]))

    def _emit(self) -> None:
        if not self.done:
            self.done = True
            if self._hs.seen_anything:
                self.sink.emit("tls", self._hs.event(self.flow, "tls", self._memo))

    def tcp_gap(self, from_orig: bool) -> None:
        from_client = from_orig == (self._orig_is_client is not False)
        self._quiet_stop(self._client if from_client else self._server)

    def end(self) -> None:
        self._emit()
