"""Six minutes of benign office traffic; after the learning grace period (its first 150 s) the
host 10.9.9.9 floods an external address with UDP datagrams and then with SYNs that are never
answered (the victim is offline), so nothing benign answers the attack."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tapetum.config import Config, DetectorsSection, KitsuneSection
from tapetum.testing import (
    CaptureBuilder,
    Host,
    syn_flood,
    tcp_session,
    udp_flood,
    vertical_scan,
)
from tests.detectors.scenarios.scan import office

ATTACKER = "10.9.9.9"
VICTIM = "10.1.0.10"
UPLOADER = "10.1.0.15"
SPAN_S = 360.0


def config(**kitsune: Any) -> Config:
    """Grace periods that fit these captures: 30 s of feature mapping, 120 s of training
    (keyword arguments: other `KitsuneSection` values)."""
    fields: dict[str, Any] = {"fm_grace_s": 30.0, "train_grace_s": 120.0,
                              "min_train_packets": 1000} | kitsune  # fmt: skip
    return Config(detectors=DetectorsSection(kitsune=KitsuneSection(**fields)))


def build(tmp: Path) -> tuple[Path, set[str]]:
    b = CaptureBuilder(seed=23)
    rng = random.Random(23)
    office(b, rng, sessions=1200, span_s=SPAN_S)
    attacker, victim = Host(ATTACKER), Host("198.51.100.7")
    b.add(260.0, udp_flood, attacker, victim, packets=1500, rate_pps=500.0, port=9999, size=512)
    b.add(300.0, syn_flood, attacker, victim, 80, packets=1500, rate_pps=500.0, answer_share=0.0)
    path = tmp / "kitsune.pcap"
    b.write(path)
    return path, {ATTACKER}


def office_capture(
    path: Path,
    seed: int,
    *,
    span_s: float = 540.0,
    scan_at: float | None = None,
    flood_at: Sequence[float] = (),
    upload_at: float | None = None,
) -> Path:
    """Office traffic (`office`, 20 clients) for `span_s`, and optionally: 10.9.9.9 SYN-scans
    600 ports of the office host 10.1.0.10 (which answers), floods 198.51.100.7 with 2,000 UDP
    datagrams (once per time in `flood_at`), and the laptop 10.1.0.15 uploads 4 MB to
    203.0.113.50:443."""
    b = CaptureBuilder(seed=seed)
    rng = random.Random(seed)
    office(b, rng, sessions=int(span_s * 10 / 3), span_s=span_s)
    attacker = Host(ATTACKER)
    if scan_at is not None:
        ports = rng.sample(range(1, 5000), 600)
        b.add(scan_at, vertical_scan, attacker, Host(VICTIM), ports, open_ports=[22, 80])
    for at in flood_at:
        b.add(at, udp_flood, attacker, Host("198.51.100.7"), packets=2000, rate_pps=500.0,
              port=9999, size=512)  # fmt: skip
    if upload_at is not None:
        chunk = rng.randbytes(4_000_000)
        b.add(upload_at, tcp_session, Host(UPLOADER), Host("203.0.113.50"), 443, [(chunk, b"ok")])
    b.write(path)
    return path
