"""Benign office DNS from 20 clients plus one host running a conficker-like DGA.

Benign: the office (web, TLS, DNS), lookups of popular domains, CDN names with hashes
(cloudfront, akamaiedge), a few typos answered NXDOMAIN, reverse lookups, local names
(printer.corp.lan, wpad), mDNS and an IDN. Attack: 10.1.0.66 looks up 40 generated names
(random letters, conficker-like lengths and TLDs), all answered NXDOMAIN, within a minute.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from pathlib import Path

import dpkt

from tapetum.testing import CaptureBuilder, Ctx, Host, Packet, dns_lookup, udp_exchange
from tests.detectors.scenarios.scan import office

RESOLVER = Host("10.1.0.2")
POPULAR = [
    "www.google.com", "mail.google.com", "www.youtube.com", "outlook.office365.com",
    "login.microsoftonline.com", "www.bbc.co.uk", "github.com", "api.github.com",
    "www.wikipedia.org", "en.wikipedia.org", "slack.com", "zoom.us", "www.amazon.com",
    "www.linkedin.com", "update.microsoft.com", "ocsp.digicert.com", "www.nytimes.com",
    "stackoverflow.com", "www.dropbox.com", "teams.microsoft.com", "www.salesforce.com",
    "cdn.jsdelivr.net", "fonts.googleapis.com", "www.reddit.com", "www.spiegel.de",
    "www.lemonde.fr", "weather.com", "www.paypal.com", "docs.python.org", "pypi.org",
]  # fmt: skip
TYPOS = ["gooogle.com", "wikipeida.org", "githbu.com", "outlok.com", "amazn.com"]
DGA_TLDS = ["com", "net", "org", "info", "biz", "cc", "cn", "ws"]


def conficker_like(rng: random.Random, n: int) -> list[str]:
    """Random lowercase labels of 5-11 letters under conficker's TLDs."""
    out = []
    for _ in range(n):
        label = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(5, 11)))
        out.append(f"{label}.{rng.choice(DGA_TLDS)}")
    return out


def mdns_query(ctx: Ctx, host: Host, name: str) -> Iterator[Packet]:
    q = dpkt.dns.DNS.Q(name=name, type=dpkt.dns.DNS_PTR, cls=1)
    yield from udp_exchange(
        ctx, host, Host("224.0.0.251"), 5353, bytes(dpkt.dns.DNS(id=0, qd=[q])), sport=5353
    )


def benign_dns(b: CaptureBuilder, rng: random.Random, span_s: float) -> None:
    clients = [Host(f"10.1.0.{k}") for k in range(10, 30)]
    for c in clients:
        for name in rng.sample(POPULAR, 12):
            b.add(rng.uniform(0, span_s), dns_lookup, c, RESOLVER, name, a=["192.0.2.10"])
        for _ in range(
            3
        ):  # CDN names with hashes (the hash is a subdomain or a private-suffix label)
            h = f"{rng.getrandbits(64):016x}"
            b.add(rng.uniform(0, span_s), dns_lookup, c, RESOLVER,
                  f"d{h[:13]}.cloudfront.net", a=["13.1.2.3"])  # fmt: skip
            edge = f"e{rng.randint(1, 9999)}.dscx{h[:4]}.akamaiedge.net"
            b.add(rng.uniform(0, span_s), dns_lookup, c, RESOLVER, edge, a=["23.1.2.3"])
        b.add(rng.uniform(0, span_s), dns_lookup, c, RESOLVER, rng.choice(TYPOS), nxdomain=True)
        b.add(rng.uniform(0, span_s), dns_lookup, c, RESOLVER, "wpad.corp.lan", nxdomain=True)
        b.add(rng.uniform(0, span_s), dns_lookup, c, RESOLVER, "printer.corp.lan", a=["10.1.0.3"])
        ptr = ".".join(str(rng.randint(1, 254)) for _ in range(4)) + ".in-addr.arpa"
        b.add(rng.uniform(0, span_s), dns_lookup, c, RESOLVER, ptr, qtypes=("A",), nxdomain=True)
        b.add(rng.uniform(0, span_s), mdns_query, c, "_googlecast._tcp.local")
    # An internationalised name (münchen.de) and a long CDN-style hostname.
    b.add(10.0, dns_lookup, clients[0], RESOLVER, "www.xn--mnchen-3ya.de", a=["192.0.2.20"])


def build(tmp: Path) -> tuple[Path, set[str]]:
    b = CaptureBuilder(seed=51)
    rng = random.Random(51)
    office(b, rng)
    benign_dns(b, rng, 200.0)
    infected = Host("10.1.0.66")
    for k, name in enumerate(conficker_like(random.Random(52), 40)):
        b.add(50.0 + 1.5 * k, dns_lookup, infected, RESOLVER, name, nxdomain=True)
    path = tmp / "dga.pcap"
    b.write(path)
    return path, {infected.ip}
