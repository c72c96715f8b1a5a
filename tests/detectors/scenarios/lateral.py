"""Benign office traffic and routine admin-protocol use (file shares, a terminal server, an admin
reaching two servers), plus lateral movement: a compromised client 10.1.0.25 opens SSH sessions
to four servers it never used SSH with, and one of them (10.1.1.1) then opens new SSH sessions
onward (a pivot chain)."""

from __future__ import annotations

import random
from pathlib import Path

from tapetum.testing import CaptureBuilder, Host, ssh_session, tcp_session
from tests.detectors.scenarios.scan import office


def smb_session(rng: random.Random, requests: int = 4) -> list[tuple[bytes, bytes]]:
    """SMB2-sized request/response pairs (negotiate, session setup, tree connect, reads)."""
    return [
        (rng.randbytes(rng.randint(100, 400)), rng.randbytes(rng.randint(200, 3000)))
        for _ in range(requests)
    ]


def routine_admin(b: CaptureBuilder, rng: random.Random, *, span_s: float = 200.0) -> None:
    """Admin protocols as a small office uses them every day."""
    files, dc, terminal = Host("10.1.0.50"), Host("10.1.0.51"), Host("10.1.0.60")
    clients = [Host(f"10.1.0.{k}") for k in range(10, 22)]
    for c in clients:  # mapped drives on the file server and the domain controller
        b.add(rng.uniform(0, span_s), tcp_session, c, files, 445, smb_session(rng))
        if rng.random() < 0.5:
            b.add(rng.uniform(0, span_s), tcp_session, c, dc, 445, smb_session(rng, 2))
    for c in clients[:3]:
        b.add(rng.uniform(0, span_s), tcp_session, c, terminal, 3389, smb_session(rng, 6))
    admin = Host("10.1.0.5")
    for s in ("10.1.1.20", "10.1.1.21"):
        b.add(rng.uniform(0, span_s), ssh_session, admin, Host(s), duration=15.0)


def build(tmp: Path) -> tuple[Path, set[str]]:
    b = CaptureBuilder(seed=21)
    rng = random.Random(21)
    office(b, rng)
    routine_admin(b, rng)
    attacker = Host("10.1.0.25")
    servers = [Host(f"10.1.1.{k}") for k in range(1, 5)]
    for i, s in enumerate(servers):
        b.add(30.0 + 25.0 * i, ssh_session, attacker, s, duration=10.0)
    pivot = servers[0]
    for i, onward in enumerate(("10.1.2.1", "10.1.2.2")):
        b.add(60.0 + 20.0 * i, ssh_session, pivot, Host(onward), duration=10.0)
    path = tmp / "lateral.pcap"
    b.write(path)
    return path, {attacker.ip, pivot.ip}
