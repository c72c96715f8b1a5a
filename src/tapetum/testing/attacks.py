"""Synthetic attack traffic: password guessing and spraying, C2 beaconing.

Traffic functions (`ssh_auth_failure`, `keepalive_beacon`) produce one session's packets, as in
`tapetum.testing.synth`; the schedulers (`password_guessing`, `password_spraying`, `beacon`) add
many sessions to a `CaptureBuilder` the way the tools do (hydra's parallel tasks, an implant's
jittered sleep).
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tapetum.testing.synth import (
    SSH_SERVER_BANNER,
    CaptureBuilder,
    Ctx,
    TcpConnection,
    _ssh_encrypted,
    http_request,
    ns,
    ssh_handshake,
    tcp_session,
    tls_session,
    udp_exchange,
)
from tapetum.testing.wire import Host, Packet

#: libssh's banner, which hydra sends.
HYDRA_BANNER = b"SSH-2.0-libssh_0.10.6\r\n"


def ssh_auth_failure(
    ctx: Ctx,
    client: Host,
    server: Host,
    *,
    attempts: int = 1,
    port: int = 22,
    client_banner: bytes = HYDRA_BANNER,
    server_banner: bytes = SSH_SERVER_BANNER,
    post_quantum: bool = False,
    failure_delay: float = 2.0,
) -> Iterator[Packet]:
    """An SSH connection whose password logins all fail: key exchange, `attempts` password
    requests each refused after sshd's failure delay, then the client gives up and closes."""
    rng = ctx.rng
    conn = TcpConnection(ctx, client, server, port)
    yield from ssh_handshake(ctx, conn, client_banner, server_banner, post_quantum)
    # SERVICE_REQUEST ssh-userauth / SERVICE_ACCEPT (+ EXT_INFO), "none" auth probe and its
    # USERAUTH_FAILURE listing the methods that can continue.
    yield from conn.send(_ssh_encrypted(ctx, 17), from_client=True, delay=0.0005)
    yield from conn.send(
        _ssh_encrypted(ctx, 17) + _ssh_encrypted(ctx, 250), from_client=False, delay=0.0005
    )
    yield from conn.send(_ssh_encrypted(ctx, 40), from_client=True, delay=0.0005)
    yield from conn.send(_ssh_encrypted(ctx, 40), from_client=False, delay=0.0005)
    for _ in range(attempts):
        # USERAUTH_REQUEST password: user, service, method, password (8-14 characters).
        yield from conn.send(
            _ssh_encrypted(ctx, 58 + rng.randint(8, 14)), from_client=True, delay=0.001
        )
        # sshd delays every failure (~2 s with PAM), then USERAUTH_FAILURE.
        yield from conn.send(
            _ssh_encrypted(ctx, 40),
            from_client=False,
            delay=failure_delay * rng.uniform(0.9, 1.2),
        )
    yield from conn.close(by_client=True, delay=rng.uniform(0.001, 0.01))


