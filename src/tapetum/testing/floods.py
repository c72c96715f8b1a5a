"""Flood and slow-DoS traffic: hping3-like SYN/UDP/ICMP floods and slowloris-like slow HTTP.

Traffic functions in the style of `tapetum.testing.synth` (`ctx`, hosts, parameters → packets in
time order). The floods craft packets the way hping3 does: no TCP options, window 512, a source
port that starts at random and counts up per packet (or random per packet), and with
`spoof=True` a random source address per packet (`--rand-source`), routed through `router` so
the frames carry the router's MAC. The victim answers as a Linux host does: SYN-ACK on an open
port (SYN cookies keep answering under load), RST-ACK on a closed one; a real (unspoofed)
attacker's kernel resets the SYN-ACKs it did not ask for.

`slowloris` opens many connections to a web server and keeps each alive by sending one more
header line every `interval` seconds, never finishing the request (slowhttptest -H).
"""

from __future__ import annotations

import heapq
import random
import struct
from collections.abc import Iterable, Iterator
from ipaddress import IPv4Address

from tapetum.testing.synth import Ctx, TcpConnection, ns, ordered
from tapetum.testing.wire import (
    ACK,
    RST,
    SYN,
    Host,
    Packet,
    icmp_echo_frame,
    tcp_frame,
    udp_frames,
)


def _spoofed(rng: random.Random, router: Host | None) -> Host:
    """A random public-looking source address (hping3 --rand-source), seen through `router`."""
    while True:
        a = IPv4Address(rng.getrandbits(32))
        if a.is_global:
            ip = str(a)
            return Host(ip, mac=router.mac if router else b"", ttl=rng.randint(40, 60))


def _paced(ctx: Ctx, packets: int, rate_pps: float) -> Iterator[int]:
    """Send times at `rate_pps` with a little jitter (hping3 --flood is as fast as it can)."""
    t = float(ctx.t)
    gap = 1e9 / rate_pps
    for _ in range(packets):
        yield int(t)
        t += gap * ctx.rng.uniform(0.5, 1.5)


def _with_answers(groups: Iterable[list[Packet]]) -> Iterator[Packet]:
    """Yield each group's first packet in order and its answers once their time has come."""
    pending: list[tuple[int, int, Packet]] = []
    n = 0
    for group in groups:
        start = group[0].ts_ns
        while pending and pending[0][0] <= start:
            yield heapq.heappop(pending)[2]
        yield group[0]
        for p in group[1:]:
            heapq.heappush(pending, (p.ts_ns, n, p))
            n += 1
    while pending:
        yield heapq.heappop(pending)[2]


def syn_flood(
    ctx: Ctx,
    attacker: Host,
    victim: Host,
    port: int,
    *,
    packets: int = 10_000,
    rate_pps: float = 5_000.0,
    spoof: bool = False,
    router: Host | None = None,
    port_open: bool = True,
    answer_share: float = 1.0,
    random_sport: bool = False,
) -> Iterator[Packet]:
    """hping3 -S --flood -p PORT [--rand-source]: a SYN per packet, each its own connection.

    `answer_share` of the SYNs get the victim's answer (an overloaded victim drops the rest).
    """
    rng = ctx.rng
    sport = rng.randint(1024, 65535)
    ip_id = rng.getrandbits(16)

    def one(t: int) -> list[Packet]:
        nonlocal sport, ip_id
        src = _spoofed(rng, router) if spoof else attacker
        sport = rng.randint(1024, 65535) if random_sport else (sport + 1 - 1024) % 64512 + 1024
        ip_id = (ip_id + 1) & 0xFFFF
        seq = rng.getrandbits(32)
        out = [
            Packet(
                t,
                tcp_frame(src, victim, sport, port, seq, 0, SYN, 512, ip_id=ip_id),
                attacker.interface,
            )
        ]
        if rng.random() >= answer_share:
            return out
        t_ans = t + 2 * victim.latency_ns + rng.randint(10_000, 60_000)
        if not port_open:
            rst = tcp_frame(victim, src, port, sport, 0, seq + 1, RST | ACK, 0)
            return [*out, Packet(t_ans, rst, attacker.interface)]
        mss = struct.pack("!BBH", 2, 4, 1460)
        synack = tcp_frame(
            victim,
            src,
            port,
            sport,
            rng.getrandbits(32),
            seq + 1,
            SYN | ACK,
            victim.os.syn_window,
            mss,
        )
        out.append(Packet(t_ans, synack, attacker.interface))
        if not spoof:  # the attacker's kernel resets a SYN-ACK no socket asked for
            t_rst = t_ans + 2 * attacker.latency_ns + rng.randint(5_000, 20_000)
            rst = tcp_frame(attacker, victim, sport, port, seq + 1, 0, RST, 0)
            out.append(Packet(t_rst, rst, attacker.interface))
        return out

    yield from _with_answers(one(t) for t in _paced(ctx, packets, rate_pps))


