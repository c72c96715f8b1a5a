"""Floods and slow DoS on synthetic hping3-like and slowloris-like captures, a busy benign web
server, and real captures."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from tapetum.config import Config, DosSection
from tapetum.detectors.dos import DosDetector
from tapetum.errors import ModelError
from tapetum.pipeline import Pipeline
from tapetum.records import Alert
from tapetum.registry import build_detectors
from tapetum.testing import (
    CaptureBuilder,
    Host,
    http_session,
    icmp_flood,
    ping,
    slowloris,
    syn_flood,
    tcp_failed,
    udp_flood,
)
from tests.conftest import data_path
from tests.detectors.helpers import flows_of, replay_flows, write

VICTIM = Host("10.0.0.9")
ATTACKER = Host("10.0.0.66")
ROUTER = Host("10.0.0.1")


def detect(path: Path, config: DosSection | None = None) -> list[Alert]:
    return replay_flows(DosDetector(config), path)


def test_spoofed_syn_flood_is_about_the_victim(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=1)
    b.add(
        1.0,
        syn_flood,
        ATTACKER,
        VICTIM,
        80,
        packets=30_000,
        rate_pps=10_000.0,
        spoof=True,
        router=ROUTER,
    )
    (a,) = detect(write(b, tmp_path))
    assert a.signature == "dos.syn_flood" and a.signature_id == 9_000_070
    assert a.entity == VICTIM.ip == a.dest_ip and a.src_ip is None and a.dest_port == 80
    assert a.category == "dos" and a.mitre_tactic == ("impact",)
    assert a.mitre_technique_id == ("T1498.001",)
    assert 9_000 <= a.observed["half_open_syn_per_s"] <= 11_000
    # Spoofed: about as many sources as SYNs in the peak window (sketch: a few % error).
    assert 0.8 * a.observed["flows"] <= a.observed["sources"] <= 1.2 * a.observed["flows"]
    assert a.observed["flood_share"] == 1.0 and a.severity == 1
    assert 2.5 <= a.observed["duration_s"] <= 3.5
    assert "10.0.0.9 received 10,0" in a.explanation
    assert "SYNs/s on port 80/tcp from about" in a.explanation
    assert "100% never completed the handshake" in a.explanation
    assert "normal for this host: 0 half-open SYNs/s" in a.explanation


def test_one_source_syn_flood_is_about_the_source(tmp_path: Path) -> None:
    """hping3 -S --flood from a real address: its kernel resets the SYN-ACKs."""
    b = CaptureBuilder(seed=2)
    b.add(1.0, syn_flood, ATTACKER, VICTIM, 443, packets=8_000, rate_pps=2_000.0)
    (a,) = detect(write(b, tmp_path))
    assert a.entity == ATTACKER.ip == a.src_ip and a.dest_ip == VICTIM.ip
    assert a.observed["top_source_share"] == 1.0 and a.observed["sources"] == 1
    assert a.explanation.startswith("10.0.0.66 sent 2,0")


def test_udp_and_icmp_floods(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=3)
    b.add(1.0, udp_flood, ATTACKER, VICTIM, packets=20_000, rate_pps=8_000.0, size=512)
    b.add(20.0, icmp_flood, Host("10.0.0.67"), VICTIM, packets=6_000, rate_pps=2_000.0)
    alerts = {a.signature: a for a in detect(write(b, tmp_path))}
    assert set(alerts) == {"dos.udp_flood", "dos.icmp_flood"}
    udp, icmp = alerts["dos.udp_flood"], alerts["dos.icmp_flood"]
    assert udp.entity == ATTACKER.ip and udp.dest_ip == VICTIM.ip and udp.proto == "UDP"
    assert 7_000 <= udp.observed["unanswered_udp_pkts_per_s"] <= 9_000
    assert udp.dest_port is None and udp.signature_id == 9_000_071
    assert icmp.entity == "10.0.0.67" and icmp.proto == "ICMP" and icmp.signature_id == 9_000_072
    assert 1_700 <= icmp.observed["icmp_echo_pkts_per_s"] <= 2_300
    # hping3 --icmp keeps one id: the whole flood is one long flow, spread over its windows.
    assert icmp.observed["flows"] < 2


def test_slowloris(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=4)
    b.add(1.0, slowloris, ATTACKER, VICTIM, connections=80, duration=90.0)
    # A browser's few idle keep-alive connections are not slowloris.
    for k in range(6):
        b.add(2.0 + k, http_session, Host("10.0.0.20"), VICTIM, host="www.example.org")
    path = write(b, tmp_path)
    (a,) = detect(path)
    assert a.signature == "dos.slow_http" and a.signature_id == 9_000_073
    assert a.entity == ATTACKER.ip and a.dest_ip == VICTIM.ip and a.dest_port == 80
    assert a.mitre_technique_id == ("T1499.002",)
    assert a.observed["concurrent_slow_connections"] == 80
    assert "10.0.0.66 held 80 slow connections open at once to 10.0.0.9 port 80" in a.explanation
    assert detect(path, DosSection(slow_min_connections=100)) == []


def test_busy_web_server_and_benign_noise_do_not_alert(tmp_path: Path) -> None:
    """1,500 short successful sessions from 300 clients in 60 s, with some failures and pings."""
    b = CaptureBuilder(seed=5)
    rng = random.Random(5)
    clients = [Host(f"10.2.{k // 200}.{k % 200 + 1}") for k in range(300)]
    for _ in range(1500):
        b.add(rng.uniform(0, 60), http_session, rng.choice(clients), VICTIM, host="intranet")
    for _ in range(60):  # a dead backend and a closed port
        c = rng.choice(clients)
        b.add(
            rng.uniform(0, 60),
            tcp_failed,
            c,
            VICTIM,
            rng.choice([80, 8443]),
            kind=rng.choice(["refused", "unanswered"]),
        )
    for c in clients[:20]:
        b.add(rng.uniform(0, 60), ping, c, VICTIM, count=10, interval=0.2)
    path = write(b, tmp_path)
    assert detect(path) == []
    det = DosDetector()
    scores = np.concatenate([det.score(det.features(fb)) for fb in flows_of(path)])
    assert scores.max() < 0.2


def test_long_flood_is_one_alert_per_episode(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=6)
    b.add(1.0, syn_flood, ATTACKER, VICTIM, 80, packets=20_000, rate_pps=500.0, random_sport=True)
    path = write(b, tmp_path)
    (a,) = detect(path)  # 40 s of flood: four windows, one alert
    assert a.observed["windows"] >= 4 and 35 <= a.observed["duration_s"] <= 45
    alerts = detect(path, DosSection(episode_max_s=15.0))
    assert len(alerts) >= 2 and len({x.alert_id for x in alerts}) == len(alerts)


def test_poll_emits_when_windows_are_final(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=7)
    b.add(1.0, udp_flood, ATTACKER, VICTIM, packets=10_000, rate_pps=5_000.0)
    (fb,) = flows_of(write(b, tmp_path))
    det = DosDetector(lag_s=60.0)
    det.observe(fb)
    assert det.poll(None) == []  # the flood's windows may still get flows
    end = int(fb.num["end_ns"].max())
    polled = det.poll(end + int(80e9))
    assert [a.signature for a in polled] == ["dos.udp_flood"]
    assert det.flush() == []


def test_learnt_baseline_raises_the_bar_and_state_round_trip(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=8)
    b.add(1.0, udp_flood, ATTACKER, VICTIM, packets=10_000, rate_pps=5_000.0)
    rows = [DosDetector().features(fb) for fb in flows_of(write(b, tmp_path))]
    det = DosDetector(DosSection(max_victims=10))
    before = np.concatenate([det.score(r) for r in rows])
    for r in rows:
        det.learn(r)
    after = np.concatenate([det.score(r) for r in rows])
    assert before.max() > 0.5 > after.max()  # 5,000/s is now this victim's normal
    restored = DosDetector.from_state(json.loads(json.dumps(det.state())))
    for r in rows:
        np.testing.assert_array_equal(det.score(r), restored.score(r))
    with pytest.raises(ModelError, match="version"):
        DosDetector.from_state(det.state() | {"version": 0})
    with pytest.raises(ModelError, match="damaged"):
        DosDetector.from_state(det.state() | {"baseline": {"x": "y"}})


def test_pipeline_incident(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=9)
    b.add(
        1.0,
        syn_flood,
        ATTACKER,
        VICTIM,
        80,
        packets=6_000,
        rate_pps=3_000.0,
        spoof=True,
        router=ROUTER,
    )
    cfg = Config()
    summary = Pipeline(cfg, detectors=build_detectors(cfg, ["dos"])).run([str(write(b, tmp_path))])
    (inc,) = summary.incidents
    assert inc.entity == VICTIM.ip and inc.stage == "impact" and "SYN flood" in inc.title


@pytest.mark.parametrize(
    "parts",
    [
        ("zeek", "ssh_basic", "ssh.pcap"),
        ("zeek", "wikipedia", "wikipedia.pcap"),
        ("slips", "test7-malicious.pcap"),
        ("slips", "test-cc", "test-cc-capture-1.pcap"),
        ("slips", "test19-malicious-ssh", "malicious-ssh-bruteforce.pcap"),
        ("nfstream", "pcaps", "synscan.pcap"),
        ("nfstream", "pcaps", "webex.pcap"),
    ],
)
def test_real_captures_raise_nothing(parts: tuple[str, ...]) -> None:
    """Scans, brute force, C2 and busy real traffic are not floods."""
    assert detect(data_path(*parts)) == []
