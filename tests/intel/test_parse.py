"""Reading indicator files: STIX 2.1 bundles and plain lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tapetum.errors import InputError
from tapetum.intel.indicators import detect, normalize
from tapetum.intel.parse import parse_file
from tests.intel.helpers import CREATED, bundle, indicator, sid

JA3 = "e7d705a3286e19ea42f587b344ee6865"
JA4 = "t13d1516h2_8daaf6152771_b0da82dd1658"
SHA1 = "3b:78:0f:37:6c:ef:d5:ec:19:34:97:a3:c8:4a:b2:1a:33:4e:c0:c4"


def _stix(tmp: Path) -> Path:
    attack = {
        "type": "attack-pattern",
        "spec_version": "2.1",
        "id": sid("attack-pattern", 50),
        "created": CREATED,
        "modified": CREATED,
        "name": "Application Layer Protocol",
        "external_references": [{"source_name": "mitre-attack", "external_id": "T1071.001"}],
    }
    relation = {
        "type": "relationship",
        "spec_version": "2.1",
        "id": sid("relationship", 51),
        "created": CREATED,
        "modified": CREATED,
        "relationship_type": "indicates",
        "source_ref": sid("indicator", 1),
        "target_ref": sid("attack-pattern", 50),
    }
    objects = [
        indicator(
            1,
            "[ipv4-addr:value = '203.0.113.66'] OR [ipv6-addr:value = '2001:db8:bad::1']",
            confidence=90,
            name="Emotet C2",
            labels=["malicious-activity"],
            kill_chain_phases=[
                {"kill_chain_name": "mitre-attack", "phase_name": "command-and-control"}
            ],
        ),
        indicator(2, "[ipv4-addr:value ISSUBSET '198.18.0.0/15']"),
        indicator(3, "[domain-name:value = 'Evil-C2.example.']", description="C2 domain"),
        indicator(4, "[url:value = 'HTTP://Evil-C2.example:80/gate.php?id=1']"),
        indicator(5, f"[x509-certificate:hashes.'SHA-1' = '{SHA1.replace(':', '').upper()}']"),
        indicator(
            6, f"[x-ja3:hash = '{JA3}'] OR [network-traffic:extensions.'x-ja4'.hash = '{JA4}']"
        ),
        indicator(
            7,
            "[file:hashes.'SHA-256' = '" + "ab" * 32 + "']",
        ),
        indicator(
            8,
            "[ipv4-addr:value = '203.0.113.66']",
            confidence=40,
            valid_until="2027-01-01T00:00:00Z",
        ),  # duplicate of #1: merged
        indicator(9, "[domain-name:value = 'old.example']", valid_until="2026-01-02T00:00:00Z"),
        indicator(10, "[ipv4-addr:value = '1.2.3.4'"),  # invalid pattern
        indicator(
            11, "[network-traffic:dst_ref.value = '192.0.2.1' AND network-traffic:dst_port = 443]"
        ),
        {"type": "x-vendor-thing", "spec_version": "2.1", "id": sid("x-vendor-thing", 12)},
        attack,
        relation,
    ]
    path = tmp / "feed.json"
    path.write_text(json.dumps(bundle(*objects)))
    return path


def test_stix_bundle(tmp_path: Path) -> None:
    parsed = parse_file(_stix(tmp_path), source="vendor", confidence=55)
    got = {(i.type, i.value): i for i in parsed.indicators}
    assert set(got) == {
        ("ip", "203.0.113.66"),
        ("ip", "2001:db8:bad::1"),
        ("cidr", "198.18.0.0/15"),
        ("domain", "evil-c2.example"),
        ("url", "http://evil-c2.example/gate.php?id=1"),
        ("x509-sha1", SHA1.replace(":", "")),
        ("ja3", JA3),
        ("ja4", JA4),
        ("domain", "old.example"),
    }
    c2 = got[("ip", "203.0.113.66")]
    # Merged with its duplicate: highest confidence, longest validity, labels kept.
    assert c2.confidence == 90 and c2.valid_until_ns is None and c2.merges == 1
    assert c2.name == "Emotet C2" and c2.labels == ("malicious-activity",)
    assert c2.tactics == ("command-and-control",) and c2.techniques == ("T1071.001",)
    assert c2.source == "vendor"
    assert got[("cidr", "198.18.0.0/15")].confidence == 55  # the default where STIX says none
    assert got[("domain", "evil-c2.example")].description == "C2 domain"
    assert got[("domain", "old.example")].valid_until_ns is not None
    assert parsed.merged == 1
    assert parsed.skipped["file hash (not network data)"] == 1
    assert parsed.skipped["unknown object type"] == 1
    assert parsed.skipped["invalid object"] == 1
    assert parsed.skipped["pattern not supported"] == 1
    problems = "\n".join(parsed.problems)
    assert sid("x-vendor-thing", 12) in problems and "unknown object type" in problems
    assert sid("indicator", 10) in problems and "pattern" in problems
    assert sid("indicator", 11) in problems and "AND" in problems
    assert parsed.other_objects == {"attack-pattern": 1, "relationship": 1}


def test_stix_valid_days(tmp_path: Path) -> None:
    parsed = parse_file(_stix(tmp_path), valid_days=10)
    by = {(i.type, i.value): i for i in parsed.indicators}
    start = by[("ja3", JA3)].valid_from_ns
    assert start is not None and by[("ja3", JA3)].valid_until_ns == start + 10 * 86_400 * 10**9


def test_fatal_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "bundle", "objects": [')
    with pytest.raises(InputError, match=r"bad\.json"):
        parse_file(bad)
    notbundle = tmp_path / "nb.json"
    notbundle.write_text('{"hello": 1}')
    with pytest.raises(InputError, match="not a STIX"):
        parse_file(notbundle)
    with pytest.raises(InputError, match="cannot read"):
        parse_file(tmp_path / "missing.txt")
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"1.2.3.4\n\xff\xfe")
    with pytest.raises(InputError, match="UTF-8"):
        parse_file(binary)


def test_plain_list(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text(
        "# a comment\n"
        "\n"
        "203.0.113.7\n"
        "2001:db8::/48   v6 range\n"
        "10.20.0.0/16 # inline comment\n"
        "192.0.2.9/32\n"
        "Evil.Example.\n"
        "*.wild.example\n"
        "https://evil.example:443/a/b?x=1#frag\n"
        f"{JA3.upper()}\n"
        f"{JA4}\n"
        f"{SHA1}\n"
        f"{SHA1.replace(':', '')}\n"
        "ja3:" + "0" * 32 + "\n"
        "not an indicator!!\n"
        "203.0.113.7,duplicate with a comment\n"
    )
    parsed = parse_file(path, confidence=70, valid_days=30, now_ns=1_000)
    got = {(i.type, i.value) for i in parsed.indicators}
    assert got == {
        ("ip", "203.0.113.7"),
        ("cidr", "2001:db8::/48"),
        ("cidr", "10.20.0.0/16"),
        ("ip", "192.0.2.9"),
        ("domain", "evil.example"),
        ("domain", "wild.example"),
        ("url", "https://evil.example/a/b?x=1"),
        ("ja3", JA3),
        ("ja4", JA4),
        ("x509-sha1", SHA1.replace(":", "")),
        ("ja3", "0" * 32),
    }
    assert parsed.merged == 2  # the SHA-1 twice, the IP twice
    assert parsed.problems == [f"{path}:15: cannot tell what 'not' is"]
    assert parsed.skipped == {"unrecognised line": 1}
    ind = next(i for i in parsed.indicators if i.value == "2001:db8::/48")
    assert ind.description == "v6 range" and ind.confidence == 70 and ind.source == "list.txt"
    assert ind.valid_until_ns == 1_000 + 30 * 86_400 * 10**9


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4", ("ip", "1.2.3.4")),
        ("::ffff:1.2.3.4", ("ip", "::ffff:102:304")),
        ("10.0.0.1/8", ("cidr", "10.0.0.0/8")),
        ("a-b.example", ("domain", "a-b.example")),
        ("bücher.example", ("domain", "xn--bcher-kva.example")),
        ("1.2.3", None),
        ("-bad.example", None),
        ("t13d1516h2_8daaf6152771", None),
        ("cidr:1.2.3.0/24", ("cidr", "1.2.3.0/24")),
    ],
)
def test_detect(text: str, expected: tuple[str, str] | None) -> None:
    assert detect(text) == expected


def test_normalize_rejects_wrong_kinds() -> None:
    assert normalize("ja3", "xyz") is None
    assert normalize("url", "no scheme") is None
    assert normalize("x509-sha1", "ab:cd") is None
