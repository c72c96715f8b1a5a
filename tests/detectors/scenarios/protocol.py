"""Benign office traffic plus protocol anomalies by two internal clients:

10.9.9.9 runs SSH to an outside server on port 443 (a tunnel through the web proxy rule) and
talks TLS to a server with a self-signed certificate; 10.9.9.8 sends HTTP Basic credentials in
cleartext and connects to a server whose certificate does not name the SNI it asked for.
"""

from __future__ import annotations

import random
from pathlib import Path

from tapetum.testing import CaptureBuilder, Host, ssh_session
from tapetum.testing.anomalies import http_basic_auth_session, tls_cert_session
from tests.detectors.scenarios.scan import office


def build(tmp: Path) -> tuple[Path, set[str]]:
    b = CaptureBuilder(seed=23)
    rng = random.Random(23)
    office(b, rng)
    tunnel, phished = Host("10.9.9.9"), Host("10.9.9.8")
    b.add(30.0, ssh_session, tunnel, Host("198.51.100.20"), port=443, duration=20.0)
    for k in range(3):
        b.add(60.0 + 20 * k, tls_cert_session, tunnel, Host("198.51.100.21"),
              sni="files.example", cert_kind="self-signed")  # fmt: skip
    b.add(50.0, http_basic_auth_session, phished, Host("10.1.0.3"), host="printer.corp.example")
    b.add(90.0, tls_cert_session, phished, Host("198.51.100.22"), sni="login.bank.example",
          cert_name="parked.example", sans=("parked.example", "*.parked.example"))  # fmt: skip
    path = tmp / "protocol.pcap"
    b.write(path)
    return path, {tunnel.ip, phished.ip}
