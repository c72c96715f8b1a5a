"""Port-scan detection on synthetic nmap-like scans and on real captures with known scans."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from tapetum.config import Config, ScanSection
from tapetum.detectors.scan import ScanDetector
from tapetum.errors import ModelError
from tapetum.pipeline import Pipeline
from tapetum.records import Alert
from tapetum.sources.arp import arp_rows
from tapetum.sources.pcap import CaptureReader
from tapetum.testing import CaptureBuilder, Host, horizontal_scan, http_session, vertical_scan
from tests.conftest import data_path
from tests.detectors.helpers import flows_of, write

ATTACKER = Host("10.0.0.66")
TARGET = Host("10.0.0.9")
ROUTER = Host("10.0.0.1")


def detect(path: Path, config: ScanSection | None = None) -> list[Alert]:
    det = ScanDetector(config)
    for fb in flows_of(path):
        det.observe(fb)
    return det.poll(None) + det.flush()


def scan_capture(tmp_path: Path, ports: int, *, seed: int = 1) -> Path:
    b = CaptureBuilder(seed=seed)
    chosen = random.Random(seed).sample(range(1, 10_000), ports)
    b.add(1.0, vertical_scan, ATTACKER, TARGET, chosen, open_ports=set(chosen[:3]))
    path = write(b, tmp_path, "scan.pcap")
    return path


def test_vertical_scan_is_one_explained_alert(tmp_path: Path) -> None:
    alerts = detect(scan_capture(tmp_path, 300))
    assert len(alerts) == 1
    a = alerts[0]
    assert a.signature == "scan.vertical" and a.entity == "10.0.0.66"
    assert a.dest_ip == "10.0.0.9"
    assert a.observed["distinct_ports"] == 300
    assert a.observed["answered"] == 3
    assert a.mitre_technique_id == ("T1046",)
    assert "10.0.0.66 probed 300 TCP ports on 10.0.0.9" in a.explanation
    assert "normal for this host: 0 ports" in a.explanation
    assert a.score > 0.99
    assert a.first_ts_ns is not None and a.last_ts_ns is not None
    assert a.first_ts_ns < a.last_ts_ns


def test_few_ports_and_busy_benign_traffic_do_not_alert(tmp_path: Path) -> None:
    assert detect(scan_capture(tmp_path, 10)) == []
    # 60 real HTTP sessions from one client to one server: many flows, all with data.
    b = CaptureBuilder(seed=3)
    client, server = Host("10.0.0.5"), Host("192.0.2.80")
    for k in range(60):
        b.add(1.0 + k * 0.5, http_session, client, server, host="example.org")
    path = write(b, tmp_path, "web.pcap")
    assert detect(path) == []


def test_horizontal_scan_through_a_router(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=2)
    targets = [f"198.51.100.{k}" for k in range(1, 101)]
    live = {t: Host(t) for t in targets[:20]}
    b.add(
        1.0, horizontal_scan, ATTACKER, targets, 22, live=live, open_on=targets[:5],
        local=False, router=ROUTER,
    )  # fmt: skip
    path = write(b, tmp_path, "h.pcap")
    alerts = detect(path)
    horizontal = [a for a in alerts if a.signature == "scan.horizontal"]
    assert len(horizontal) == 1
    assert horizontal[0].observed["distinct_hosts"] == 100
    assert horizontal[0].dest_port == 22
    assert "probed port 22/tcp on 100 hosts" in horizontal[0].explanation


def test_threshold_is_configurable(tmp_path: Path) -> None:
    path = scan_capture(tmp_path, 40)
    assert len(detect(path, ScanSection(vertical_ports=25))) == 1
    assert detect(path, ScanSection(vertical_ports=50)) == []


def test_state_round_trip_and_learned_baseline(tmp_path: Path) -> None:
    flows = flows_of(scan_capture(tmp_path, 60))
    det = ScanDetector()
    # Learning the scan as normal (as `tapetum learn` would on a clean period) raises the bar.
    all_rows = [det.features(fb) for fb in flows]
    before = np.concatenate([det.score(r) for r in all_rows])
    for r in all_rows:
        det.learn(r)
    after = np.concatenate([det.score(r) for r in all_rows])
    assert after.max() < before.max()
    restored = ScanDetector.from_state(json.loads(json.dumps(det.state())))
    again = np.concatenate([restored.score(r) for r in all_rows])
    np.testing.assert_array_equal(after, again)
    bad = det.state() | {"version": 999}
    with pytest.raises(ModelError, match="version"):
        ScanDetector.from_state(bad)


def test_real_slips_horizontal_scans() -> None:
    """Stratosphere's test7 capture: 192.168.2.16 scans telnet and web ports (Slips expects it)."""
    alerts = detect(data_path("slips", "test7-malicious.pcap"))
    ports = {a.dest_port for a in alerts if a.signature == "scan.horizontal"}
    assert {a.entity for a in alerts} == {"192.168.2.16"}
    assert {23, 2323, 8080} <= ports


