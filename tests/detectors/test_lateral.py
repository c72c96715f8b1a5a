"""Lateral movement on synthetic captures: a compromised client's SSH fan-out, an admin
workstation learnt as normal, pivot chains, probes and external hosts that must not count."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from tapetum.config import Config, LateralSection
from tapetum.detectors.lateral import LateralDetector
from tapetum.errors import ModelError
from tapetum.pipeline import Pipeline
from tapetum.records import Alert
from tapetum.registry import build_detectors
from tapetum.testing import CaptureBuilder, Host, ssh_session, tcp_failed, tcp_session
from tests.conftest import data_path
from tests.detectors.helpers import flows_of, replay_flows, write

DAY = 86_400.0
CLIENT = Host("10.1.0.23")
ADMIN = Host("10.1.0.5")
SERVERS = [Host(f"10.1.1.{k}") for k in range(1, 11)]


def detect(path: Path, config: LateralSection | None = None) -> list[Alert]:
    return replay_flows(LateralDetector(config), path)


def smb(rng: random.Random, n: int = 3) -> list[tuple[bytes, bytes]]:
    return [(rng.randbytes(300), rng.randbytes(1200)) for _ in range(n)]


def test_compromised_client_fanout_without_baseline(tmp_path: Path) -> None:
    """A short capture (no learnt baseline): SSH to 4 servers within 12 min alerts once."""
    b = CaptureBuilder(seed=1)
    for i, s in enumerate(SERVERS[:4]):
        b.add(10.0 + 240.0 * i, ssh_session, CLIENT, s, duration=20.0)
    # Routine: another client uses SSH with one server only.
    b.add(50.0, ssh_session, Host("10.1.0.30"), SERVERS[5], duration=10.0)
    (a,) = detect(write(b, tmp_path))
    assert a.signature == "lateral.fanout" and a.signature_id == 9_000_060
    assert a.entity == CLIENT.ip == a.src_ip
    assert a.category == "lateral-movement" and a.mitre_tactic == ("lateral-movement",)
    assert a.mitre_technique_id == ("T1021.004",)
    assert a.observed["new_peers"] == 4 and a.baseline == {"new_peers": 0.0, "threshold": 3.0}
    assert a.dest_ip == "10.1.1.1" and a.dest_port == 22
    assert (
        "10.1.0.23 opened SSH sessions to 4 internal hosts it never used SSH with before "
        "(10.1.1.1, 10.1.1.2, 10.1.1.3, 10.1.1.4) within 12.0 min" in a.explanation
    )
    assert "normal for this host: 0 new admin peers per 1.0 h" in a.explanation
    assert "no learnt baseline" in a.explanation


def test_fanout_needs_the_threshold_within_the_window(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=2)
    for i, s in enumerate(SERVERS[:4]):  # 4 servers, but 25 min apart: at most 3 per hour
        b.add(10.0 + 1500.0 * i, ssh_session, CLIENT, s, duration=10.0)
    path = write(b, tmp_path)
    assert [a.observed["new_peers"] for a in detect(path)] == [3.0]
    assert detect(path, LateralSection(min_new_peers=4)) == []
    assert [a.observed["new_peers"] for a in detect(path, LateralSection(window_s=7200))] == [4]


def admin_days(b: CaptureBuilder, days: int) -> None:
    """The admin workstation logs into the same 10 servers every morning."""
    for d in range(days):
        for i, s in enumerate(SERVERS):
            b.add(d * DAY + 3600.0 + 45.0 * i, ssh_session, ADMIN, s, duration=15.0)


def test_admin_workstation_is_learnt_during_warmup(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=3)
    admin_days(b, 3)
    for i, s in enumerate(SERVERS[:4]):  # day 3: the compromised client
        b.add(2 * DAY + 5 * 3600.0 + 120.0 * i, ssh_session, CLIENT, s, duration=15.0)
    alerts = detect(write(b, tmp_path))
    assert [(a.signature, a.entity) for a in alerts] == [("lateral.fanout", CLIENT.ip)]
    assert "normal for this host: 0 new admin peers" in alerts[0].explanation
    assert "no learnt baseline" not in alerts[0].explanation


def test_admin_without_warmup_is_a_first_sight_alert(tmp_path: Path) -> None:
    """Why the warm-up exists: one day of the same admin is judged without a baseline."""
    b = CaptureBuilder(seed=4)
    admin_days(b, 1)
    path = write(b, tmp_path)
    assert [a.entity for a in detect(path)] == [ADMIN.ip]
    # Learnt state from a clean period (as `tapetum learn` gives) makes the routine normal.
    det = LateralDetector()
    for fb in flows_of(path):
        det.learn(det.features(fb))
    restored = LateralDetector.from_state(json.loads(json.dumps(det.state())))
    for fb in flows_of(path):
        restored.observe(fb)
    assert restored.flush() == []


def test_admin_host_fanout_baseline_raises_its_bar(tmp_path: Path) -> None:
    """An admin that reaches 10 new hosts a day while learning may reach new ones later."""
    b = CaptureBuilder(seed=5)
    admin_days(b, 1)
    others = [Host(f"10.1.3.{k}") for k in range(1, 6)]
    for i, s in enumerate(others):  # day 2: five servers it never used before
        b.add(DAY + 7200.0 + 60.0 * i, ssh_session, ADMIN, s, duration=10.0)
    path = write(b, tmp_path)
    assert detect(path) == []
    # Scored by a detector that learnt day 1 only: the admin's bar is 1.5 x 10 new peers.
    rows = [r for r in (LateralDetector().features(fb) for fb in flows_of(path)) if len(r)]
    t0 = min(int(r.first_ns.min()) for r in rows)
    day = [
        [r.take([k for k in range(len(r)) if (r.first_ns[k] - t0 >= DAY * 1e9) == d]) for r in rows]
        for d in (False, True)
    ]
    learnt, fresh = LateralDetector(), LateralDetector()
    for r in day[0]:
        learnt.learn(r)
    assert learnt.hosts_[ADMIN.ip]["new_peers"] == {"ssh": 10}
    second = [r for r in day[1] if len(r)]
    assert max(float(learnt.score(r).max()) for r in second) < 0.5
    assert max(float(fresh.score(r).max()) for r in second) > 0.5


def chain_capture(tmp_path: Path, *, jump_routine: bool = False) -> Path:
    b = CaptureBuilder(seed=6)
    a, pivot = Host("10.1.0.40"), Host("10.1.1.50")
    start = 0.0
    if jump_routine:  # a day of the pivot acting as a jump host, learnt during the warm-up
        b.add(60.0, ssh_session, ADMIN, pivot, duration=300.0)
        b.add(120.0, ssh_session, pivot, Host("10.1.4.1"), duration=30.0)
        start = 1.5 * DAY
    b.add(start + 10.0, ssh_session, a, pivot, duration=600.0)
    b.add(start + 200.0, ssh_session, pivot, Host("10.1.4.7"), duration=20.0)
    b.add(start + 260.0, tcp_session, pivot, Host("10.1.4.8"), 445, smb(random.Random(1)))
    return write(b, tmp_path, "chain.pcap")


def test_pivot_chain(tmp_path: Path) -> None:
    (a,) = detect(chain_capture(tmp_path))
    assert a.signature == "lateral.chain" and a.signature_id == 9_000_061
    assert a.entity == "10.1.1.50" and a.dest_ip == "10.1.4.7"
    assert a.observed["onward_peers"] == 2
    assert set(a.mitre_technique_id) == {"T1021.004", "T1021.002"}
    assert "10.1.1.50 received an SSH session from 10.1.0.40" in a.explanation
    assert "a pivot 10.1.0.40 → 10.1.1.50 → 10.1.4.7" in a.explanation


def test_learnt_jump_host_is_not_a_chain(tmp_path: Path) -> None:
    assert detect(chain_capture(tmp_path, jump_routine=True)) == []


def test_probes_and_external_hosts_do_not_count(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=7)
    for i, s in enumerate(SERVERS[:6]):  # refused and unanswered: the scan detector's business
        b.add(5.0 + i, tcp_failed, CLIENT, s, 22, kind="refused" if i % 2 else "unanswered")
    outside = [Host(f"93.184.216.{k}") for k in range(1, 6)]
    for i, s in enumerate(outside):
        b.add(20.0 + 30.0 * i, ssh_session, CLIENT, s, duration=5.0)
    path = write(b, tmp_path)
    assert detect(path) == []
    # A configured internal network makes those hosts internal.
    (a,) = detect(path, LateralSection(internal_networks=["93.184.216.0/24"]))
    assert a.observed["new_peers"] == 5


def test_psexec_like_smb_then_rpc(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=8)
    rng = random.Random(8)
    for i, s in enumerate(SERVERS[:3]):
        b.add(10.0 + 30.0 * i, tcp_session, CLIENT, s, 445, smb(rng))
        b.add(12.0 + 30.0 * i, tcp_session, CLIENT, s, 135, smb(rng, 2))
    alerts = detect(write(b, tmp_path))
    smb_alert = next(a for a in alerts if a.mitre_technique_id == ("T1021.002",))
    assert "PsExec-like" in smb_alert.explanation
    assert {a.mitre_technique_id for a in alerts} == {("T1021.002",), ("T1021.003",)}


def test_state_round_trip_bounds_and_version(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=9)
    for i, s in enumerate(SERVERS[:6]):
        b.add(10.0 + 20.0 * i, ssh_session, CLIENT, s, duration=5.0)
    det = LateralDetector(LateralSection(max_pairs=4))
    rows = [det.features(fb) for fb in flows_of(write(b, tmp_path))]
    before = np.concatenate([det.score(r) for r in rows])
    for r in rows:
        det.learn(r)
    assert len(det.pairs_) == 4 and det.evicted_pairs_ == 2
    after = np.concatenate([det.score(r) for r in rows])
    assert after.max() < before.max()
    state = json.loads(json.dumps(det.state()))
    restored = LateralDetector.from_state(state, LateralSection(max_pairs=4))
    for r in rows:
        np.testing.assert_array_equal(det.score(r), restored.score(r))
    assert restored.evicted_pairs_ == 2
    with pytest.raises(ModelError, match="version"):
        LateralDetector.from_state(state | {"version": 99})
    with pytest.raises(ModelError, match="damaged"):
        LateralDetector.from_state(state | {"hosts": {"x": {}}})


def test_pipeline_incident_and_title(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=10)
    for i, s in enumerate(SERVERS[:4]):
        b.add(10.0 + 30.0 * i, ssh_session, CLIENT, s, duration=5.0)
    cfg = Config()
    summary = Pipeline(cfg, detectors=build_detectors(cfg, ["lateral"])).run(
        [str(write(b, tmp_path))]
    )
    (inc,) = summary.incidents
    assert inc.entity == CLIENT.ip and inc.stage == "lateral-movement"
    assert "lateral movement to new internal hosts" in inc.title


@pytest.mark.parametrize(
    "parts",
    [
        ("zeek", "ssh_basic", "ssh.pcap"),
        ("slips", "test7-malicious.pcap"),
        ("nfstream", "pcaps", "smbv1.pcap"),
        ("nfstream", "pcaps", "rdp.pcap"),
    ],
)
def test_real_captures_with_admin_sessions_raise_nothing(parts: tuple[str, ...]) -> None:
    """Real SSH, SMB and RDP sessions between internal hosts, one peer each: no fan-out."""
    path = data_path(*parts)
    det = LateralDetector()
    assert sum(len(det.features(fb)) for fb in flows_of(path)) >= 1
    assert detect(path) == []
