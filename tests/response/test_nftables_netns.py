"""For real: inside a pair of network namespaces joined by a veth, an nftables block made by
the backend stops the peer's ping and TCP, and the revert (or the kernel's timeout) restores it.
Needs root, `ip`, `nft` and `ping` (Debian: iproute2, nftables, iputils-ping)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapetum.config import load_config
from tapetum.records import Incident
from tapetum.response import audit_log, list_actions, respond, revert_stored

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="nft not installed (apt nftables)"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="ip not installed (apt iproute2)"),
    pytest.mark.skipif(
        shutil.which("ping") is None, reason="ping not installed (apt iputils-ping)"
    ),
]

A_IP, B_IP, PORT = "10.213.0.1", "10.213.0.2", 18080


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=20)


@pytest.fixture
def netns_pair() -> Iterator[tuple[str, str]]:
    tag = f"tpr{os.getpid()}"
    a, b = f"{tag}-a", f"{tag}-b"
    made: list[str] = []
    server: subprocess.Popen[bytes] | None = None
    try:
        for ns in (a, b):
            sh("ip", "netns", "add", ns)
            made.append(ns)
        sh("ip", "link", "add", f"{tag}a", "netns", a, "type", "veth", "peer", "name",
           f"{tag}b", "netns", b)  # fmt: skip
        for ns, dev, ip in ((a, f"{tag}a", A_IP), (b, f"{tag}b", B_IP)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        server = subprocess.Popen(
            ["ip", "netns", "exec", a, sys.executable, "-m", "http.server", "--bind", A_IP,
             str(PORT)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(50):
            if tcp_ok(b):
                break
            time.sleep(0.1)
        yield a, b
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        for ns in made:
            sh("ip", "netns", "del", ns, check=False)


def ping_ok(ns: str) -> bool:
    return (
        sh("ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", A_IP, check=False).returncode
        == 0
    )


def tcp_ok(ns: str) -> bool:
    code = f"import socket; socket.create_connection(({A_IP!r}, {PORT}), timeout=1).close()"
    return sh("ip", "netns", "exec", ns, sys.executable, "-c", code, check=False).returncode == 0


def scanner(incident_id: str = "inc-real") -> Incident:
    return Incident(
        incident_id=incident_id, ts_ns=0, first_ts_ns=0, last_ts_ns=0, entity=B_IP,
        title=f"Discovery by {B_IP}: vertical port scan", summary="", severity=1,
        confidence=0.95, alert_count=1, alert_ids=("a",), signatures=("scan.vertical",),
        categories=("scan",), mitre_tactic=("discovery",), src_ip=B_IP, dest_ips=(A_IP,),
    )  # fmt: skip


def config(tmp_path: Path, ns: str, actions: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(f"""
[response]
mode = "auto"
netns = "{ns}"
[[response.playbooks]]
name = "real"
when = {{ detectors = ["scan"] }}
actions = [{actions}]
""")
    return p


def test_block_stops_peer_and_revert_restores(tmp_path: Path, netns_pair: tuple[str, str]) -> None:
    a, b = netns_pair
    assert ping_ok(b) and tcp_ok(b), "the namespaces do not talk to each other before the block"
    cfg = load_config(config(tmp_path, a, '{ kind = "block_ip", ttl_s = 600 }'))
    store = tmp_path / "s.duckdb"
    ((act, msg),) = respond([scanner()], cfg, store)
    assert act.state == "applied", msg
    assert not ping_ok(b) and not tcp_ok(b)
    listing = sh("ip", "netns", "exec", a, "nft", "list", "set", "inet", "tapetum", "blocked4")
    assert B_IP in listing.stdout and "timeout 10m" in listing.stdout
    done, _ = revert_stored(store, act.action_id, cfg, analyst="test")
    assert done.state == "reverted"
    assert ping_ok(b) and tcp_ok(b)
    assert [e.event for e in audit_log(store)] == ["applied", "revert"]
    assert [x.state for x in list_actions(store)] == ["reverted"]


def test_flow_block_and_kernel_timeout(tmp_path: Path, netns_pair: tuple[str, str]) -> None:
    a, b = netns_pair
    cfg = load_config(config(
        tmp_path, a,
        f'{{ kind = "block_flow", params = {{ proto = "tcp", dest_port = {PORT} }} }}, '
        '{ kind = "block_ip", ttl_s = 2 }',
    ))  # fmt: skip
    store = tmp_path / "s.duckdb"
    out = respond([scanner()], cfg, store)
    assert [x.state for x, _ in out] == ["applied", "applied"]
    assert not ping_ok(b)
    # The kernel drops the set element after its 2 s timeout, with nobody reverting it ...
    time.sleep(3)
    assert ping_ok(b)
    # ... while the flow rule (no kernel timeout) still stops TCP to the port until reverted.
    assert not tcp_ok(b)
    flow = next(x for x, _ in out if x.kind == "block_flow")
    revert_stored(store, flow.action_id, cfg)
    assert tcp_ok(b)
