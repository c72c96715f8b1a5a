"""Matching: address prefixes (IPv4 and IPv6) against a reference, names, validity."""

from __future__ import annotations

import contextlib
import ipaddress
import random

import numpy as np

from tapetum.flows.key import addr_parse
from tapetum.intel.indicators import Indicator
from tapetum.intel.matcher import Matcher

T0 = 1_700_000_000 * 10**9


def _ind(kind: str, value: str, **kw: object) -> Indicator:
    return Indicator(type=kind, value=value, source=str(kw.pop("source", "test")), **kw)  # type: ignore[arg-type]


def _columns(addresses: list[str]) -> tuple[np.ndarray, np.ndarray]:
    pairs = [addr_parse(a) for a in addresses]
    return (
        np.array([p[0] for p in pairs], dtype=np.uint64),
        np.array([p[1] for p in pairs], dtype=np.uint64),
    )


def test_prefixes_against_reference() -> None:
    rng = random.Random(4)
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for _ in range(300):
        if rng.random() < 0.7:
            n = ipaddress.ip_network((rng.getrandbits(32), rng.randint(8, 32)), strict=False)
        else:
            base = (0x2001_0DB8 << 96) | rng.getrandbits(96)
            n = ipaddress.ip_network((base, rng.randint(16, 128)), strict=False)
        nets.append(n)
    inds = []
    for k, n in enumerate(nets):
        kind = "ip" if n.prefixlen == n.max_prefixlen else "cidr"
        value = str(n.network_address) if kind == "ip" else str(n)
        inds.append(_ind(kind, value, confidence=k % 100))
    m = Matcher(inds)
    # Addresses inside listed networks, near them, and random ones, both families.
    addresses = []
    for n in nets:
        addresses.append(str(n.network_address + rng.randrange(n.num_addresses)))
        with contextlib.suppress(ipaddress.AddressValueError):  # the last address has no next
            addresses.append(str(n.broadcast_address + 1))  # just outside
    addresses += [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(500)]
    addresses += [
        str(ipaddress.IPv6Address((0x2001_0DB8 << 96) | rng.getrandbits(96))) for _ in range(500)
    ]
    hi, lo = _columns(addresses)
    got = m.match_addresses(hi, lo, np.full(len(addresses), T0, dtype=np.int64))
    for a, g in zip(addresses, got.tolist(), strict=True):
        ip = ipaddress.ip_address(a)
        covering = [i for i, n in enumerate(nets) if ip.version == n.version and ip in n]
        if not covering:
            assert g == -1, a
            continue
        assert g >= 0, a
        best_conf = max(inds[i].confidence for i in covering)
        assert m.indicators[g].confidence == best_conf, a
        assert ip in ipaddress.ip_network(m.indicators[g].value), a


def test_ipv6_and_mapped_ipv4() -> None:
    m = Matcher([_ind("cidr", "2001:db8:bad::/48"), _ind("ip", "203.0.113.5"),
                 _ind("cidr", "198.18.0.0/15")])  # fmt: skip
    addresses = ["2001:db8:bad:1::9", "2001:db8:bae::1", "203.0.113.5", "203.0.113.6",
                 "198.19.255.255", "198.20.0.0", "::cb00:7105"]  # fmt: skip
    hi, lo = _columns(addresses)
    got = m.match_addresses(hi, lo, np.full(len(addresses), T0, dtype=np.int64))
    assert [m.indicators[g].value if g >= 0 else None for g in got.tolist()] == [
        "2001:db8:bad::/48", None, "203.0.113.5", None, "198.18.0.0/15", None, None,
    ]  # fmt: skip


def test_validity_in_data_time() -> None:
    day = 86_400 * 10**9
    m = Matcher(
        [
            _ind("ip", "192.0.2.1", valid_from_ns=T0, valid_until_ns=T0 + day),
            _ind("cidr", "192.0.2.0/24", confidence=10),
            _ind("domain", "old.example", valid_until_ns=T0),
        ]
    )
    hi, lo = _columns(["192.0.2.1"] * 3)
    got = m.match_addresses(hi, lo, np.array([T0 - 1, T0 + 5, T0 + 2 * day], dtype=np.int64))
    # Before and after its validity the exact IP gives way to the (always valid) /24.
    assert [m.indicators[g].value for g in got.tolist()] == [
        "192.0.2.0/24", "192.0.2.1", "192.0.2.0/24",
    ]  # fmt: skip
    assert m.match_domain("old.example", T0 - 1) >= 0
    assert m.match_domain("old.example", T0 + 1) == -1


def test_names_fingerprints_and_sources() -> None:
    m = Matcher(
        [
            _ind("domain", "evil.example", source="a", confidence=30),
            _ind("domain", "evil.example", source="b", confidence=80),
            _ind("domain", "deep.sub.other.example"),
            _ind("url", "http://evil.example/gate.php"),
            _ind("ja3", "e7d705a3286e19ea42f587b344ee6865"),
            _ind("ja4", "t13d1516h2_8daaf6152771_b0da82dd1658"),
            _ind("x509-sha1", "3b780f376cefd5ec193497a3c84ab21a334ec0c4"),
            _ind("ip", "192.0.2.200", confidence=5),
        ],
        min_confidence=10,
    )
    k = m.match_domain("A.B.Evil.Example.", T0)
    assert k >= 0 and m.indicators[k].source == "b" and m.also[k] == ["a"]
    assert m.match_domain("notevil.example", T0) == -1
    assert m.match_domain("sub.other.example", T0) == -1  # parents of indicators do not match
    assert m.match_domain("x.deep.sub.other.example", T0) >= 0
    assert m.match_url("http://EVIL.example:80/gate.php?id=7", T0) >= 0
    assert m.match_url("http://evil.example/other", T0) == -1
    assert m.match_ja3("E7D705A3286E19EA42F587B344EE6865", T0) >= 0
    assert m.match_ja4("t13d1516h2_8daaf6152771_b0da82dd1658", T0) >= 0
    assert (
        m.match_certificate("3b:78:0f:37:6c:ef:d5:ec:19:34:97:a3:c8:4a:b2:1a:33:4e:c0:c4", T0) >= 0
    )
    assert m.match_ip_text("192.0.2.200", T0) == -1  # below min_confidence