def test_real_slips_icmp_sweep() -> None:
    """Stratosphere's test12: an ICMP echo sweep of the /24 from 192.168.1.109."""
    alerts = detect(data_path("slips", "test12-icmp-portscan.pcap"))
    assert len(alerts) == 1
    assert alerts[0].entity == "192.168.1.109" and alerts[0].proto == "ICMP"
    assert alerts[0].observed["distinct_hosts"] >= 10


@pytest.mark.parametrize(
    "parts", [("zeek", "ssh_basic", "ssh.pcap"), ("zeek", "wikipedia", "wikipedia.pcap")]
)
def test_benign_real_captures_raise_nothing(parts: tuple[str, ...]) -> None:
    assert detect(data_path(*parts)) == []


def test_demo_capture_scan_is_one_incident() -> None:
    from tapetum.cli import demo_capture

    cfg = Config()
    pipe = Pipeline(cfg, detectors=[ScanDetector(cfg.detectors.scan)])
    summary = pipe.run([str(demo_capture())])
    assert len(summary.incidents) == 1
    inc = summary.incidents[0]
    assert inc.entity == "10.20.0.66"
    # nmap on its own /24 asks ARP for every address before probing: that is a sweep too.
    assert set(inc.signatures) == {"scan.vertical", "scan.horizontal", "scan.arp_sweep"}
    assert inc.alert_count == len(summary.alerts) == 3
    vertical = next(a for a in summary.alerts if a.signature == "scan.vertical")
    assert vertical.observed["distinct_ports"] >= 1000


def test_nfstream_corpus_only_the_syn_scan_alerts() -> None:
    """Noise check on 216 real captures of many protocols: only synscan.pcap (an nmap SYN scan
    of scanme.nmap.org, 64.13.134.52) is a scan, and it is the only one that alerts."""
    folder = data_path("nfstream", "pcaps")
    alerting: dict[str, list[Alert]] = {}
    for path in sorted(folder.iterdir()):
        alerts = detect(path)
        if alerts:
            alerting[path.name] = alerts
    assert set(alerting) == {"synscan.pcap"}
    (a,) = alerting["synscan.pcap"]
    assert a.signature == "scan.vertical" and a.dest_ip == "64.13.134.52"
    assert a.observed["distinct_ports"] >= 1000


def _pipeline_alerts(path: Path) -> list[Alert]:
    cfg = Config()
    cfg.protocols.enabled = False  # scans need flows and ARP only
    return Pipeline(cfg, detectors=[ScanDetector(cfg.detectors.scan)]).run([str(path)]).alerts


def test_real_slips_arp_sweep() -> None:
    """Stratosphere's test8: 192.168.1.247 asks for every address of 192.168.1.0/24 by ARP
    (no IP flow at all); the router's few requests for its clients are not a sweep."""
    alerts = _pipeline_alerts(data_path("slips", "test8-malicious.pcap"))
    assert [a.signature for a in alerts] == ["scan.arp_sweep"]
    a = alerts[0]
    assert a.entity == "192.168.1.247" and a.proto == "ARP"
    assert a.observed["distinct_hosts"] >= 250
    assert a.mitre_technique_id == ("T1018",)
    assert "sent ARP requests for" in a.explanation


def test_arp_in_benign_real_captures_is_not_a_sweep() -> None:
    """Every nfstream capture that carries ARP: ordinary resolution never makes a sweep."""
    folder = data_path("nfstream", "pcaps")
    with_arp = 0
    for path in sorted(folder.iterdir()):
        with CaptureReader(path) as reader:
            has_arp = any(arp_rows(b) is not None for b in reader)
        if not has_arp:
            continue
        with_arp += 1
        assert [a for a in _pipeline_alerts(path) if a.proto == "ARP"] == [], path.name
    assert with_arp >= 5


def test_slow_scan_spread_over_an_hour(tmp_path: Path) -> None:
    """One port every 50 s: at most 6 in any 5-minute window, 60 in the hour."""
    b = CaptureBuilder(seed=8)
    ports = random.Random(8).sample(range(1, 10_000), 60)
    for k, port in enumerate(ports):
        b.add(10.0 + 50.0 * k, vertical_scan, ATTACKER, TARGET, [port])
    path = write(b, tmp_path, "slow.pcap")
    alerts = detect(path)
    assert [a.signature for a in alerts] == ["scan.slow"]
    a = alerts[0]
    assert a.entity == ATTACKER.ip and a.dest_ip == TARGET.ip
    assert a.observed["distinct_ports"] == 60
    assert a.explanation.startswith("slow scan (under the threshold in every 5.0 min window")
    # Off when configured so; and a fast scan is reported once, not again as slow.
    assert detect(path, ScanSection(slow_window_s=0)) == []
    fast = detect(scan_capture(tmp_path, 300))
    assert [x.signature for x in fast] == ["scan.vertical"]
