"""Brute-force detection: real nmap ssh-brute, benign SSH, synthetic guessing, spraying, web."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from tapetum.config import BruteforceSection
from tapetum.detectors.bruteforce import SID_GUESSING, SID_SPRAYING, BruteforceDetector
from tapetum.errors import ModelError
from tapetum.features.bruteforce import Attempts, aggregate
from tapetum.records import Alert
from tapetum.testing import (
    CaptureBuilder,
    Host,
    http_auth_failure,
    http_session,
    password_guessing,
    password_spraying,
    ssh_auth_failure,
    ssh_session,
)
from tests.conftest import data_path
from tests.detectors.helpers import replay, stream_of, write
from tests.detectors.scenarios.bruteforce import admins
from tests.detectors.scenarios.scan import office

SERVER = Host("10.1.0.50")


def detect(path: Path, config: BruteforceSection | None = None) -> list[Alert]:
    return replay(BruteforceDetector(config), stream_of(path))


def test_nmap_ssh_brute_on_port_902_is_found() -> None:
    """Slips test19: nmap --script ssh-brute against 147.32.80.37:902 (SSH known by banner)."""
    alerts = detect(data_path("slips", "test19-malicious-ssh", "malicious-ssh-bruteforce.pcap"))
    assert [a.signature for a in alerts] == ["bruteforce.guessing"]
    (a,) = alerts
    assert (a.entity, a.src_ip, a.dest_ip, a.dest_port) == (
        "147.32.80.40", "147.32.80.40", "147.32.80.37", 902,
    )  # fmt: skip
    assert a.signature_id == SID_GUESSING and a.category == "brute-force"
    assert a.mitre_tactic == ("credential-access",) and a.mitre_technique_id == ("T1110.001",)
    assert a.observed["failed_attempts"] >= 60 and a.observed["failure_ratio"] > 0.9
    assert "SSH connections to 147.32.80.37:902" in a.explanation
    assert "normal for this host" in a.explanation


def test_benign_ssh_raises_nothing() -> None:
    """Zeek's ssh_basic: 25 SSH sessions, some failed, spread over days."""
    assert detect(data_path("zeek", "ssh_basic", "ssh.pcap")) == []


def test_c2_beacon_over_https_is_not_web_brute_force() -> None:
    """test-cc repeats one small HTTPS exchange 300 times: similar sizes on a web port, but the
    connections leave the server idle between them (a beacon, not a login tool)."""
    assert detect(data_path("slips", "test-cc", "test-cc-capture-1.pcap")) == []


def test_hydra_like_guessing(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=3)
    rng = random.Random(3)
    office(b, rng)
    admins(b, rng, SERVER)
    attacker = Host("10.9.9.9")
    password_guessing(b, 20.0, attacker, SERVER, connections=48, tasks=4, attempts=3)
    alerts = detect(write(b, tmp_path, "guess.pcap"))
    assert [(a.signature, a.entity, a.dest_ip) for a in alerts] == [
        ("bruteforce.guessing", attacker.ip, SERVER.ip)
    ]
    assert alerts[0].observed["failed_attempts"] == 48
    assert alerts[0].observed["bytes_cv"] < 0.1


def test_guessing_below_threshold_is_quiet(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=4)
    password_guessing(b, 1.0, Host("10.9.9.9"), SERVER, connections=10, tasks=2)
    assert detect(write(b, tmp_path, "few.pcap")) == []


def test_spraying(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=5)
    rng = random.Random(5)
    office(b, rng)
    sprayer = Host("10.9.9.8")
    targets = [Host(f"10.1.0.{k}") for k in range(100, 130)]
    password_spraying(b, 10.0, sprayer, targets, per_target=2)
    alerts = detect(write(b, tmp_path, "spray.pcap"))
    assert [(a.signature, a.entity) for a in alerts] == [("bruteforce.spraying", sprayer.ip)]
    a = alerts[0]
    assert a.signature_id == SID_SPRAYING and a.mitre_technique_id == ("T1110.003",)
    assert a.observed["distinct_targets"] == 30 and a.observed["max_failed_per_target"] == 2
    assert a.dest_ip is None and a.dest_port == 22


def test_admin_logging_in_to_many_servers_is_not_spraying(tmp_path: Path) -> None:
    """Successful interactive sessions are not failed-looking attempts."""
    b = CaptureBuilder(seed=6)
    admin = Host("10.1.0.5")
    for k in range(40):
        b.add(k * 3.0, ssh_session, admin, Host(f"10.1.0.{100 + k}"), duration=20.0)
    assert detect(write(b, tmp_path, "admin.pcap")) == []


