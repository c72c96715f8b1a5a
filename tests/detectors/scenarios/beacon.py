"""Benign office traffic and benign periodic traffic (NTP to a pool, an update server most hosts
poll), plus two implants: 10.1.0.66 checks in over TLS every 10 s ± 30 % (10 % of check-ins
missed) and 10.1.0.67 beacons every 30 s inside one long TCP connection."""

from __future__ import annotations

import random
from pathlib import Path

from tapetum.testing import (
    CaptureBuilder,
    Host,
    beacon,
    keepalive_beacon,
    ntp_exchange,
)
from tests.detectors.scenarios.scan import office

SPAN_S = 900.0
CLIENTS = [Host(f"10.1.0.{k}") for k in range(10, 30)]


def benign_periodic(b: CaptureBuilder, rng: random.Random, span_s: float = SPAN_S) -> None:
    """NTP every 64 s to one of three pool servers, and an update server 15 hosts poll each
    minute: as regular as any beacon, and popular or infrastructure."""
    pool = [Host(f"192.0.2.{k}") for k in (123, 124, 125)]
    for c in CLIENTS[:12]:
        b.add(rng.uniform(0, 64), ntp_exchange, c, rng.choice(pool), polls=int(span_s // 64))
    updates = Host("198.51.100.80")
    for k, c in enumerate(CLIENTS[5:]):
        beacon(
            b, rng.uniform(0, 60), c, updates, period_s=60.0, count=int(span_s // 60) - 1,
            jitter=0.05, seed=k, sni="updates.example.com",
        )  # fmt: skip


def implants(b: CaptureBuilder) -> set[str]:
    tls_implant, session_implant = Host("10.1.0.66"), Host("10.1.0.67")
    c2 = Host("203.0.113.66", latency_ms=40.0)
    beacon(
        b, 5.0, tls_implant, c2, period_s=10.0, count=85, jitter=0.3, missed=0.1,
        sni="cdn-static-img.example", download=2400,
    )  # fmt: skip
    b.add(10.0, keepalive_beacon, session_implant, Host("203.0.113.67"), 8443, period_s=30.0,
          count=14)  # fmt: skip
    return {tls_implant.ip, session_implant.ip}


def build(tmp: Path) -> tuple[Path, set[str]]:
    b = CaptureBuilder(seed=31)
    rng = random.Random(31)
    office(b, rng, sessions=600, span_s=SPAN_S)
    benign_periodic(b, rng)
    attackers = implants(b)
    path = tmp / "beacon.pcap"
    b.write(path)
    return path, attackers