def http_auth_failure(
    ctx: Ctx, client: Host, server: Host, *, host: str, port: int = 80, user: str = "admin"
) -> Iterator[Packet]:
    """One HTTP Basic-auth login refused with 401 (a hydra http-get module attempt)."""
    rng = ctx.rng
    password = ctx.noise.take(rng, 6).hex()
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = http_request(ctx, host, path="/admin/", agent="Mozilla/4.0 (Hydra)")
    request = request.replace(b"\r\n\r\n", f"\r\nAuthorization: Basic {token}\r\n\r\n".encode())
    body = b"<html><body><h1>401 Unauthorized</h1></body></html>"
    response = (
        b"HTTP/1.1 401 Unauthorized\r\nServer: nginx/1.22.1\r\n"
        b'WWW-Authenticate: Basic realm="admin"\r\nContent-Type: text/html\r\n'
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    yield from tcp_session(ctx, client, server, port, [(request, response)])


def password_guessing(
    b: CaptureBuilder,
    at: float,
    attacker: Host,
    target: Host,
    *,
    connections: int = 64,
    tasks: int = 4,
    attempts: int = 1,
    port: int = 22,
) -> float:
    """Hydra-like SSH guessing: `tasks` parallel connections, each replaced as soon as it ends.

    Returns the time the last connection starts (seconds into the capture)."""
    rng = random.Random(f"guess:{attacker.ip}:{target.ip}:{at}")
    # One connection lasts ~key exchange + attempts * failure delay; a task opens the next at once.
    per = 0.05 + attempts * 2.2
    t = at
    for k in range(connections):
        t = at + (k // tasks) * per + rng.uniform(0.0, 0.05)
        b.add(t, ssh_auth_failure, attacker, target, attempts=attempts, port=port)
    return t


def password_spraying(
    b: CaptureBuilder,
    at: float,
    attacker: Host,
    targets: Sequence[Host],
    *,
    per_target: int = 2,
    gap_s: float = 1.5,
    port: int = 22,
) -> float:
    """One source tries a few passwords on each of many hosts in turn. Returns the end time."""
    rng = random.Random(f"spray:{attacker.ip}:{at}")
    t = at
    for target in targets:
        for _ in range(per_target):
            b.add(t, ssh_auth_failure, attacker, target, attempts=1, port=port)
            t += rng.uniform(0.5, 1.0) * gap_s
    return t


def beacon(
    b: CaptureBuilder,
    at: float,
    client: Host,
    server: Host,
    *,
    period_s: float,
    count: int,
    jitter: float = 0.0,
    missed: float = 0.0,
    session: Callable[..., Any] = tls_session,
    seed: int = 0,
    **kwargs: Any,
) -> list[float]:
    """An implant checking in every `period_s * (1 ± jitter)` seconds; each check-in is one
    `session(ctx, client, server, **kwargs)` (default a TLS request). A share `missed` of the
    check-ins does not happen (the host slept, the connection failed). Returns the start times."""
    rng = random.Random(f"beacon:{client.ip}:{server.ip}:{seed}")
    times = []
    t = at
    for _ in range(count):
        if rng.random() >= missed:
            b.add(t, session, client, server, **kwargs)
            times.append(t)
        t += period_s * (1.0 + rng.uniform(-jitter, jitter))
    return times


def keepalive_beacon(
    ctx: Ctx,
    client: Host,
    server: Host,
    port: int,
    *,
    period_s: float,
    count: int,
    request: int = 120,
    response: int = 60,
    jitter: float = 0.1,
) -> Iterator[Packet]:
    """C2 over one long TCP connection: a small request every period, a small answer."""
    rng = ctx.rng
    conn = TcpConnection(ctx, client, server, port)
    yield from conn.open()
    for k in range(count):
        wait = 0.0 if k == 0 else period_s * (1.0 + rng.uniform(-jitter, jitter))
        yield from conn.send(ctx.noise.take(rng, request), from_client=True, delay=wait)
        yield from conn.send(ctx.noise.take(rng, response), from_client=False, delay=0.01)
    yield from conn.close(by_client=True, delay=0.01)


def udp_beacon(
    ctx: Ctx,
    client: Host,
    server: Host,
    port: int,
    *,
    period_s: float,
    count: int,
    size: int = 64,
    jitter: float = 0.1,
) -> Iterator[Packet]:
    """C2 over UDP: one small datagram and its answer every period, one flow while it runs."""
    rng = ctx.rng
    sport = rng.randint(40000, 60000)
    t = ctx.t
    for _ in range(count):
        sub = ctx.child(t)
        yield from udp_exchange(
            sub,
            client,
            server,
            port,
            ctx.noise.take(rng, size),
            ctx.noise.take(rng, size),
            sport=sport,
        )
        t += ns(period_s * (1.0 + rng.uniform(-jitter, jitter)))


__all__ = [
    "HYDRA_BANNER",
    "beacon",
    "http_auth_failure",
    "keepalive_beacon",
    "password_guessing",
    "password_spraying",
    "ssh_auth_failure",
    "udp_beacon",
]
