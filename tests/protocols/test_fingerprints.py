"""JA4 and JA3 against published known answers, and the TLS parser on hand-built hellos.

JA4 vectors come from FoxIO's own material:
- technical_details/JA4.md (FoxIO-LLC/ja4 @ d8f731c): the worked example
  t13d1516h2_8daaf6152771_e5627efa2ab1, the cipher hash 8daaf6152771, the extension hash
  without signature algorithms 6d807ffa2a79, and the ALPN rules for non-alphanumeric bytes.
- rust/ja4/src/snapshots/ja4__insta@tls-handshake.pcapng.snap (FoxIO-LLC/ja4 @ fe727a5):
  stream 6 (mtalk.google.com, no ALPN, no ALPS) t13d151400_8daaf6152771_de4a06bb82e3 and
  stream 31 (edge-chat.facebook.com, ALPN http/1.1, pre_shared_key) t13d1517h1_8daaf6152771_
  6cdcb247c39b. The hellos are rebuilt from the example's cipher, extension and signature
  algorithm lists with the differences the fingerprints' counts show.
- python/test/testdata/sigalg-grease.pcapng.json (FoxIO-LLC/ja4 @ 53567a2):
  t13d1517h2_8daaf6152771_cb7bf5808d99, whose raw form lists every input; the capture has a
  GREASE signature algorithm, which JA4 ignores.
"""

from __future__ import annotations

import hashlib

import pytest

from tapetum.protocols.tls import (
    CIPHER_NAMES,
    ja3,
    ja3s,
    ja4,
    parse_client_hello,
    parse_server_hello,
)
from tests.protocols.helpers import client_hello, server_hello

CHROME_CIPHERS = [
    0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013, 0xC014,
    0x009C, 0x009D, 0x002F, 0x0035,
]  # fmt: skip
CHROME_EXTENSIONS = [
    0x001B, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002D, 0x000D, 0x0005, 0x0023, 0x0012,
    0x002B, 0xFF01, 0x000B, 0x000A, 0x0015,
]  # fmt: skip
CHROME_SIGALGS = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]


def _ja4(message: bytes, transport: str = "t") -> str:
    return ja4(parse_client_hello(message[4:]), transport)


def test_ja4_worked_example_of_the_specification() -> None:
    hello = client_hello(
        ciphers=CHROME_CIPHERS,
        extensions=CHROME_EXTENSIONS,
        sni="example.com",
        alpns=[b"h2", b"http/1.1"],
        versions=[0x0304, 0x0303],
        signature_algorithms=CHROME_SIGALGS,
    )
    assert _ja4(hello) == "t13d1516h2_8daaf6152771_e5627efa2ab1"


def test_ja4_hash_parts_of_the_specification() -> None:
    ciphers = "002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9"
    assert hashlib.sha256(ciphers.encode()).hexdigest()[:12] == "8daaf6152771"
    # Without signature algorithms the extension list is hashed alone: 6d807ffa2a79.
    hello = client_hello(
        ciphers=CHROME_CIPHERS,
        extensions=CHROME_EXTENSIONS,
        sni="example.com",
        alpns=[b"h2"],
        versions=[0x0304],
    )
    assert _ja4(hello).endswith("_6d807ffa2a79")


def test_ja4_without_alpn_matches_foxio_snapshot() -> None:
    hello = client_hello(
        ciphers=CHROME_CIPHERS,
        extensions=[e for e in CHROME_EXTENSIONS if e not in (0x0010, 0x4469)],
        sni="mtalk.google.com",
        versions=[0x0304, 0x0303],
        signature_algorithms=CHROME_SIGALGS,
    )
    assert _ja4(hello) == "t13d151400_8daaf6152771_de4a06bb82e3"


def test_ja4_with_pre_shared_key_matches_foxio_snapshot() -> None:
    hello = client_hello(
        ciphers=CHROME_CIPHERS,
        extensions=[*CHROME_EXTENSIONS, 0x0029],
        sni="edge-chat.facebook.com",
        alpns=[b"http/1.1"],
        versions=[0x0304, 0x0303],
        signature_algorithms=CHROME_SIGALGS,
    )
    assert _ja4(hello) == "t13d1517h1_8daaf6152771_6cdcb247c39b"


