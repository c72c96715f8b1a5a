"""Live capture (AF_PACKET): real packets through a veth pair in a network namespace made by the
test, replayed with tcpreplay; both capture paths must give the same decoded packets as the
capture-file reader on the same pcap.

Needs root, `ip netns` and tcpreplay (Debian: iproute2, tcpreplay, tcpdump); skipped with the
reason otherwise. The namespace is deleted in `finally` whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tapetum.sources import decode as D
from tapetum.sources.live import LiveCaptureError, compile_bpf, interface_linktype
from tapetum.sources.pcap import CaptureReader
from tapetum.testing import CaptureBuilder, Host, vertical_scan


def netns_unavailable() -> str | None:
    if not sys.platform.startswith("linux"):
        return "live capture needs Linux"
    if os.geteuid() != 0:
        return "live capture tests need root (AF_PACKET sockets and network namespaces)"
    for tool in ("ip", "tcpreplay", "tcpdump"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install iproute2 tcpreplay tcpdump)"
    probe = f"tpwprobe{os.getpid()}"
    proc = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"cannot create a network namespace: {proc.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class VethPair:
    """Namespace `tpw<pid><tag>` holding veth `tpwa` (send) <-> `tpwb` (capture), IPv6 off so
    no router solicitation or neighbour discovery adds packets of its own."""

    def __init__(self, tag: str = "") -> None:
        self.ns = f"tpw{os.getpid()}{tag}"
        self.send_if = "tpwa"
        self.capture_if = "tpwb"

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)

    def up(self) -> VethPair:
        self._ip("netns", "add", self.ns)
        ex = ["netns", "exec", self.ns]
        subprocess.run(
            ["ip", *ex, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1",
             "net.ipv6.conf.all.disable_ipv6=1"],
            check=True, capture_output=True,
        )  # fmt: skip
        self._ip(*ex, "ip", "link", "add", self.send_if, "type", "veth", "peer", "name",
                 self.capture_if)  # fmt: skip
        for itf in (self.send_if, self.capture_if):
            self._ip(*ex, "ip", "link", "set", itf, "up")
        return self

    def down(self) -> None:
        pids = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True)
        for pid in pids.stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)

    def exec(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *cmd]

    def replay(self, pcap: Path, *extra: str) -> str:
        """Send every frame of `pcap` into the sending end; tcpreplay's report."""
        proc = subprocess.run(
            self.exec("tcpreplay", "-i", self.send_if, *(extra or ("--topspeed",)), str(pcap)),
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout


@pytest.fixture
def veth() -> Iterator[VethPair]:
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    pair = VethPair()
    try:
        yield pair.up()
    finally:
        pair.down()


def scan_capture(path: Path, attacker: str = "10.9.9.9", target: str = "10.1.0.10",
                 ports: int = 120, seed: int = 3) -> Path:  # fmt: skip
    """A small capture: a vertical scan (SYNs answered by RST or nothing)."""
    b = CaptureBuilder(seed=seed)
    rng = random.Random(seed)
    b.add(0.0, vertical_scan, Host(attacker), Host(target), rng.sample(range(1, 5000), ports))
    b.write(path)
    return path


def _rows(cols: np.ndarray, addr: np.ndarray) -> list[tuple[int, ...]]:
    """Decoded packets without what differs between file and wire (time, offsets)."""
    keep = [D.C_WIRELEN, D.C_CAPLEN, D.C_STATUS, D.C_IPVER, D.C_PROTO, D.C_SPORT, D.C_DPORT,
            D.C_VLAN, D.C_FLAGS, D.C_SEQ, D.C_IPLEN, D.C_PAYLEN, D.C_PAYCAP, D.C_FRAG]  # fmt: skip
    return sorted(
        tuple(int(x) for x in r) + tuple(int(x) for x in a)
        for r, a in zip(cols[:, keep], addr, strict=True)
    )


CAPTURE_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from tapetum.sources.live import LiveCapture
    iface, mode, bpf, want, out = sys.argv[1:6]
    cap = LiveCapture(iface, mode=mode, bpf=bpf or None)
    open(out + ".ready", "w").close()
    rows, addrs, gaps, empties = [], [], [], 0
    got, t0, last = 0, time.monotonic(), time.monotonic()
    for b in cap:
        now = time.monotonic(); gaps.append(now - last); last = now
        if b.n:
            rows.append(b.cols[: b.n].copy()); addrs.append(b.addr[: b.n].copy())
            got += b.n
            lt = int(b.cols[0, 4])
        else:
            empties += 1
        if got >= int(want) and empties > 2 or now - t0 > 60:
            break
    stats = cap.kernel_stats()
    cap.close()
    cols = np.concatenate(rows) if rows else np.zeros((0, 22), np.int64)
    addr = np.concatenate(addrs) if addrs else np.zeros((0, 4), np.uint64)
    np.savez(out, cols=cols, addr=addr)
    json.dump({"packets": got, "kernel": stats, "max_gap_s": max(gaps[1:] or [0]),
               "empty_batches": empties, "format": cap.format}, open(out + ".json", "w"))
    """
)


def capture_in(
    veth: VethPair, tmp: Path, mode: str, want: int, bpf: str = ""
) -> subprocess.Popen[bytes]:
    script = tmp / "capture.py"
    script.write_text(CAPTURE_SCRIPT)
    out = tmp / f"cap-{mode}"
    proc = subprocess.Popen(
        veth.exec(sys.executable, str(script), veth.capture_if, mode, bpf, str(want), str(out))
    )
    deadline = time.monotonic() + 60
    while not Path(str(out) + ".ready").exists():
        assert proc.poll() is None, "capture process died"
        assert time.monotonic() < deadline, "capture did not start"
        time.sleep(0.05)
    return proc


def load_capture(tmp: Path, mode: str) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
    out = tmp / f"cap-{mode}"
    with np.load(str(out) + ".npz", allow_pickle=False) as z:
        cols, addr = z["cols"], z["addr"]
    return cols, addr, json.loads(Path(str(out) + ".json").read_text())


def file_rows(path: Path, keep: np.ndarray | None = None) -> list[tuple[int, ...]]:
    cols, addr = [], []
    with CaptureReader(path) as r:
        for b in r:
            cols.append(b.cols[: b.n].copy())
            addr.append(b.addr[: b.n].copy())
    c, a = np.concatenate(cols), np.concatenate(addr)
    if keep is not None:
        m = keep(c)
        c, a = c[m], a[m]
    return _rows(c, a)


def test_both_capture_paths_decode_like_the_file_reader(veth: VethPair, tmp_path: Path) -> None:
    pcap = scan_capture(tmp_path / "scan.pcap")
    expected = file_rows(pcap)
    procs = {m: capture_in(veth, tmp_path, m, len(expected)) for m in ("ring", "recv")}
    veth.replay(pcap)
    for m, p in procs.items():
        assert p.wait(timeout=90) == 0, m
        cols, addr, info = load_capture(tmp_path, m)
        assert info["packets"] == len(expected), (m, info)
        assert _rows(cols, addr) == expected, m
        assert (cols[:, D.C_LINKTYPE] == D.LT_ETHERNET).all()
        # Kernel time stamps: now-ish, in order within the capture.
        ts = cols[:, D.C_TS]
        assert abs(int(ts.max()) - time.time_ns()) < 120e9
        assert info["kernel"][1] == 0, f"{m}: kernel dropped packets"
        # Idle interface: empty batches keep coming, at least every 250 ms (+ scheduling slack).
        assert info["empty_batches"] > 0
        assert info["max_gap_s"] < 1.0, info
        assert info["format"] == f"af_packet-{'tpacket_v3' if m == 'ring' else 'recv'}"


def test_bpf_filter_is_applied_in_the_kernel(veth: VethPair, tmp_path: Path) -> None:
    pcap = scan_capture(tmp_path / "scan.pcap", ports=200)
    # Only the SYNs to ports below 1000 (tcpdump syntax, compiled by tcpdump -ddd).
    bpf = "tcp and dst host 10.1.0.10 and dst portrange 1-999"
    expected = file_rows(
        pcap,
        lambda c: (c[:, D.C_PROTO] == 6) & (c[:, D.C_DPORT] < 1000) & (c[:, D.C_DPORT] >= 1)
        & (c[:, D.C_SPORT] >= 1024),
    )  # fmt: skip
    assert 0 < len(expected) < 200
    proc = capture_in(veth, tmp_path, "ring", len(expected), bpf)
    veth.replay(pcap)
    assert proc.wait(timeout=90) == 0
    cols, addr, info = load_capture(tmp_path, "ring")
    assert _rows(cols, addr) == expected
    assert info["kernel"][0] == len(expected)  # the kernel counts only what passed the filter


def test_refusals_name_the_problem(tmp_path: Path) -> None:
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    with pytest.raises(LiveCaptureError, match="no such interface"):
        interface_linktype("tpw-nosuch0")
    with pytest.raises(LiveCaptureError, match="bad BPF filter"):
        compile_bpf("lo", "tcp and (")
    assert len(compile_bpf("lo", "tcp port 22")) > 3
    # Without CAP_NET_RAW (root with the capability dropped from its bounding set, as an
    # unprivileged user has it) the socket cannot be opened; the message says what is needed.
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_NET_RAW")
    code = "from tapetum.sources.live import LiveCapture\nLiveCapture('lo')"
    proc = subprocess.run(
        ["setpriv", "--bounding-set", "-net_raw", sys.executable, "-c", code],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "needs root (or CAP_NET_RAW)" in proc.stderr, proc.stderr[-500:]
