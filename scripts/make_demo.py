"""Write the bundled demo capture, src/tapetum/data/demo.pcap.

Five minutes (2026-03-02 09:14-09:19 UTC) of a small office LAN, 10.20.0.0/24, seen on a switch
mirror port:

- 10.20.0.1 gateway, DNS resolver and NTP server; 10.20.0.10 Linux server (SSH, HTTP, HTTPS,
  SMB open); 10.20.0.50 the admin's Linux PC; six clients 10.20.0.101-106 (3 Windows, 2 macOS,
  1 Linux; .104 is dual-stack) browsing: DNS lookups, then TLS 1.3/1.2 and plain HTTP to
  "internet" servers in 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 and 2001:db8::/32.
- One self-signed certificate (the NAS web UI, nas.office.example on 10.20.0.30) and one expired
  certificate (portal.partner-example.com), both over TLS 1.2 so the certificates are visible.
- The admin PC holds an SSH session to the server for about two minutes and pings it; the server
  and the Linux clients poll NTP; Windows clients look up wpad (NXDOMAIN).
- Quiet devices (printers, IP phones, access points, a camera, the NAS) that only answer the scan.
- Attacker 10.20.0.66: at 09:15:40 an nmap -sS of 1,000 ports on 10.20.0.10 (3.0 s; 22, 80,
  443 and 445 open), and at 09:17:30 a sweep of port 22 over 10.20.0.0/24. On a LAN nmap must
  ARP each address first, so the sweep is 253 ARP requests and SYNs to the 26 hosts that answer
  (SSH open on 6 of them).

Measured on the file this script writes with seed 1 (tcpdump 4.99, tshark/capinfos 4.0):

    size 1,442,240 bytes; 5,382 packets (tcpdump -r reads all, no warnings)
    first 2026-03-02 09:14:03.634 UTC, last 09:18:49.129 UTC (285.5 s)
    IPv4 4,986 packets, IPv6 117, ARP 279 (253 requests, 26 replies)
    tshark -qz conv,ip: 68 IPv4 conversations (+ 3 IPv6, conv,ipv6); 39 IPv4 endpoints
    tshark -qz conv,tcp: 1,103 TCP conversations = 1,000 vertical-scan probes
        + 26 sweep probes + 77 sessions (63 TLS, 11 HTTP, 1 SSH, 2 failed)
    tshark -qz conv,udp: 48 UDP conversations (DNS, NTP); 9 ICMP/ICMPv6 echo requests
    TLS SNIs: 9 names, 63 ClientHellos; tshark flags only the two retransmitted SYNs of the
        unanswered connection (and cannot decode the ed25519 signature in SSH's key exchange)

TLS handshakes are real OpenSSL output and differ at every run (randoms, keys); everything else,
including sizes and timing, is fixed by the seed. Rerun after changing the synthesizer:

    python scripts/make_demo.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tapetum.testing.capture import write_capture
from tapetum.testing.synth import (
    CaptureBuilder,
    Ctx,
    dns_lookup,
    horizontal_scan,
    http_session,
    ns,
    ntp_exchange,
    ordered,
    ping,
    scan_ports,
    ssh_session,
    tcp_failed,
    tls_session,
    vertical_scan,
)
from tapetum.testing.tls import CertKind, Version
from tapetum.testing.wire import LINUX, MACOS, WINDOWS, Host, Packet

START = dt.datetime(2026, 3, 2, 9, 14, tzinfo=dt.UTC)
DURATION_S = 300.0
OUT = Path(__file__).resolve().parents[1] / "src" / "tapetum" / "data" / "demo.pcap"

GATEWAY = Host("10.20.0.1", LINUX, latency_ms=0.08)
GATEWAY6 = Host("fd20::1", LINUX, mac=GATEWAY.mac, latency_ms=0.08)
SERVER = Host("10.20.0.10", LINUX, latency_ms=0.12)
ADMIN = Host("10.20.0.50", LINUX, latency_ms=0.25)
ATTACKER = Host("10.20.0.66", LINUX, latency_ms=0.3)
CLIENTS = (
    Host("10.20.0.101", WINDOWS, latency_ms=0.3),
    Host("10.20.0.102", WINDOWS, latency_ms=0.35),
    Host("10.20.0.103", WINDOWS, latency_ms=1.2),  # on Wi-Fi
    Host("10.20.0.104", MACOS, latency_ms=1.5),  # on Wi-Fi
    Host("10.20.0.105", MACOS, latency_ms=0.3),
    Host("10.20.0.106", LINUX, latency_ms=0.25),
)
CLIENT6 = Host("fd20::104", MACOS, mac=CLIENTS[3].mac, latency_ms=1.5)
NAS = Host("10.20.0.30", LINUX, latency_ms=0.3)
#: Devices that are on but silent: (address, ssh open). They show up only in the scan.
QUIET = [
    ("10.20.0.2", True),
    ("10.20.0.3", True),
    ("10.20.0.20", False),
    ("10.20.0.21", False),
    ("10.20.0.30", True),
]
QUIET += [(f"10.20.0.{n}", False) for n in range(151, 161)]  # IP phones
QUIET += [("10.20.0.40", True), ("10.20.0.41", False)]  # cameras

NTP_POOL = Host("203.0.113.123", LINUX).behind(GATEWAY, hops=9, latency_ms=8.0)


@dataclass(frozen=True)
class Site:
    name: str
    servers: tuple[Host, ...]
    https: bool = True
    version: Version = "1.3"
    cert: CertKind = "ca"
    v6: Host | None = None
    cname: str = ""


def _remote(ip: str, latency_ms: float, hops: int) -> Host:
    if ":" in ip:  # IPv6 neighbours through the same router
        return Host(ip, LINUX, mac=GATEWAY.mac, ttl=64 - hops, latency_ms=latency_ms)
    return Host(ip, LINUX).behind(GATEWAY, hops=hops, latency_ms=latency_ms)


SITES = (
    Site(
        "www.wikipedia.org",
        (_remote("198.51.100.20", 18, 11),),
        v6=_remote("2001:db8:51::20", 18, 11),
    ),
    Site("github.com", (_remote("192.0.2.113", 24, 13),)),
    Site(
        "outlook.office365.com",
        (_remote("203.0.113.40", 12, 9), _remote("203.0.113.41", 12, 9)),
        cname="outlook.ha.office365.com",
    ),
    Site("www.bbc.co.uk", (_remote("198.51.100.58", 15, 10),), cname="www.bbc.co.uk.pri.bbc.net"),
    Site(
        "fonts.googleapis.com",
        (_remote("192.0.2.200", 9, 8),),
        v6=_remote("2001:db8:42::200", 9, 8),
    ),
    Site("deb.debian.org", (_remote("192.0.2.80", 30, 14),), https=False),
    Site("www.weather.gov", (_remote("203.0.113.90", 70, 17),), version="1.2"),
    Site("slack.com", (_remote("203.0.113.150", 35, 12),)),
    Site(
        "portal.partner-example.com",
        (_remote("198.51.100.77", 45, 15),),
        version="1.2",
        cert="expired",
    ),
    Site("nas.office.example", (NAS,), version="1.2", cert="self-signed"),
    Site("news.example.com", (_remote("198.51.100.130", 40, 14),), https=False),
)


def browse(
    ctx: Ctx, client: Host, site: Site, *, connections: int = 1, requests: int = 2
) -> Iterator[Packet]:
    """A page visit: DNS lookup (A + AAAA) at the gateway, then parallel connections."""
    rng = ctx.rng
    v6 = client.version == 6 and site.v6 is not None
    resolver = GATEWAY6 if v6 else GATEWAY
    addresses = [server.ip for server in site.servers]
    aaaa = [site.v6.ip] if site.v6 else []
    # Hosts only look up AAAA when they have IPv6; the gateway answers local names itself.
    qtypes = ("A", "AAAA") if client.os is not WINDOWS else ("A",)
    ttl = 600 if site.name.endswith(".example") else rng.choice((60, 300, 3600))
    lookup = list(
        dns_lookup(
            ctx.child(),
            client,
            resolver,
            site.name,
            a=addresses,
            aaaa=aaaa,
            cname=site.cname,
            qtypes=qtypes,
            ttl=ttl,
        )
    )
    servers: tuple[Host, ...] = (site.v6,) if v6 and site.v6 is not None else site.servers
    t = lookup[-1].ts_ns + ns(rng.uniform(0.0005, 0.003))
    sessions: list[Iterable[Packet]] = [lookup]
    for index in range(connections):
        sub = ctx.child(t + ns(index * rng.uniform(0.001, 0.02)))
        server = servers[index % len(servers)]
        if site.https:
            tls = tls_session(
                sub,
                client,
                server,
                sni=site.name,
                version=site.version,
                cert_kind=site.cert,
                requests=requests,
                response_median=1800,
            )
            sessions.append(tls)
        else:
            sessions.append(
                http_session(
                    sub, client, server, host=site.name, requests=requests, response_median=1800
                )
            )
    yield from ordered(*sessions)


def build(seed: int) -> CaptureBuilder:
    builder = CaptureBuilder(seed=seed, start=START)
    rng = random.Random(f"demo-schedule:{seed}")  # sessions get their own generators

    # Web browsing: each client visits a handful of sites over the five minutes.
    for client in CLIENTS:
        at = rng.uniform(0, 20)
        while at < DURATION_S - 20:
            site = rng.choice(SITES[:-3] if rng.random() < 0.85 else SITES)
            builder.add(
                at,
                browse,
                client,
                site,
                connections=rng.choice((1, 1, 2, 3)),
                requests=rng.randint(1, 3),
            )
            at += rng.expovariate(1 / 55)
        if client.os is WINDOWS:  # WPAD auto-discovery, never configured
            builder.add(
                rng.uniform(0, 60),
                dns_lookup,
                client,
                GATEWAY,
                "wpad.office.example",
                nxdomain=True,
                qtypes=("A",),
            )
    for at in (33.0, 161.0):
        builder.add(at, browse, CLIENT6, SITES[0], connections=1, requests=2)
        builder.add(at + 70, browse, CLIENT6, SITES[4], connections=1, requests=1)
    builder.add(95.0, browse, CLIENTS[5], SITES[-2], connections=1, requests=1)  # self-signed NAS
    builder.add(212.0, browse, CLIENTS[1], SITES[8], connections=1, requests=2)  # expired cert
    builder.add(130.0, tcp_failed, CLIENTS[0], SERVER, 3389, kind="refused")  # RDP, closed
    builder.add(
        131.0, tcp_failed, CLIENTS[0], _remote("192.0.2.250", 20, 10), 8443, kind="unanswered"
    )

    # Internal services.
    builder.add(
        12.0,
        http_session,
        CLIENTS[4],
        SERVER,
        host="intranet.office.example",
        requests=3,
        response_median=3000,
    )
    builder.add(20.0, ssh_session, ADMIN, SERVER, duration=125.0)
    builder.add(18.0, ping, ADMIN, SERVER, count=4)
    builder.add(240.0, ping, ADMIN, GATEWAY, count=3)
    builder.add(70.0, ping, CLIENT6, GATEWAY6, count=2)
    builder.add(5.0, ntp_exchange, SERVER, NTP_POOL, polls=5, interval=64.0)
    builder.add(41.0, ntp_exchange, CLIENTS[5], GATEWAY, polls=4, interval=64.0)
    builder.add(52.0, ntp_exchange, ADMIN, GATEWAY, polls=4, interval=64.0)

    # The attacker: vertical SYN scan of the server, later an ARP sweep + port 22 sweep.
    builder.add(98.0, dns_lookup, ATTACKER, GATEWAY, "github.com", a=[SITES[1].servers[0].ip])
    ports = scan_ports(rng, 1000)
    builder.add_flows(
        100.0,
        len(ports),
        vertical_scan,
        ATTACKER,
        SERVER,
        ports,
        open_ports={22, 80, 443, 445},
        rate_pps=330.0,
    )
    live = {host.ip: host for host in (GATEWAY, SERVER, ADMIN, *CLIENTS)}
    live |= {ip: Host(ip, LINUX, latency_ms=0.4) for ip, _ in QUIET}
    open_on = {SERVER.ip, ADMIN.ip} | {ip for ip, ssh in QUIET if ssh}
    targets = [f"10.20.0.{n}" for n in range(1, 255) if n != 66]
    builder.add_flows(
        210.0, len(live), horizontal_scan, ATTACKER, targets, 22, live=live, open_on=open_on
    )
    return builder


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the bundled demo capture.")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    merger = build(args.seed).merger()
    writer = write_capture(args.out, merger)
    size = args.out.stat().st_size
    print(f"wrote {args.out}: {writer.packets} packets, {size} bytes, {merger.flows} flows")


if __name__ == "__main__":
    main()
