"""The scenario lab, for real: namespaces, real servers, real attack tools, real captures.

Tests that build a lab need root and `ip netns` (CI runs as root); they are skipped with the
reason otherwise. Refusal messages are checked everywhere through injectable checks.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from tapetum.cli import main
from tapetum.flows.key import addr_parse
from tapetum.lab import preflight as pf
from tapetum.lab import topology as T
from tapetum.lab.build import Secrets
from tapetum.lab.scenarios import SCENARIOS, dga_name
from tapetum.sources.decode import A_DST_HI, A_DST_LO, A_SRC_HI, A_SRC_LO, C_DPORT, C_IPVER, C_TS
from tapetum.sources.pcap import CaptureReader

CATEGORIES = {"scan", "brute-force", "c2-beacon", "dga", "dns-tunnel", "exfiltration",
              "lateral-movement", "dos", "protocol-anomaly", "intel", "anomaly"}  # fmt: skip
RUN = [sys.executable, "-m", "tapetum", "lab", "run"]


def _lab_unavailable() -> str | None:
    if not sys.platform.startswith("linux"):
        return "the lab needs Linux"
    if os.geteuid() != 0:
        return "the lab needs root (CI runs as root)"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    reason = pf.probe_netns(f"tpl{os.getpid()}")
    return None if reason is None else f"ip netns unavailable: {reason}"


_UNAVAILABLE = _lab_unavailable()
needs_lab = pytest.mark.skipif(_UNAVAILABLE is not None, reason=str(_UNAVAILABLE))


def _lab_namespaces(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.startswith(prefix + "-")]


def _root_links() -> set[str]:
    out = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    return {ln.split()[0] for ln in out.splitlines() if ln.strip()}


# -- without root -----------------------------------------------------------------------------


def test_list_names_every_scenario_with_packages() -> None:
    res = CliRunner().invoke(main, ["lab", "list", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    names = {s["name"] for s in doc["scenarios"]}
    assert names == set(SCENARIOS)
    by = {s["name"]: s for s in doc["scenarios"]}
    assert by["hydra-ssh"]["packages"] == ["hydra"] and by["hydra-ssh"]["category"] == "brute-force"
    assert by["dns-tunnel"]["packages"] == ["iodine"]
    assert by["benign"]["category"] is None
    assert {s["category"] for s in doc["scenarios"]} - {None} <= CATEGORIES
    assert {"openssh-server", "dnsmasq-base", "tcpdump", "python3-pyftpdlib"} <= set(
        doc["base_packages"]
    )
    table = CliRunner().invoke(main, ["lab", "list"])
    assert table.exit_code == 0 and "masscan" in table.output


def _one_line_refusal(res: Any, needle: str) -> None:
    assert res.exit_code == 6, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.output


def test_refuses_when_not_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(pf, "is_root", lambda: False)
    res = CliRunner().invoke(main, ["lab", "run", "benign", "--out", str(tmp_path)])
    _one_line_refusal(res, "must run as root")
    assert not list(tmp_path.iterdir())


def test_refuses_when_a_tool_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(pf, "is_root", lambda: True)
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(pf, "SBIN", ())
    res = CliRunner().invoke(main, ["lab", "run", "hydra-ssh", "--out", str(tmp_path / "o")])
    _one_line_refusal(res, "missing tools:")
    assert "hydra" in res.output and "apt-get install" in res.output
    assert "openssh-server" in res.output and "tcpdump" in res.output


def test_refuses_without_namespaces(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(pf, "is_root", lambda: True)
    monkeypatch.setattr(pf, "which", lambda name, path=None: f"/usr/bin/{name}")
    monkeypatch.setattr(pf, "ftp_python", lambda: sys.executable)
    monkeypatch.setattr(pf, "probe_netns", lambda prefix: "Operation not permitted")
    res = CliRunner().invoke(main, ["lab", "run", "nmap-syn", "--out", str(tmp_path)])
    _one_line_refusal(res, "network namespaces unavailable: Operation not permitted")


def test_unknown_scenario_and_short_duration_are_usage_errors(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["lab", "run", "nmap-xmas", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "unknown scenario" in res.output
    res = CliRunner().invoke(
        main, ["lab", "run", "benign", "--out", str(tmp_path), "--duration", "1"]
    )
    assert res.exit_code == 2 and "--duration" in res.output


def test_seeded_names_are_reproducible_and_vary() -> None:
    assert Secrets.from_seed(4) == Secrets.from_seed(4)
    assert Secrets.from_seed(4).c2_name != Secrets.from_seed(5).c2_name
    names = [dga_name(4, i) for i in range(200)]
    assert names == [dga_name(4, i) for i in range(200)]
    assert len(set(names)) == 200 and dga_name(4, -1) not in names
    assert all(8 <= len(n.split(".")[0]) <= 18 for n in names)


# -- real lab ---------------------------------------------------------------------------------


def _packets(pcap: Path) -> dict[str, np.ndarray]:
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("ts", "ipver", "src_hi", "src_lo",
                                                          "dst_hi", "dst_lo", "dport")}  # fmt: skip
    with CaptureReader(pcap) as r:
        for b in r:
            c, a = b.cols[: b.n], b.addr[: b.n]
            cols["ts"].append(c[:, C_TS] / 1e9)
            cols["ipver"].append(c[:, C_IPVER].copy())
            cols["dport"].append(c[:, C_DPORT].copy())
            for k, i in (("src_hi", A_SRC_HI), ("src_lo", A_SRC_LO), ("dst_hi", A_DST_HI),
                         ("dst_lo", A_DST_LO)):  # fmt: skip
                cols[k].append(a[:, i].copy())
    return {k: np.concatenate(v) for k, v in cols.items()}


def _from(p: dict[str, np.ndarray], ip: str) -> np.ndarray:
    hi, lo = addr_parse(ip)
    return np.asarray((p["ipver"] > 0) & (p["src_hi"] == hi) & (p["src_lo"] == lo))


def _to(p: dict[str, np.ndarray], ip: str) -> np.ndarray:
    hi, lo = addr_parse(ip)
    return np.asarray((p["ipver"] > 0) & (p["dst_hi"] == hi) & (p["dst_lo"] == lo))


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if _UNAVAILABLE is not None:
        pytest.skip(_UNAVAILABLE)
    out = tmp_path_factory.mktemp("lab")
    links_before = _root_links()
    t = time.monotonic()
    proc = subprocess.run(
        [*RUN, "benign", "nmap-syn", "hydra-ssh", "--out", str(out), "--seed", "3",
         "--duration", "18", "--json"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    prefix = proc.stderr.split("namespaces ", 1)[1].split("-*", 1)[0]
    return {
        "out": out,
        "results": {r["scenario"]: r for r in json.loads(proc.stdout)},
        "prefix": prefix,
        "links_before": links_before,
        "wall_s": time.monotonic() - t,
    }


def _labels(lab_run: dict[str, Any], name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((lab_run["out"] / f"{name}.labels.json").read_text())
    return doc


@needs_lab
def test_labels_follow_the_format_and_the_capture(lab_run: dict[str, Any]) -> None:
    for name in ("benign", "nmap-syn", "hydra-ssh"):
        doc = _labels(lab_run, name)
        assert doc["format"] == "tapetum-labels/1" and doc["scenario"] == name
        assert doc["seed"] == 3 and doc["capture"] == f"{name}.pcap"
        assert doc["networks"] == {"internal": [T.LAN]}
        assert set(doc["benign_hosts"]) >= {c.ip for c in T.CLIENTS}
        assert T.ATTACKER.ip not in doc["benign_hosts"]
        p = _packets(lab_run["out"] / doc["capture"])
        assert doc["start_ts"] == pytest.approx(p["ts"].min()) and doc["end_ts"] == pytest.approx(
            p["ts"].max()
        )
        assert 8 <= doc["end_ts"] - doc["start_ts"] <= 18 + 3
        assert lab_run["results"][name]["packets"] == len(p["ts"])
        # Benign clients talk in every capture: to servers, the resolver and outside.
        for c in T.CLIENTS:
            assert _from(p, c.ip).sum() > 0, (name, c.ip)
        for server in (T.DNS.ip, T.EXT_NTP):
            assert _to(p, server).sum() > 0, (name, server)
        for a in doc["attacks"]:
            assert a["category"] in CATEGORIES and a["technique"].startswith("T")
            assert doc["start_ts"] < a["start_ts"] < a["end_ts"] <= doc["end_ts"] + 1
            assert a["start"].endswith("Z") and a["tool"] in a["command"][0]
    assert _labels(lab_run, "benign")["attacks"] == []


@needs_lab
def test_attacker_packets_lie_inside_the_labelled_windows(lab_run: dict[str, Any]) -> None:
    for name, min_probes in (("nmap-syn", 900), ("hydra-ssh", 5)):
        doc = _labels(lab_run, name)
        (a,) = doc["attacks"]
        p = _packets(lab_run["out"] / doc["capture"])
        mine = _from(p, T.ATTACKER.ip)
        inside = (p["ts"] >= a["start_ts"]) & (p["ts"] <= a["end_ts"] + 1.0)
        assert (mine & inside).sum() >= min_probes, name
        # No IP packet from the attacker outside its window (ARP is not IP and is allowed).
        assert (mine & ~inside).sum() == 0, name
        victims = np.zeros_like(mine)
        for v in a["victims"]:
            victims |= _to(p, v)
        assert (mine & victims).sum() == mine.sum()
    ssh = _labels(lab_run, "hydra-ssh")["attacks"][0]
    p = _packets(lab_run["out"] / "hydra-ssh.pcap")
    assert (_from(p, T.ATTACKER.ip) & (p["dport"] == 22)).sum() >= 20, ssh["params"]
    benign = _packets(lab_run["out"] / "benign.pcap")
    assert _from(benign, T.ATTACKER.ip).sum() == 0 and _to(benign, T.ATTACKER.ip).sum() == 0


@needs_lab
def test_scan_detector_alerts_on_the_nmap_attacker(lab_run: dict[str, Any]) -> None:
    pcap = lab_run["out"] / "nmap-syn.pcap"
    proc = subprocess.run(
        [sys.executable, "-m", "tapetum", "analyze", str(pcap), "--no-store", "--json",
         "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (attack,) = _labels(lab_run, "nmap-syn")["attacks"]
    scans = [a for a in json.loads(proc.stdout)["alerts"] if a["alert"]["category"] == "scan"]
    assert scans, "no scan alert on the nmap capture"
    assert {a["alert"]["entity"] for a in scans} == {T.ATTACKER.ip}
    assert {a["dest_ip"] for a in scans} <= set(attack["victims"])


@needs_lab
def test_run_leaves_nothing_behind(lab_run: dict[str, Any]) -> None:
    prefix = lab_run["prefix"]
    assert prefix.startswith("tpl")
    assert _lab_namespaces(prefix) == []
    assert not list(Path("/etc/netns").glob(f"{prefix}-*"))
    assert _root_links() == lab_run["links_before"]


@needs_lab
def test_teardown_after_an_error(tmp_path: Path) -> None:
    from tapetum.lab.runner import run_lab

    tools, py = pf.preflight(["benign"], f"tpl{os.getpid()}")
    seen: list[int] = []

    def fault(stage: str) -> None:
        if stage == "capturing":
            seen.append(len(_lab_namespaces(f"tpl{os.getpid()}")))
            raise RuntimeError("simulated failure")

    with pytest.raises(RuntimeError, match="simulated failure"):
        run_lab(["benign"], tmp_path, tools=tools, ftp_python=py, duration_s=10, fault=fault)
    assert seen and seen[0] >= 10  # the lab was really up when it failed
    assert _lab_namespaces(f"tpl{os.getpid()}") == []
    assert not list(Path("/etc/netns").glob(f"tpl{os.getpid()}-*"))


@needs_lab
def test_sigint_tears_the_lab_down(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*RUN, "benign", "--out", str(tmp_path), "--duration", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    prefix = f"tpl{proc.pid}"
    seen = b""
    deadline = time.monotonic() + 60
    while b"capturing" not in seen and time.monotonic() < deadline and proc.poll() is None:
        if select.select([proc.stderr], [], [], 0.5)[0]:
            seen += os.read(proc.stderr.fileno(), 4096)
    assert b"capturing" in seen, seen.decode(errors="replace")
    assert len(_lab_namespaces(prefix)) >= 10
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    text = (seen + err).decode(errors="replace")
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "torn down" in text
    assert _lab_namespaces(prefix) == []
    assert not list(Path("/etc/netns").glob(f"{prefix}-*"))
