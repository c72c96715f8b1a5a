"""An enterprise traffic mix for benchmarks, streamed as an endless time-ordered packet stream.

The capture point is a core switch mirror: a few thousand internal clients (mostly Windows, some
macOS and Linux, a tenth dual-stack, two subnets on tagged VLANs, one behind QinQ) browse a few
hundred internet sites (DNS, then TLS or plain HTTP), poll NTP, ping, use SSH to internal servers,
download updates (the long flows), fail to connect now and then, and every ten minutes of data
time a host scans (one vertical scan of 1,000 ports, one horizontal sweep of a /24).

Sessions start as a Poisson process; each is a generator from `tapetum.testing.synth`, and
`SessionMerger` interleaves them, so memory depends on how many sessions overlap, not on how many
packets are written. To add a traffic type, write a function `(world, ctx) -> (packets, flows)`
and give it a weight in `SESSION_KINDS`.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from tapetum.testing.synth import (
    DEFAULT_START,
    NS_PER_S,
    Ctx,
    Noise,
    SessionMerger,
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
    udp_exchange,
    vertical_scan,
)
from tapetum.testing.tls import CertKind, ClientProfile, Version
from tapetum.testing.wire import LINUX, MACOS, WINDOWS, Host, Packet

# One string keeps the list compact; split below.
_NAMES_TEXT = (
    "www.wikipedia.org en.wikipedia.org upload.wikimedia.org github.com api.github.com "
    "objects.githubusercontent.com www.debian.org deb.debian.org security.debian.org "
    "pypi.org files.pythonhosted.org www.python.org docs.python.org www.mozilla.org "
    "addons.mozilla.org firefox.settings.services.mozilla.com www.bbc.co.uk www.theguardian.com "
    "www.reuters.com www.nytimes.com www.lemonde.fr www.spiegel.de outlook.office365.com "
    "login.microsoftonline.com teams.microsoft.com graph.microsoft.com www.office.com "
    "update.microsoft.com settings-win.data.microsoft.com ctldl.windowsupdate.com "
    "www.google.com fonts.googleapis.com fonts.gstatic.com www.gstatic.com accounts.google.com "
    "mail.google.com drive.google.com www.youtube.com i.ytimg.com www.linkedin.com "
    "static.licdn.com slack.com app.slack.com zoom.us www.dropbox.com www.salesforce.com "
    "www.atlassian.com jira.atlassian.com www.stackoverflow.com cdn.sstatic.net "
    "www.amazon.com images-na.ssl-images-amazon.com aws.amazon.com s3.amazonaws.com "
    "www.apple.com swscan.apple.com www.cloudflare.com cdnjs.cloudflare.com "
    "cdn.jsdelivr.net unpkg.com registry.npmjs.org www.openstreetmap.org tile.openstreetmap.org "
    "www.weather.gov www.gov.uk www.europa.eu news.ycombinator.com www.reddit.com "
    "www.nature.com arxiv.org www.mathworks.com www.adobe.com www.zoho.com"
)
_NAMES = _NAMES_TEXT.split(" ")
_TYPOS = (
    "wpad.corp.example",
    "gooogle.com",
    "intranet.local",
    "printer-3.corp.example",
    "_ldap._tcp.dc.corp.example",
)


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    v4: tuple[Host, ...]
    v6: tuple[Host, ...]
    cname: str
    https: bool
    version: Version
    cert_kind: CertKind


@dataclass(slots=True)
class Client:
    v4: Host
    v6: Host | None
    legacy_tls: bool


class _Picker:
    """Weighted choice with precomputed cumulative weights (Zipf-like popularity)."""

    def __init__(self, count: int, exponent: float) -> None:
        self._cumulative = list(
            itertools.accumulate(1.0 / (rank + 1) ** exponent for rank in range(count))
        )

    def __call__(self, rng: random.Random) -> int:
        return bisect.bisect(self._cumulative, rng.random() * self._cumulative[-1])


class World:
    """Hosts and sites of the synthetic enterprise, fixed by the seed."""

    def __init__(self, seed: int, clients: int = 2500, sites: int = 320) -> None:
        rng = random.Random(f"world:{seed}")
        self.router = Host("10.1.0.1", LINUX, latency_ms=0.05)
        self.resolvers = (
            Host("10.1.0.53", LINUX, latency_ms=0.3),
            Host("10.1.0.54", LINUX, latency_ms=0.3),
        )
        self.resolver6 = Host("2001:db8:10::53", LINUX, latency_ms=0.3)
        self.ntp = Host("10.1.0.123", LINUX, latency_ms=0.3)
        self.ssh_servers = tuple(Host(f"10.1.0.{20 + i}", LINUX, latency_ms=0.4) for i in range(6))
        self.file_server = Host("10.1.0.40", WINDOWS, latency_ms=0.3)
        self.clients: list[Client] = []
        for index in range(clients):
            subnet, host = 1 + index // 240, 10 + index % 240
            os = rng.choices((WINDOWS, MACOS, LINUX), (0.62, 0.23, 0.15))[0]
            # Subnet 9 is on a tagged VLAN; subnet 10 reaches the mirror through a QinQ carrier.
            vlan = (109,) if subnet == 9 else (400, 110) if subnet == 10 else ()
            latency = rng.uniform(0.15, 1.5)
            v4 = Host(f"10.1.{subnet}.{host}", os, latency_ms=latency, vlan=vlan)
            v6 = None
            if rng.random() < 0.1:
                v6 = Host(
                    f"2001:db8:10:{subnet:x}::{host:x}",
                    os,
                    mac=v4.mac,
                    latency_ms=latency,
                    vlan=vlan,
                )
            self.clients.append(Client(v4, v6, legacy_tls=rng.random() < 0.05))
        addresses = [
            f"{net}.{i}" for net in ("192.0.2", "198.51.100", "203.0.113") for i in range(1, 255)
        ]
        rng.shuffle(addresses)
        names = list(_NAMES)
        while len(names) < sites:
            prefix = rng.choice(("cdn", "static", "api", "img", "edge"))
            domain = rng.choice(_NAMES).split(".", 1)[1]
            names.append(f"{prefix}{len(names)}.{domain}")
        self.sites: list[Site] = []
        for index, name in enumerate(names[:sites]):
            os = rng.choices((LINUX, WINDOWS), (0.85, 0.15))[0]
            latency = rng.uniform(3, 90)
            hops = rng.randint(6, 22)
            servers = tuple(
                Host(addresses.pop(), os).behind(self.router, hops=hops, latency_ms=latency)
                for _ in range(rng.choice((1, 1, 2)))
            )
            servers6: tuple[Host, ...] = ()
            if rng.random() < 0.4:
                ip6 = f"2001:db8:ff{index // 256:02x}::{index % 256 + 1:x}"
                servers6 = (Host(ip6, os).behind(self.router, hops=hops, latency_ms=latency),)
            cname = f"{name}.cdn.example.net" if rng.random() < 0.3 else ""
            cert: CertKind = rng.choices(("ca", "self-signed", "expired"), (0.97, 0.015, 0.015))[0]
            version: Version = rng.choices(("1.3", "1.2"), (0.8, 0.2))[0]
            https = rng.random() < 0.9
            self.sites.append(Site(name, servers, servers6, cname, https, version, cert))
        self.sites.sort(key=lambda site: not site.https)  # popular sites first, and they use TLS
        self._site = _Picker(len(self.sites), 1.0)
        self._client = _Picker(len(self.clients), 0.6)

    def site(self, rng: random.Random) -> Site:
        return self.sites[self._site(rng)]

    def client(self, rng: random.Random) -> Client:
        return self.clients[self._client(rng)]


Built = tuple[Iterable[Packet], int]


def _visit(world: World, ctx: Ctx, *, download: int = 0) -> Built:
    """A browser visit: DNS (A + AAAA), then 1-6 parallel connections with keep-alive requests."""
    rng = ctx.rng
    client, site = world.client(rng), world.site(rng)
    v6 = client.v6 is not None and bool(site.v6) and rng.random() < 0.6
    src = client.v6 if v6 and client.v6 is not None else client.v4
    resolver = world.resolver6 if v6 else world.resolvers[rng.randrange(2)]
    addresses, addresses6 = [h.ip for h in site.v4], [h.ip for h in site.v6]
    ttl = rng.choice((60, 300, 3600))
    lookup = list(
        dns_lookup(
            ctx.child(),
            src,
            resolver,
            site.name,
            a=addresses,
            aaaa=addresses6,
            cname=site.cname,
            ttl=ttl,
        )
    )
    servers = site.v6 if v6 else site.v4
    t = lookup[-1].ts_ns + ns(rng.uniform(0.0005, 0.004))
    connections = 1 if download else rng.choices((1, 2, 3, 4, 6), (0.45, 0.25, 0.15, 0.1, 0.05))[0]
    sessions: list[Iterable[Packet]] = [lookup]
    profile: ClientProfile = "legacy" if client.legacy_tls else "modern"
    for index in range(connections):
        sub = ctx.child(t + ns(index * rng.uniform(0.0002, 0.03)))
        server = servers[rng.randrange(len(servers))]
        requests = 1 if download else min(40, int(rng.expovariate(1 / 1.5)) + 1)
        if site.https:
            tls = tls_session(
                sub,
                src,
                server,
                sni=site.name,
                version=site.version,
                cert_kind=site.cert_kind,
                client_profile=profile,
                requests=requests,
                download=download,
            )
            sessions.append(tls)
        else:
            sessions.append(
                http_session(
                    sub, src, server, host=site.name, requests=requests, post=rng.random() < 0.05
                )
            )
    return ordered(*sessions), 1 + connections


def _download(world: World, ctx: Ctx) -> Built:
    """A long flow: software update or video, 2-60 MB."""
    return _visit(world, ctx, download=ctx.lognormal(8_000_000, 0.9, 2_000_000, 60_000_000))


def _dns_only(world: World, ctx: Ctx) -> Built:
    """Lookups with no connection after: prefetch, telemetry, typos and internal names."""
    rng = ctx.rng
    client = world.client(rng).v4
    resolver = world.resolvers[rng.randrange(2)]
    if rng.random() < 0.2:
        return dns_lookup(ctx, client, resolver, rng.choice(_TYPOS), nxdomain=True), 1
    site = world.site(rng)
    return dns_lookup(
        ctx, client, resolver, site.name, a=[h.ip for h in site.v4], cname=site.cname, qtypes=("A",)
    ), 1


def _ntp(world: World, ctx: Ctx) -> Built:
    return ntp_exchange(ctx, world.client(ctx.rng).v4, world.ntp), 1


def _ping(world: World, ctx: Ctx) -> Built:
    rng = ctx.rng
    client = world.client(rng)
    if client.v6 is not None and rng.random() < 0.5:
        return ping(ctx, client.v6, world.resolver6, count=rng.randint(1, 5)), 1
    target = world.site(rng).v4[0] if rng.random() < 0.6 else world.file_server
    return ping(ctx, client.v4, target, count=rng.randint(1, 5)), 1


def _ssh(world: World, ctx: Ctx) -> Built:
    rng = ctx.rng
    client = world.client(rng).v4
    server = world.ssh_servers[rng.randrange(len(world.ssh_servers))]
    return ssh_session(
        ctx, client, server, duration=rng.uniform(20, 600), post_quantum=rng.random() < 0.5
    ), 1


def _failed(world: World, ctx: Ctx) -> Built:
    rng = ctx.rng
    client = world.client(rng).v4
    draw = rng.random()
    if draw < 0.45:  # a firewall drops it
        server = world.site(rng).v4[0]
        port = rng.choice((443, 8443, 5228, 993))
        return tcp_failed(ctx, client, server, port, kind="unanswered"), 1
    server = world.ssh_servers[rng.randrange(len(world.ssh_servers))]
    port = rng.choice((8080, 3389, 22, 445))
    return tcp_failed(ctx, client, server, port, kind="refused" if draw < 0.95 else "syn-reset"), 1


def _fragmented(world: World, ctx: Ctx) -> Built:
    """A UDP datagram over the MTU (syslog-over-UDP bursts, SIP with big SDP, old NFS)."""
    rng = ctx.rng
    size = rng.randint(1600, 8000)
    return udp_exchange(
        ctx, world.client(rng).v4, world.file_server, 2049, ctx.noise.take(rng, size), b"\x00" * 120
    ), 1


def _vertical_scan(world: World, ctx: Ctx) -> Built:
    rng = ctx.rng
    attacker = world.client(rng).v4
    target = world.ssh_servers[0]
    ports = scan_ports(rng, 1000)
    return vertical_scan(
        ctx, attacker, target, ports, open_ports={22, 80, 443}, rate_pps=350.0
    ), len(ports)


def _horizontal_scan(world: World, ctx: Ctx) -> Built:
    """A sweep of an external /24 on port 22 through the router: dead addresses stay silent."""
    rng = ctx.rng
    attacker = world.client(rng).v4
    live = {
        host.ip: host
        for site in world.sites
        for host in site.v4
        if host.ip.startswith("198.51.100.")
    }
    targets = [f"198.51.100.{i}" for i in range(1, 255)]
    open_on = set(list(live)[:3])
    scan = horizontal_scan(
        ctx, attacker, targets, 22, live=live, open_on=open_on, local=False, router=world.router
    )
    return scan, len(targets)


#: (weight per session, builder). Weights are per session start, not per packet or flow.
SESSION_KINDS: tuple[tuple[float, Callable[[World, Ctx], Built]], ...] = (
    (0.50, _visit),
    (0.003, _download),
    (0.27, _dns_only),
    (0.05, _ntp),
    (0.05, _ping),
    (0.0015, _ssh),
    (0.07, _failed),
    (0.002, _fragmented),
)
#: Scans recur on a fixed data-time schedule: (first offset s, period s, builder).
SCHEDULED: tuple[tuple[float, float, Callable[[World, Ctx], Built]], ...] = (
    (45.0, 600.0, _vertical_scan),
    (150.0, 600.0, _horizontal_scan),
)


def mixed_traffic(
    seed: int = 1,
    *,
    start: dt.datetime = DEFAULT_START,
    sessions_per_second: float = 60.0,
    clients: int = 2500,
) -> SessionMerger:
    """An endless time-ordered packet stream; iterate it and stop when you have enough.

    The returned merger counts `sessions` and `flows` of the sessions that have started.
    """
    world = World(seed, clients=clients)
    noise = Noise(seed)
    start_ns = int(start.timestamp()) * NS_PER_S
    valid_at = start.date()

    def arrivals() -> Iterator[tuple[int, Iterable[Packet], int]]:
        rng = random.Random(f"arrivals:{seed}")
        weights = list(itertools.accumulate(weight for weight, _ in SESSION_KINDS))
        scheduled = [(start_ns + ns(first), index) for index, (first, _, _) in enumerate(SCHEDULED)]
        t = start_ns
        for number in itertools.count():
            t += ns(rng.expovariate(sessions_per_second))
            due = min(scheduled)
            if due[0] <= t:
                when, index = due
                _, period, builder = SCHEDULED[index]
                scheduled[index] = (when + ns(period), index)
                ctx = Ctx(when, random.Random(f"{seed}:scheduled:{number}"), noise, valid_at)
                t = when
            else:
                kind = bisect.bisect(weights, rng.random() * weights[-1])
                builder = SESSION_KINDS[kind][1]
                ctx = Ctx(t, random.Random(f"{seed}:{number}"), noise, valid_at)
            packets, flows = builder(world, ctx)
            yield ctx.t, packets, flows

    return SessionMerger(arrivals())
