"""Benign office traffic plus a 300 MB upload by 10.9.0.77 to a rare external address.

Benign besides the office: a 60 MB download (a big inbound transfer is not an upload) and a
client that uploads a few MB to a popular service. The upload is judged with the default
thresholds and no history: the absolute floor (100 MB in a window, upload/download >= 10:1, to
a destination no other internal host talks to).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from tapetum.testing import CaptureBuilder, Ctx, Host, Packet, TcpConnection
from tests.detectors.scenarios.scan import office

CHUNK = 1 << 16


def transfer(
    ctx: Ctx,
    client: Host,
    server: Host,
    port: int,
    *,
    up: int = 0,
    down: int = 0,
    rate_mbps: float = 0.0,
) -> Iterator[Packet]:
    """A TCP session that uploads `up` bytes and/or downloads `down` bytes (random payload, as
    over TLS), sent in 64 KB pieces so that hundreds of MB never sit in memory."""
    conn = TcpConnection(ctx, client, server, port, rate_mbps=rate_mbps)
    yield from conn.open()
    piece = ctx.noise.take(ctx.rng, CHUNK)
    yield from conn.send(ctx.noise.take(ctx.rng, 517), from_client=True)  # hello-sized request
    yield from conn.send(ctx.noise.take(ctx.rng, 2_800), from_client=False, delay=0.01)
    for size, from_client in ((up, True), (down, False)):
        if size:
            pieces = (piece for _ in range(size // CHUNK))
            yield from conn.send(pieces, from_client=from_client, delay=0.001)
            yield from conn.send(ctx.noise.take(ctx.rng, 90), from_client=not from_client)
    yield from conn.close(delay=0.05)


def build(tmp: Path) -> tuple[Path, set[str]]:
    b = CaptureBuilder(seed=51)
    rng = random.Random(51)
    office(b, rng, sessions=600, span_s=600.0)
    thief = Host("10.9.0.77")
    drop = Host("203.0.113.9", latency_ms=30.0)
    b.add(120.0, transfer, thief, drop, 443, up=300_000_000, rate_mbps=400.0)
    b.add(60.0, transfer, Host("10.1.0.11"), Host("192.0.2.8", latency_ms=10.0), 443,
          down=60_000_000, rate_mbps=400.0)  # fmt: skip
    popular = Host("198.51.100.20", latency_ms=15.0)
    for k in range(10, 22):  # a shared cloud drive: many hosts, a few MB each
        b.add(rng.uniform(0, 500), transfer, Host(f"10.1.0.{k}"), popular, 443,
              up=rng.randint(1, 6) * 1_000_000)  # fmt: skip
    path = tmp / "exfil.pcap"
    b.write(path)
    return path, {thief.ip}