def udp_flood(
    ctx: Ctx,
    attacker: Host,
    victim: Host,
    *,
    packets: int = 10_000,
    rate_pps: float = 10_000.0,
    port: int = 0,
    size: int = 64,
    spoof: bool = False,
    router: Host | None = None,
) -> Iterator[Packet]:
    """hping3 --udp --flood [-p PORT] -d SIZE: datagrams of random bytes (port 0: random ports)."""
    rng = ctx.rng
    sport = rng.randint(1024, 65535)
    payload = ctx.noise.take(rng, size)
    for t in _paced(ctx, packets, rate_pps):
        src = _spoofed(rng, router) if spoof else attacker
        sport = (sport + 1 - 1024) % 64512 + 1024
        dport = port or rng.randint(1, 65535)
        for frame in udp_frames(src, victim, sport, dport, payload, ip_id=rng.getrandbits(16)):
            yield Packet(t, frame, attacker.interface)


def icmp_flood(
    ctx: Ctx,
    attacker: Host,
    victim: Host,
    *,
    packets: int = 10_000,
    rate_pps: float = 5_000.0,
    size: int = 56,
    reply_share: float = 1.0,
) -> Iterator[Packet]:
    """hping3 --icmp --flood -d SIZE: echo requests with one id and counting sequence numbers;
    the victim answers `reply_share` of them."""
    rng = ctx.rng
    ident = rng.getrandbits(16)
    payload = ctx.noise.take(rng, size)

    def one(seq: int, t: int) -> list[Packet]:
        req = icmp_echo_frame(
            attacker,
            victim,
            reply=False,
            ident=ident,
            seq=seq & 0xFFFF,
            payload=payload,
            ip_id=rng.getrandbits(16),
        )
        out = [Packet(t, req, attacker.interface)]
        if rng.random() < reply_share:
            rep = icmp_echo_frame(
                victim,
                attacker,
                reply=True,
                ident=ident,
                seq=seq & 0xFFFF,
                payload=payload,
                ip_id=rng.getrandbits(16),
            )
            out.append(
                Packet(
                    t + 2 * victim.latency_ns + rng.randint(10_000, 50_000), rep, attacker.interface
                )
            )
        return out

    yield from _with_answers(
        one(seq, t) for seq, t in enumerate(_paced(ctx, packets, rate_pps), start=1)
    )


def _slow_connection(
    ctx: Ctx,
    attacker: Host,
    victim: Host,
    port: int,
    host: str,
    duration: float,
    interval: float,
    end: str,
    sport: int,
) -> Iterator[Packet]:
    rng = ctx.rng
    conn = TcpConnection(ctx, attacker, victim, port, sport=sport)
    yield from conn.open()
    head = (
        f"GET /?{rng.randint(1, 9999)} HTTP/1.1\r\nHost: {host}\r\n"
        "User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36\r\n"
        "Accept-Language: en-US,en;q=0.5\r\n"
    ).encode()
    yield from conn.send(head, from_client=True, delay=rng.uniform(0.0002, 0.002))
    stop = ctx.t + ns(duration)
    while True:
        wait = interval * rng.uniform(0.9, 1.1)
        if conn.t + ns(wait) >= stop:
            break
        line = f"X-a: {rng.randint(1, 5000)}\r\n".encode()
        yield from conn.send(line, from_client=True, delay=wait)
    if end == "server-timeout":  # Apache answers 408 and closes
        reply = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        yield from conn.send(reply, from_client=False, delay=1.0)
        yield from conn.close(by_client=False, delay=0.0005)
    else:  # the attack stops: slowhttptest closes its sockets
        yield from conn.close(by_client=True, delay=rng.uniform(0.5, 2.0))


def slowloris(
    ctx: Ctx,
    attacker: Host,
    victim: Host,
    *,
    connections: int = 150,
    port: int = 80,
    host: str = "www.example.org",
    duration: float = 120.0,
    interval: float = 10.0,
    ramp: float = 5.0,
    end: str = "client",
) -> Iterator[Packet]:
    """slowhttptest -H -c CONNECTIONS -i INTERVAL: partial requests kept alive, opened within
    `ramp` seconds; each lasts about `duration` s and ends by the client (or `server-timeout`)."""
    rng = ctx.rng
    sessions = []
    first_port = rng.randint(32768, 60999 - connections)
    for i in range(connections):
        start = ctx.t + ns(rng.uniform(0.0, ramp))
        sub = ctx.child(start)
        sessions.append(
            _slow_connection(
                sub,
                attacker,
                victim,
                port,
                host,
                duration * rng.uniform(0.9, 1.0),
                interval,
                end,
                first_port + i,
            )
        )
    yield from ordered(*sessions)
