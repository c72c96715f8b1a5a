"""Benign office traffic plus two internal hosts talking to listed infrastructure.

10.1.0.66 resolves and connects (TLS) to a listed C2 domain and address; 10.1.0.67 reaches an
address inside a listed /15. The indicators come from tests/intel/data/scenario.txt, loaded by
the scenario's own config (the default config has no indicators).
"""

from __future__ import annotations

import random
from pathlib import Path

from tapetum.config import Config, DetectorsSection, IntelSection
from tapetum.testing import CaptureBuilder, Host, dns_lookup, tls_session
from tests.detectors.scenarios.scan import office

INDICATORS = Path(__file__).resolve().parents[2] / "intel" / "data" / "scenario.txt"


def config() -> Config:
    return Config(detectors=DetectorsSection(intel=IntelSection(files=[str(INDICATORS)])))


def build(tmp: Path) -> tuple[Path, set[str]]:
    b = CaptureBuilder(seed=31)
    rng = random.Random(31)
    office(b, rng)
    infected, other = Host("10.1.0.66"), Host("10.1.0.67")
    resolver = Host("10.1.0.2")
    c2 = Host("203.0.113.66")
    for k in range(4):
        t = 20.0 + 40 * k
        b.add(t, dns_lookup, infected, resolver, "update.evil-c2.example", a=[c2.ip])
        b.add(t + 0.05, tls_session, infected, c2, sni="update.evil-c2.example")
    b.add(70.0, tls_session, other, Host("198.19.4.20"), sni="cdn.example")
    path = tmp / "intel.pcap"
    b.write(path)
    return path, {infected.ip, other.ip}
