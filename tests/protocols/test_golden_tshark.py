"""TLS and QUIC handshake metadata against tshark (Wireshark 4.0) on the NFStream captures.

For every TLS ClientHello tshark dissects on TCP we must have the flow's `TlsEvent` with the
same SNI, ALPN list and JA3 (string and MD5); for every ServerHello the same cipher suite,
version, ALPN and JA3S; for every Certificate message the first certificate's SHA-1, serial and
subject. For QUIC, tshark decrypts the client Initial packets as we do: same SNI, ALPN and JA3.

Explained exclusions: a ClientHello in SSLv2 record format (Skype, some old clients) has no JA3
in tshark and is not parsed by us; tshark shows those rows with an empty JA3 and they are
skipped. Flows we see and tshark does not (TLS on ports tshark has no heuristic for) are fine.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from tapetum.protocols.tls import CIPHER_NAMES
from tapetum.records import AppEvent, TlsEvent

TLS_CAPTURES = [
    "443-curl.pcap",
    "443-firefox.pcap",
    "443-git.pcap",
    "443-safari.pcap",
    "alexa-app.pcapng",
    "android.pcap",
    "dnscrypt-v2-doh.pcap",
    "google_ssl.pcap",
    "ja3_lots_of_cipher_suites.pcap",
    "long_tls_certificate.pcap",
    "selfsigned.pcap",
    "skype.pcap",
    "ssl-cert-name-mismatch.pcap",
    "tls-rdn-extract.pcap",
    "tls_certificate_too_long.pcap",
    "tls_esni_sni_both.pcap",
    "tls_long_cert.pcap",
    "tls_verylong_certificate.pcap",
    "webex.pcap",
    "wechat.pcap",
]

QUIC_CAPTURES = [
    "doq.pcapng",
    "doq_adguard.pcapng",
    "quic-23.pcap",
    "quic-24.pcap",
    "quic-27.pcap",
    "quic-28.pcap",
    "quic-29.pcap",
    "quic-33.pcapng",
    "quic-mvfst-22.pcap",
    "quic-mvfst-27.pcapng",
    "quic-mvfst-exp.pcap",
    "quic_0RTT.pcap",
    "quic_frags_ch_in_multiple_packets.pcapng",
    "quic_frags_ch_out_of_order_same_packet_craziness.pcapng",
    "quic_interop_V.pcapng",
    "quic_t50.pcap",
    "quic_t51.pcap",
]

VERSION_NAMES = {"0x0300": "SSLv3", "0x0301": "TLS 1.0", "0x0302": "TLS 1.1",
                 "0x0303": "TLS 1.2", "0x0304": "TLS 1.3"}  # fmt: skip
RDN_NAMES = {"CN": "id-at-commonName", "O": "id-at-organizationName",
             "OU": "id-at-organizationalUnitName", "C": "id-at-countryName",
             "L": "id-at-localityName", "ST": "id-at-stateOrProvinceName"}  # fmt: skip

Analyze = Callable[..., tuple[list[AppEvent], object]]
Tshark = Callable[[Path, str, list[str]], list[list[str]]]
FlowKey = tuple[str, int, str, int]


def _first(value: str) -> str:
    return value.split("|", 1)[0]


def _endpoints(row: list[str]) -> FlowKey:
    """(src, sport, dst, dport) from the first six fields: ip.src ipv6.src port ip.dst ..."""
    return (_first(row[0] or row[1]), int(_first(row[2])), _first(row[3] or row[4]),
            int(_first(row[5])))  # fmt: skip


ENDPOINT_FIELDS = ["ip.src", "ipv6.src", "tcp.srcport", "ip.dst", "ipv6.dst", "tcp.dstport"]


def _tls_events(events: list[AppEvent], transport: str) -> dict[FlowKey, TlsEvent]:
    """Events by (client, client port, server, server port), in both orientations."""
    found: dict[FlowKey, TlsEvent] = {}
    for event in events:
        if isinstance(event, TlsEvent) and event.transport == transport:
            f = event.flow
            found[(f.src_ip, f.src_port, f.dest_ip, f.dest_port)] = event
            found.setdefault((f.dest_ip, f.dest_port, f.src_ip, f.src_port), event)
    return found


@pytest.mark.parametrize("name", TLS_CAPTURES)
def test_tls_hellos_match_tshark(
    name: str, capture: Callable[..., Path], analyze_capture: Analyze, tshark: Tshark
) -> None:
    path = capture("nfstream", "pcaps", name)
    events, _ = analyze_capture(path)
    ours = _tls_events(events, "tls")
    fields = [
        *ENDPOINT_FIELDS,
        "tls.handshake.extensions_server_name",
        "tls.handshake.extensions_alpn_str",
        "tls.handshake.ja3_full",
        "tls.handshake.ja3",
    ]
    seen: set[FlowKey] = set()
    for row in tshark(path, "tls.handshake.type == 1 && tcp", fields):
        key = _endpoints(row)
        if key in seen:
            continue  # a later hello on the same connection (renegotiation)
        seen.add(key)
        sni, alpn, ja3_full, ja3_md5 = (_first(row[6]), row[7], _first(row[8]), _first(row[9]))
        if not ja3_full:
            continue  # SSLv2-format hello: no JA3 in tshark, not parsed by us
        event = ours.get(key)
        assert event is not None, f"no TLS event for {key}"
        assert (event.sni or "", list(event.client_alpns)) == (sni, alpn.split("|") if alpn else [])
        assert (event.ja3_string, event.ja3_hash) == (ja3_full, ja3_md5)
        assert event.ja4 is not None and event.ja4.startswith("t")
    assert seen

    fields = [
        *ENDPOINT_FIELDS,
        "tls.handshake.ciphersuite",
        "tls.handshake.ja3s_full",
        "tls.handshake.ja3s",
        "tls.handshake.extensions_alpn_str",
        "tls.handshake.extensions.supported_version",
        "tls.handshake.version",
    ]
    seen.clear()
    for row in tshark(path, "tls.handshake.type == 2 && tcp", fields):
        client = _endpoints(row)
        key = (client[2], client[3], client[0], client[1])
        if key in seen:
            continue
        seen.add(key)
        event = ours.get(key)
        assert event is not None, f"no TLS event for {key}"
        code = int(_first(row[6]), 16)
        version = _first(row[10]) or _first(row[11])
        assert event.cipher_suite == CIPHER_NAMES.get(code, f"0x{code:04x}")
        assert (event.ja3s_string, event.ja3s_hash) == (_first(row[7]), _first(row[8]))
        assert event.server_alpns == ((_first(row[9]),) if row[9] else ())
        assert event.version == VERSION_NAMES.get(version, version)  # else "0x7e02"-style


def _subject_as_wireshark(rfc4514: str) -> str:
    parts = re.split(r"(?<!\\),", rfc4514)
    out = []
    for part in parts:
        key, _, value = part.partition("=")
        out.append(f"{RDN_NAMES.get(key, key)}={value.replace(chr(92), '')}")
    return ",".join(out)


# Captures with a cleartext Certificate message (TLS 1.2 and older servers).
CERT_CAPTURES = [
    n for n in TLS_CAPTURES if n not in ("google_ssl.pcap", "skype.pcap", "tls_esni_sni_both.pcap")
]


@pytest.mark.parametrize("name", CERT_CAPTURES)
def test_tls_certificates_match_tshark(
    name: str,
    capture: Callable[..., Path],
    analyze_capture: Analyze,
    pdml: Callable[[Path, str], bytes],
) -> None:
    path = capture("nfstream", "pcaps", name)
    events, _ = analyze_capture(path)
    ours = _tls_events(events, "tls")
    root = ET.fromstring(pdml(path, "tls.handshake.type == 11 && tcp"))
    seen: set[FlowKey] = set()
    for packet in root.iter("packet"):
        shown = {
            f.get("name"): f.get("show")
            for f in packet.iter("field")
            if f.get("name") in ENDPOINT_FIELDS
        }
        row = [shown.get(n) or "" for n in ENDPOINT_FIELDS]
        server = _endpoints(row)
        key = (server[2], server[3], server[0], server[1])
        if key in seen:
            continue
        seen.add(key)
        der = next(f for f in packet.iter("field") if f.get("name") == "tls.handshake.certificate")
        signed = next(
            f for f in packet.iter("field") if f.get("name") == "x509af.signedCertificate_element"
        )
        serial = next(f for f in signed.iter("field") if f.get("name") == "x509af.serialNumber")
        subject = next(f for f in signed.iter("field") if f.get("name") == "x509af.rdnSequence")
        event = ours.get(key)
        assert event is not None, f"no TLS event for {key}"
        fingerprint = hashlib.sha1(bytes.fromhex(der.get("value", "")), usedforsecurity=False)
        assert event.fingerprint == fingerprint.digest().hex(":")
        assert (event.serial or "").lower() == serial.get("show")
        shown_subject = re.fullmatch(
            r"rdnSequence: \d+ items? \((.*)\)", subject.get("showname", "")
        )
        if shown_subject is not None and "…" not in shown_subject.group(1):
            assert _subject_as_wireshark(event.subject or "") == shown_subject.group(1)
    assert seen


@pytest.mark.parametrize("name", QUIC_CAPTURES)
def test_quic_client_hellos_match_tshark(
    name: str, capture: Callable[..., Path], analyze_capture: Analyze, tshark: Tshark
) -> None:
    path = capture("nfstream", "pcaps", name)
    events, _ = analyze_capture(path)
    ours = _tls_events(events, "quic")
    fields = [
        *["ip.src", "ipv6.src", "udp.srcport", "ip.dst", "ipv6.dst", "udp.dstport"],
        "tls.handshake.extensions_server_name",
        "tls.handshake.extensions_alpn_str",
        "tls.handshake.ja3_full",
    ]
    seen: set[FlowKey] = set()
    for row in tshark(path, "tls.handshake.type == 1 && udp", fields):
        key = _endpoints(row)
        if key in seen:
            continue
        seen.add(key)
        event = ours.get(key)
        assert event is not None, f"no QUIC event for {key}"
        assert (event.sni or "") == _first(row[6])
        assert list(event.client_alpns) == (row[7].split("|") if row[7] else [])
        assert event.ja3_string == _first(row[8])
        assert event.ja4 is not None and event.ja4.startswith("q")
    assert seen
