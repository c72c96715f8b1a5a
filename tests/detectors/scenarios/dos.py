"""Benign office traffic and a busy web server (many short connections from many clients), plus
a spoofed SYN flood against the web server (entity: the victim), a UDP flood from 10.9.9.9 and a
slowloris attack from 10.9.9.8 (entities: the sources)."""

from __future__ import annotations

import random
from pathlib import Path

from tapetum.testing import CaptureBuilder, Host, http_session, slowloris, syn_flood, udp_flood
from tests.detectors.scenarios.scan import office


def busy_web(
    b: CaptureBuilder,
    rng: random.Random,
    server: Host,
    *,
    sessions: int = 400,
    span_s: float = 200.0,
) -> None:
    """Short successful HTTP sessions from 150 clients."""
    clients = [Host(f"10.2.{k // 250}.{k % 250 + 1}") for k in range(150)]
    for _ in range(sessions):
        b.add(
            rng.uniform(0, span_s),
            http_session,
            rng.choice(clients),
            server,
            host="intranet.example",
            requests=rng.randint(1, 3),
        )


def build(tmp: Path) -> tuple[Path, set[str]]:
    b = CaptureBuilder(seed=31)
    rng = random.Random(31)
    office(b, rng)
    web = Host("10.1.0.80")
    busy_web(b, rng, web)
    router = Host("10.1.0.1")
    b.add(
        40.0,
        syn_flood,
        Host("10.9.9.7"),
        web,
        443,
        packets=6000,
        rate_pps=3000.0,
        spoof=True,
        router=router,
    )
    b.add(90.0, udp_flood, Host("10.9.9.9"), Host("10.1.0.2"), packets=8000, rate_pps=4000.0)
    b.add(20.0, slowloris, Host("10.9.9.8"), web, connections=60, duration=60.0)
    path = tmp / "dos.pcap"
    b.write(path)
    return path, {web.ip, "10.9.9.9", "10.9.9.8"}