def test_http_basic_auth_guessing(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=7)
    attacker, web = Host("10.9.9.7"), Host("10.1.0.80")
    for k in range(40):
        b.add(1.0 + k * 0.3, http_auth_failure, attacker, web, host="intranet.example")
    # Ordinary browsing of the same server by many clients, in as many connections.
    for k in range(60):
        b.add(k * 0.5, http_session, Host(f"10.1.0.{10 + k % 20}"), web, host="intranet.example")
    alerts = detect(write(b, tmp_path, "http.pcap"))
    assert [(a.signature, a.entity, a.dest_ip) for a in alerts] == [
        ("bruteforce.guessing", attacker.ip, web.ip)
    ]
    assert "HTTP authentication" in alerts[0].explanation


def test_baseline_learnt_from_quiet_windows_only(tmp_path: Path) -> None:
    """A source's own normal raises its bar; an attack does not teach itself normal."""
    b = CaptureBuilder(seed=8)
    src = Host("10.1.0.40")
    # A monitoring host that routinely fails 15 logins per window (below the threshold).
    for w in range(3):
        for k in range(15):
            b.add(w * 300.0 + k * 5.0, ssh_auth_failure, src, SERVER)
    # Then 25 failures: above the default threshold, but below twice its normal (30).
    for k in range(25):
        b.add(900.0 + k * 5.0, ssh_auth_failure, src, SERVER)
    path = write(b, tmp_path, "monitor.pcap")
    det = BruteforceDetector()
    assert replay(det, stream_of(path)) == []
    assert det.baseline_[f"{src.ip}|ssh"][0] == 25
    # The same 25 failures with no history alert.
    b2 = CaptureBuilder(seed=8)
    for k in range(25):
        b2.add(k * 5.0, ssh_auth_failure, src, SERVER)
    fresh = BruteforceDetector()
    alerts = replay(fresh, stream_of(write(b2, tmp_path, "burst.pcap")))
    assert [a.signature for a in alerts] == ["bruteforce.guessing"]
    # The alerting guessing row was not learnt (its quiet spraying row, one target, was).
    assert fresh.baseline_[f"{src.ip}|ssh"] == [0, 1]


def test_poll_emits_before_flush(tmp_path: Path) -> None:
    """A long capture gives its alert once the window is complete in data time."""
    b = CaptureBuilder(seed=9)
    attacker = Host("10.9.9.9")
    password_guessing(b, 1.0, attacker, SERVER, connections=40, tasks=4)
    for k in range(30):  # later benign traffic moves the watermark on
        b.add(
            400.0 + k * 20.0, http_session, Host("10.1.0.10"), Host("192.0.2.1"), host="x.example"
        )
    det = BruteforceDetector()
    polled: list[Alert] = []
    for step in stream_of(write(b, tmp_path, "long.pcap")):
        det.observe_events(step.events)
        if step.flows is not None:
            det.observe(step.flows)
        polled += det.poll(None)
    assert [a.entity for a in polled] == [attacker.ip]
    assert det.flush() == []


def test_state_round_trip_and_mismatch(tmp_path: Path) -> None:
    det = BruteforceDetector()
    det.baseline_["10.0.0.1|ssh"] = [7, 2]
    state = json.loads(json.dumps(det.state()))
    assert BruteforceDetector.from_state(state).baseline_ == {"10.0.0.1|ssh": [7, 2]}
    with pytest.raises(ModelError):
        BruteforceDetector.from_state({**state, "version": 99})
    with pytest.raises(ModelError):
        BruteforceDetector.from_state({**state, "detector": "scan"})


def test_dissimilar_sizes_discount_the_evidence() -> None:
    """Same counts, different size spread: similar attempts score higher."""
    n = 30
    u = np.uint64

    def attempts(sizes: np.ndarray) -> Attempts:
        z = np.zeros(n, dtype=u)
        return Attempts(
            z + u(1), z + u(2), z, z + u(3), np.zeros(n, dtype=np.int64),
            np.full(n, 22), np.arange(n) * 10**9, np.arange(n) * 10**9 + 10**8,
            sizes.astype(np.int64), np.ones(n, dtype=bool),
        )  # fmt: skip

    det = BruteforceDetector()
    same = aggregate(attempts(np.full(n, 3600)))
    varied = aggregate(attempts(np.random.default_rng(1).integers(500, 6000, n)))
    assert same.bytes_cv[0] == 0.0 and varied.bytes_cv[0] > 0.4
    assert det.score(same)[0] > det.score(varied)[0]


def test_tagged_flows_are_bounded() -> None:
    from tapetum.records import FlowRef, SshEndpoint, SshEvent

    det = BruteforceDetector(BruteforceSection(max_tagged_flows=10))
    ev = [
        SshEvent(
            ts_ns=k,
            flow=FlowRef(
                flow_id=k,
                community_id="",
                src_ip="10.0.0.1",
                src_port=1,
                dest_ip="10.0.0.2",
                dest_port=22,
                proto="TCP",
            ),
            server=SshEndpoint(proto_version="2.0", software_version="OpenSSH_9.2"),
        )
        for k in range(25)
    ]
    det.observe_events(ev)
    assert len(det._tags) == 10 and det.dropped_tags == 15
