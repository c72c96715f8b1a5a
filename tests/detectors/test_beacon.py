"""C2 beaconing: the Slips test-cc capture, benign periodic traffic, jitter, missed beacons,
beacons inside one connection, episodes, bounds and persistence."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from tapetum.config import BeaconSection
from tapetum.detectors.beacon import BeaconDetector
from tapetum.errors import ModelError
from tapetum.features.beacon import fold_intervals, series_stats
from tapetum.records import Alert
from tapetum.testing import (
    CaptureBuilder,
    Host,
    beacon,
    http_session,
    keepalive_beacon,
    tls_session,
    udp_beacon,
)
from tests.conftest import data_path
from tests.detectors.helpers import replay, stream_of, write
from tests.detectors.scenarios.beacon import CLIENTS, benign_periodic
from tests.detectors.scenarios.scan import office

C2 = Host("203.0.113.66", latency_ms=40.0)
NS = 1_000_000_000


def detect(path: Path, config: BeaconSection | None = None) -> list[Alert]:
    return replay(BeaconDetector(config), stream_of(path))


def test_slips_test_cc_beacon() -> None:
    """Slips' test-cc: 147.32.80.37 checks in with 141.193.213.21:443 every ~2.2 s."""
    alerts = detect(data_path("slips", "test-cc", "test-cc-capture-1.pcap"))
    assert [(a.signature, a.entity, a.dest_ip, a.dest_port) for a in alerts] == [
        ("beacon.periodic", "147.32.80.37", "141.193.213.21", 443)
    ]
    a = alerts[0]
    assert a.category == "c2-beacon" and a.signature_id == 9_000_020
    assert a.mitre_tactic == ("command-and-control",) and a.mitre_technique_id == ("T1071.001",)
    assert 2.1 < a.observed["period_s"] < 2.3
    assert a.observed["connections"] >= 290 and a.observed["jitter"] < 0.1
    assert a.observed["bytes_median"] > 0
    for words in ("every 2.2 s", "294 times", "per connection", "regularity"):
        assert words in a.explanation, words


@pytest.mark.parametrize(
    "parts", [("zeek", "ssh_basic", "ssh.pcap"), ("zeek", "wikipedia", "wikipedia.pcap")]
)
def test_zeek_captures_raise_nothing(parts: tuple[str, ...]) -> None:
    assert detect(data_path(*parts)) == []


def periodic_capture(tmp_path: Path) -> Path:
    b = CaptureBuilder(seed=41)
    rng = random.Random(41)
    office(b, rng, sessions=600, span_s=900.0)
    benign_periodic(b, rng)
    return write(b, tmp_path, "periodic.pcap")


def test_benign_periodic_traffic_is_down_weighted_not_alerted(tmp_path: Path) -> None:
    """NTP every 64 s to a pool and an update server most hosts poll every minute are as
    regular as a beacon: with the prevalence and infrastructure weights off they alert, with
    the defaults they do not."""
    path = periodic_capture(tmp_path)
    assert detect(path) == []
    raw = detect(path, BeaconSection(prevalence_weight=1.0, infrastructure_weight=1.0))
    flagged = {(a.dest_ip, a.dest_port) for a in raw}
    assert ("198.51.100.80", 443) in flagged
    assert any(port == 123 for _, port in flagged)
    assert {a.entity for a in raw} <= {c.ip for c in CLIENTS}


def test_jittered_beacon_with_missed_check_ins(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=42)
    rng = random.Random(42)
    office(b, rng, sessions=300, span_s=900.0)
    implant = Host("10.1.0.66")
    beacon(b, 0.0, implant, C2, period_s=20.0, count=45, jitter=0.3, missed=0.2,
           sni="img.cdn.example", download=2000)  # fmt: skip
    alerts = detect(write(b, tmp_path, "jitter.pcap"))
    assert [(a.entity, a.dest_ip) for a in alerts] == [(implant.ip, C2.ip)]
    a = alerts[0]
    assert 17.0 < a.observed["period_s"] < 23.0 and a.observed["missed"] >= 3
    assert a.observed["on_grid"] > 0.8


def test_regularity_separates_beacons_from_random_traffic() -> None:
    """Jitter ±30 % and 20 % missed beacons stay above the threshold; Poisson arrivals with the
    same rate and the same (constant) sizes stay below it, most of them far below, over seeds."""
    thr = BeaconSection().alert_regularity
    beacons, randoms = [], []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        n = 60
        sleeps = 30.0 * (1 + rng.uniform(-0.3, 0.3, n))
        t = np.cumsum(sleeps)
        t = t[rng.random(n) > 0.2]
        sizes = 4000 + rng.integers(-20, 20, t.size)
        st = series_stats((t * NS).astype(np.int64), sizes, observed_s=float(t[-1] - t[0]),
                          horizon_s=3600.0, tolerance=0.35)  # fmt: skip
        beacons.append(st.regularity)
        poisson = np.cumsum(rng.exponential(30.0, t.size))
        st2 = series_stats((poisson * NS).astype(np.int64), sizes, observed_s=float(poisson[-1]),
                           horizon_s=3600.0, tolerance=0.35)  # fmt: skip
        randoms.append(st2.regularity)
    assert min(beacons) >= thr, beacons
    assert max(randoms) < thr, randoms
    assert float(np.median(randoms)) < thr - 0.15, randoms


