"""Benign office traffic plus a vertical and a horizontal scan by 10.9.9.9."""

from __future__ import annotations

import random
from pathlib import Path

from tapetum.testing import (
    CaptureBuilder,
    Host,
    dns_lookup,
    horizontal_scan,
    http_session,
    tcp_failed,
    tls_session,
    vertical_scan,
)


def office(
    b: CaptureBuilder, rng: random.Random, *, sessions: int = 400, span_s: float = 200.0
) -> None:
    """Benign web, TLS and DNS from 20 clients, and benign failures (a dead service, retries)."""
    clients = [Host(f"10.1.0.{k}") for k in range(10, 30)]
    web = [Host(f"192.0.2.{k}") for k in range(1, 40)]
    dns = Host("10.1.0.2")
    for k in range(sessions):
        c, s = rng.choice(clients), rng.choice(web)
        t = rng.uniform(0, span_s)
        kind = k % 3
        if kind == 0:
            b.add(t, http_session, c, s, host=f"site{rng.randint(1, 30)}.example")
        elif kind == 1:
            b.add(t, tls_session, c, s, sni=f"app{rng.randint(1, 30)}.example")
        else:
            b.add(t, dns_lookup, c, dns, f"name{rng.randint(1, 99)}.example")
    for _ in range(sessions * 3 // 10):
        c, s = rng.choice(clients), rng.choice(web)
        kind = rng.choice(["unanswered", "refused", "syn-reset"])
        b.add(rng.uniform(0, span_s), tcp_failed, c, s, rng.choice([81, 8443, 5222]), kind=kind)


def build(tmp: Path) -> tuple[Path, set[str]]:
    b = CaptureBuilder(seed=11)
    rng = random.Random(11)
    office(b, rng)
    attacker = Host("10.9.9.9")
    b.add(20.0, vertical_scan, attacker, Host("10.1.0.10"), rng.sample(range(1, 5000), 200))
    targets = [f"198.51.100.{k}" for k in range(1, 80)]
    b.add(
        100.0, horizontal_scan, attacker, targets, 445, live={}, local=False,
        router=Host("10.1.0.1"),
    )  # fmt: skip
    path = tmp / "scan.pcap"
    b.write(path)
    return path, {attacker.ip}
