"""`tapetum collect`: a real exporter (softflowd) sending to the collector on loopback, clean
shutdown on signals, IPv6, the store and JSON lines, and the capture (--read) mode."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tests.conftest import data_path

SOFTFLOWD = shutil.which("softflowd") or (
    "/usr/sbin/softflowd" if Path("/usr/sbin/softflowd").exists() else None
)
needs_softflowd = pytest.mark.skipif(SOFTFLOWD is None, reason="softflowd not installed")


def start_collector(
    tmp: Path, *args: str, listen: str = "127.0.0.1:0"
) -> tuple[subprocess.Popen[str], int]:
    """Start `tapetum collect` on a free port; returns the process and the bound port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tapetum", "collect", "--listen", listen, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert line.startswith("listening on udp://"), line
    port = int(line.split()[2].rsplit(":", 1)[1])
    return proc, port


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def softflowd(pcap: Path, port: int, version: str, tmp: Path, host: str = "127.0.0.1") -> None:
    assert SOFTFLOWD is not None
    subprocess.run(
        [
            SOFTFLOWD,
            "-r",
            str(pcap),
            "-n",
            f"{host}:{port}",
            "-v",
            version,
            "-d",
            "-a",
            "-c",
            "none",
            "-p",
            str(tmp / "sf.pid"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


def flow_events(path: Path) -> list[dict[str, object]]:
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    return [x for x in lines if x["event_type"] == "flow"]


@needs_softflowd
@pytest.mark.parametrize("version", ["5", "9", "10"])
def test_collect_from_softflowd_to_store_and_jsonl(version: str, tmp_path: Path) -> None:
    pcap = data_path("zeek", "wikipedia", "wikipedia.pcap")
    store = tmp_path / "t.duckdb"
    jsonl = tmp_path / "out.jsonl"
    proc, port = start_collector(
        tmp_path, "--store", str(store), "--jsonl", str(jsonl), "--json", "--max-seconds", "60"
    )
    softflowd(pcap, port, version, tmp_path)
    time.sleep(0.6)  # > one 250 ms flush: flows are in the pipeline before the signal
    rc, out, err = stop(proc)
    assert rc == 0, err
    summary = json.loads(out)
    (rep,) = summary["files"]
    c = rep["counters"]
    want = 31 if version == "5" else 34  # v5 carries no IPv6 (3 flows in this capture)
    assert summary["flows"] == c["flows"] == want
    assert c["malformed"] == 0 and c["pending_never_decoded"] == 0
    assert rep["packets"] == c["datagrams"] > 0
    assert len(flow_events(jsonl)) == want
    con = duckdb.connect(str(store), read_only=True)
    assert con.execute("SELECT count(*) FROM flows").fetchone() == (want,)
    # Data time: the capture's 2011 timestamps, not the wall clock.
    assert summary["first_seen"].startswith("2011-03-18")


def datagram_v5(n: int = 1) -> bytes:
    head = struct.pack(">HHIIIIBBH", 5, n, 10_000, 1_700_000_000, 0, 1, 0, 0, 0)
    rec = (
        socket.inet_aton("10.0.0.1")
        + socket.inet_aton("10.0.0.2")
        + b"\0" * 8
        + struct.pack(
            ">IIIIHHBBBBHHBBH", 3, 180, 9_000, 9_500, 40000, 22, 0, 0x02, 6, 0, 0, 0, 0, 0, 0
        )
    )
    return head + rec * n


def test_sigint_flushes_what_arrived(tmp_path: Path) -> None:
    """Datagrams that arrive right before SIGINT are decoded and written, not lost."""
    jsonl = tmp_path / "out.jsonl"
    proc, port = start_collector(tmp_path, "--no-store", "--jsonl", str(jsonl), "--json")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(5):
            s.sendto(datagram_v5(4), ("127.0.0.1", port))
    rc, out, err = stop(proc, signal.SIGINT)
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["files"][0]["counters"]["datagrams"] == 5
    assert len(flow_events(jsonl)) == 20 == summary["flows"]


def test_ipv6_listener_and_max_flows(tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback")
    proc, port = start_collector(
        tmp_path, "--no-store", "--json", "--max-flows", "8", listen="[::1]:0"
    )
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        for _ in range(3):
            s.sendto(datagram_v5(4), ("::1", port))
            time.sleep(0.3)
    out, err = proc.communicate(timeout=60)  # stops by itself at --max-flows
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["flows"] >= 8
    assert summary["files"][0]["path"].startswith("udp://")


def test_malformed_datagrams_warn_and_go_on(tmp_path: Path) -> None:
    proc, port = start_collector(tmp_path, "--no-store", "--max-seconds", "30")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(datagram_v5(2)[:60], ("127.0.0.1", port))  # count says 2, one fits
        s.sendto(struct.pack(">HHIII", 10, 9999, 0, 0, 0), ("127.0.0.1", port))
        s.sendto(datagram_v5(1), ("127.0.0.1", port))
    time.sleep(0.6)
    rc, out, err = stop(proc)
    assert rc == 0
    assert "Traceback" not in err
    assert "exporter 127.0.0.1" in err and "count 2" in err and "message length 9999" in err
    assert re.search(r"\b1 flows\b", out), out


def test_bad_listen_address_is_a_usage_error(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "tapetum", "collect", "--listen", "nohost:99999"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "tapetum", "collect"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert r.returncode == 2


def write_export_capture(path: Path, datagrams: list[bytes], dport: int = 2055) -> None:
    """A pcap (raw IPv4) of export datagrams, as tcpdump would record them on the collector."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)]
    for k, d in enumerate(datagrams):
        udp = struct.pack(">HHHH", 40000, dport, 8 + len(d), 0) + d
        ip = (
            struct.pack(
                ">BBHHHBBH4s4s",
                0x45,
                0,
                20 + len(udp),
                k,
                0,
                64,
                17,
                0,
                socket.inet_aton("192.0.2.7"),
                socket.inet_aton("192.0.2.1"),
            )
            + udp
        )
        out.append(struct.pack("<IIII", 1_700_000_000 + k, 0, len(ip), len(ip)) + ip)
    path.write_bytes(b"".join(out))


def test_read_mode_decodes_a_capture_of_exports(tmp_path: Path) -> None:
    cap = tmp_path / "exports.pcap"
    write_export_capture(cap, [datagram_v5(3), datagram_v5(2)])
    r = subprocess.run(
        [sys.executable, "-m", "tapetum", "collect", "--read", str(cap), "--no-store", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    (rep,) = summary["files"]
    assert rep["counters"]["datagrams"] == 2 and summary["flows"] == 5
    assert rep["format"].startswith("netflow")
    # --port filters: nothing is sent to 9995.
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tapetum",
            "collect",
            "--read",
            str(cap),
            "--port",
            "9995",
            "--no-store",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert json.loads(r.stdout)["flows"] == 0


def test_read_mode_missing_file(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tapetum",
            "collect",
            "--read",
            str(tmp_path / "nope.pcap"),
            "--no-store",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert r.returncode == 3 and "nope.pcap" in r.stderr and "Traceback" not in r.stderr


def test_real_v9_capture_read_mode(tmp_path: Path) -> None:
    pcap = data_path("nfstream", "pcaps", "netflowv9.pcap")
    r = subprocess.run(
        [sys.executable, "-m", "tapetum", "collect", "--read", str(pcap), "--no-store"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "waiting for templates 23 sets" in " ".join(r.stdout.split())