def test_fold_intervals() -> None:
    iat = np.array([10.0, 20.5, 9.0, 31.0, 4.0, 250.0])
    folded, on = fold_intervals(iat, 10.0, 0.35)
    assert on.tolist() == [True, True, True, True, False, False]
    np.testing.assert_allclose(folded[:4], [10.0, 10.25, 9.0, 31.0 / 3])
    assert folded[4] == 4.0 and folded[5] == 250.0


def test_one_alert_per_episode_and_early_alert(tmp_path: Path) -> None:
    """A 40-minute beacon alerts once while it runs (before the end of input), not again at the
    next checks; after a long silence a new episode alerts again."""
    b = CaptureBuilder(seed=43)
    implant = Host("10.1.0.66")
    beacon(b, 0.0, implant, C2, period_s=15.0, count=160, jitter=0.1, sni="a.example",
           download=1500)  # fmt: skip
    beacon(b, 2400.0 + 3600.0, implant, C2, period_s=15.0, count=60, jitter=0.1, seed=1,
           sni="a.example", download=1500)  # fmt: skip
    det = BeaconDetector()
    polled: list[Alert] = []
    for step in stream_of(write(b, tmp_path, "episodes.pcap")):
        det.observe_events(step.events)
        if step.flows is not None:
            det.observe(step.flows)
        polled += det.poll(None)
    rest = det.flush()
    alerts = polled + rest
    assert [a.entity for a in alerts] == [implant.ip, implant.ip]
    first, second = alerts
    assert first in polled  # given early, in data time
    assert first.last_ts_ns is not None and second.first_ts_ns is not None
    assert second.first_ts_ns - first.last_ts_ns > 3000 * NS


def test_beacon_inside_one_tcp_connection(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=44)
    implant = Host("10.1.0.67")
    b.add(0.0, keepalive_beacon, implant, C2, 8443, period_s=30.0, count=15)
    # The same rhythm for a minute only: chat and VPN keep-alives look like that.
    b.add(0.0, keepalive_beacon, Host("10.1.0.68"), C2, 8443, period_s=5.0, count=12)
    alerts = detect(write(b, tmp_path, "session.pcap"))
    assert [(a.signature, a.entity) for a in alerts] == [("beacon.session", implant.ip)]
    assert 28.0 < alerts[0].observed["period_s"] < 32.0
    assert "in one TCP connection" in alerts[0].explanation


def test_beacon_inside_one_udp_flow(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=45)
    implant = Host("10.1.0.69")
    b.add(0.0, udp_beacon, implant, C2, 5353 + 1000, period_s=20.0, count=20)
    alerts = detect(write(b, tmp_path, "udp.pcap"))
    assert [(a.signature, a.entity, a.proto) for a in alerts] == [
        ("beacon.session", implant.ip, "UDP")
    ]


def test_random_browsing_of_one_site_is_not_a_beacon(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=46)
    rng = random.Random(46)
    user, site = Host("10.1.0.70"), Host("192.0.2.80")
    t = 0.0
    for _ in range(60):
        t += rng.expovariate(1 / 15.0)
        b.add(t, http_session, user, site, host="news.example", requests=rng.randint(1, 4))
    assert detect(write(b, tmp_path, "browse.pcap")) == []


def test_allowlisted_destination(tmp_path: Path) -> None:
    path = data_path("slips", "test-cc", "test-cc-capture-1.pcap")
    assert detect(path, BeaconSection(allow_destinations=["141.193.213.0/24", "testing.com"])) == []


def test_series_are_bounded(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=47)
    for k in range(20):
        b.add(float(k), tls_session, Host("10.1.0.10"), Host(f"192.0.2.{k + 1}"), sni="x.example")
    det = BeaconDetector(BeaconSection(max_series=5, by_name=False))
    replay(det, stream_of(write(b, tmp_path, "many.pcap")))
    assert det.evicted_series == 15


def test_state_round_trip_and_mismatch() -> None:
    det = BeaconDetector()
    det._seen("10.0.0.1", "192.0.2.1")
    det._seen("10.0.0.2", "192.0.2.1")
    state = json.loads(json.dumps(det.state()))
    back = BeaconDetector.from_state(state)
    assert back.sources_ == det.sources_ and back.all_sources_ == det.all_sources_
    with pytest.raises(ModelError):
        BeaconDetector.from_state({**state, "version": 99})