def test_ja4_ignores_grease_everywhere_as_in_foxio_sigalg_grease_capture() -> None:
    # Extension order and signature algorithms from JA4_ro of sigalg-grease.pcapng.json, with
    # GREASE values put back where Chrome sends them.
    extensions = [
        0x0A0A, 0xFE0D, 0x0010, 0x0017, 0x0033, 0x44CD, 0xFF01, 0x000A, 0x000D, 0x0023,
        0x002B, 0x000B, 0xCA34, 0x002D, 0x0000, 0x0005, 0x001B, 0x0012, 0x1A1A,
    ]  # fmt: skip
    sigalgs = [0x0A0A, 0x0904, 0x0905, 0x0906, *CHROME_SIGALGS]
    hello = client_hello(
        ciphers=[0x2A2A, *CHROME_CIPHERS],
        extensions=extensions,
        sni="optimizationguide-pa.googleapis.com",
        alpns=[b"h2", b"http/1.1"],
        versions=[0x3A3A, 0x0304, 0x0303],
        signature_algorithms=sigalgs,
        groups=[0x4A4A, 0x11EC, 0x001D, 0x0017, 0x0018],
    )
    assert _ja4(hello) == "t13d1517h2_8daaf6152771_cb7bf5808d99"


@pytest.mark.parametrize(
    ("alpn", "expected"),
    [
        # The examples of JA4.md's "ALPN Extension Value" section.
        (b"\xab", "ab"),
        (b"\xab\xcd", "ad"),
        (b"\x30\xab", "3b"),
        (b"\x30\x31\xab\xcd", "3d"),
        (b"\x30\xab\xcd\x31", "01"),
        (b"h2", "h2"),
        (b"http/1.1", "h1"),
        # "If the first ALPN value is only a single character, then that character is
        # treated as both the first and last character."
        (b"x", "xx"),
    ],
)
def test_ja4_alpn_characters_follow_the_specification(alpn: bytes, expected: str) -> None:
    hello = client_hello(ciphers=[0x1301], extensions=[0x0010], alpns=[alpn])
    assert _ja4(hello)[8:10] == expected


def test_ja4_edge_cases() -> None:
    # No SNI, no ciphers, no extensions, TLS 1.0, empty first ALPN value, QUIC marker.
    bare = client_hello(ciphers=[], extensions=[], legacy_version=0x0301)
    assert _ja4(bare) == "t10i000000_000000000000_000000000000"
    empty_alpn = client_hello(ciphers=[0x1301], extensions=[0x0010], alpns=[b"", b"h2"])
    assert _ja4(empty_alpn, "q").startswith("q12i010100_")
    # Drafts and other unknown versions are "00".
    draft = client_hello(ciphers=[0x1301], extensions=[0x002B], versions=[0x7F1D])
    assert _ja4(draft)[1:3] == "00"


def test_ja3_follows_the_salesforce_definition() -> None:
    hello = client_hello(
        ciphers=[0x0A0A, 0xC02B, 0x002F],
        extensions=[0x1A1A, 0x0000, 0x000A, 0x000B, 0x0010],
        sni="a.example",
        groups=[0x2A2A, 0x001D, 0x0017],
        point_formats=[0],
        alpns=[b"h2"],
    )
    text, digest = ja3(parse_client_hello(hello[4:]))
    assert text == "771,49195-47,0-10-11-16,29-23,0"
    assert digest == hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def test_server_hello_fields_and_ja3s() -> None:
    message = server_hello(
        cipher=0x1301,
        extensions=[(0x002B, b"\x03\x04"), (0x0033, b"\x00\x1d\x00\x00")],
    )
    hello = parse_server_hello(message[4:])
    assert hello.selected_version == 0x0304
    assert hello.cipher == 0x1301
    assert not hello.retry_request
    assert ja3s(hello)[0] == "771,4865,43-51"


def test_cipher_names_agree_with_wireshark(tshark_values: dict[int, str]) -> None:
    """Our IANA names for common suites are the ones Wireshark's table has."""
    differing = {
        code: (name, tshark_values.get(code))
        for code, name in CIPHER_NAMES.items()
        if tshark_values.get(code) != name
    }
    assert not differing


@pytest.fixture
def tshark_values() -> dict[int, str]:
    import shutil
    import subprocess

    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed")
    output = subprocess.run(
        [tshark, "-G", "values"], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    names: dict[int, str] = {}
    for line in output.splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and parts[0] == "V" and parts[1] == "tls.handshake.ciphersuite":
            names[int(parts[2])] = parts[3]
    return names
