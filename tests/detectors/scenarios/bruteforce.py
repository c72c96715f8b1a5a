"""Benign office traffic and SSH administration, plus hydra-like SSH guessing by 10.9.9.9 and
SSH password spraying over 20 hosts by 10.9.9.8."""

from __future__ import annotations

import random
from pathlib import Path

from tapetum.testing import (
    CaptureBuilder,
    Host,
    password_guessing,
    password_spraying,
    ssh_auth_failure,
    ssh_session,
)
from tests.detectors.scenarios.scan import office


def admins(b: CaptureBuilder, rng: random.Random, server: Host, span_s: float = 200.0) -> None:
    """Legitimate SSH: interactive sessions, and a few mistyped passwords (one failure each)."""
    for k in range(10, 18):
        c = Host(f"10.1.0.{k}")
        b.add(rng.uniform(0, span_s), ssh_session, c, server, duration=rng.uniform(5, 40))
        if k % 3 == 0:
            b.add(rng.uniform(0, span_s), ssh_auth_failure, c, server, attempts=1)


def build(tmp: Path) -> tuple[Path, set[str]]:
    b = CaptureBuilder(seed=23)
    rng = random.Random(23)
    office(b, rng)
    server = Host("10.1.0.50")
    admins(b, rng, server)
    guesser, sprayer = Host("10.9.9.9"), Host("10.9.9.8")
    password_guessing(b, 30.0, guesser, server, connections=60, tasks=4)
    targets = [Host(f"10.1.0.{k}") for k in range(60, 80)]
    password_spraying(b, 60.0, sprayer, targets, per_target=2)
    path = tmp / "bruteforce.pcap"
    b.write(path)
    return path, {guesser.ip, sprayer.ip}
