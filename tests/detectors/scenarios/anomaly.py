"""Two hours of benign office traffic; after the first hour (the detector's warm-up) one office
laptop, 10.1.0.15, uploads 24 MB to an external address it never talked to, over HTTPS-like TCP
in a few long connections, and sends large datagrams to an unusual UDP port."""

from __future__ import annotations

import random
from pathlib import Path

from tapetum.testing import CaptureBuilder, Host, tcp_session, udp_exchange
from tests.detectors.scenarios.scan import office

SPAN_S = 7200.0
ATTACKER = "10.1.0.15"


def build(tmp: Path) -> tuple[Path, set[str]]:
    b = CaptureBuilder(seed=41)
    rng = random.Random(41)
    office(b, rng, sessions=1400, span_s=SPAN_S)
    laptop, drop = Host(ATTACKER), Host("203.0.113.50")
    for k in range(3):
        chunk = rng.randbytes(8_000_000)
        b.add(5400.0 + 20 * k, tcp_session, laptop, drop, 443, [(chunk, b"ok")])
    for k in range(40):
        b.add(5500.0 + k * 0.5, udp_exchange, laptop, drop, 31337, rng.randbytes(1400))
    path = tmp / "anomaly.pcap"
    b.write(path)
    return path, {ATTACKER}
