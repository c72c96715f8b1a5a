"""Live latency benchmark: packet-to-alert time of `tapetum watch` at ~50 k packets/s.

    sudo python bench/bench_live.py [--pps 50000] [--seconds 30] [--attacks-every 0.75] \\
        [--background bench/out/bench.pcap] [--write-doc]

In a network namespace made here (veth pair, IPv6 off), `tapetum watch` captures on one end
while tcpreplay sends the mixed background capture (`bench/gen_capture.py`; web/TLS/DNS/SSH …)
into the other at `--pps`. Every `--attacks-every` seconds a vertical port scan from a new
attacker address (60 closed ports, ~15 ms) is sent by a second tcpreplay; its send end is the
time tcpreplay returns (just after its last packet: a few ms of exit time make the latency
measured slightly *shorter* than the truth, never longer). A thread polls the watcher's JSON
lines every 5 ms and records when each attacker's first alert appears. Reported per
configuration: packet-to-alert p50/p99/max, attacks missed, packets the watcher saw, kernel
drops, the watcher's CPU (user+sys per second of wall time) and peak RSS, and the rate
tcpreplay really achieved.

Needs root, iproute2 and tcpreplay. Timing numbers belong here, never in unit tests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from tapetum.testing import CaptureBuilder, Host, vertical_scan

ROOT = Path(__file__).resolve().parent
DOC = ROOT.parent / "docs" / "benchmarks.md"
START, END = "<!-- live:start -->", "<!-- live:end -->"

#: name -> (config TOML, extra watch arguments, what it shows)
VARIANTS: dict[str, tuple[str, list[str], str]] = {
    "default": (
        "",
        [],
        "defaults: scan window 300 s, lag = longest idle timeout 300 s",
    ),
    "fast-windows": (
        """
[meter]
tcp_idle_s = 2.0
udp_idle_s = 2.0
icmp_idle_s = 2.0
other_idle_s = 2.0
tcp_closed_s = 0.5
[detectors.scan]
window_s = 1.0
slow_window_s = 0.0
""",
        [],
        "scan window 1 s, idle timeouts 2 s (lag 2 s), closed TCP 0.5 s",
    ),
    "fast-windows+live-lag": (
        """
[meter]
tcp_idle_s = 2.0
udp_idle_s = 2.0
icmp_idle_s = 2.0
other_idle_s = 2.0
tcp_closed_s = 0.1
[detectors.scan]
window_s = 0.5
slow_window_s = 0.0
""",
        ["--live-lag", "0.2"],
        "scan window 0.5 s, closed TCP 0.1 s, `--live-lag 0.2`",
    ),
}
VARIANTS["fast-windows+live-lag/recv"] = (
    VARIANTS["fast-windows+live-lag"][0],
    ["--live-lag", "0.2", "--capture", "recv"],
    "as above, `--capture recv` (one recvmsg per packet instead of the ring)",
)


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=600)


class Namespace:
    def __init__(self) -> None:
        self.name = f"tpwbench{os.getpid()}"

    def __enter__(self) -> Namespace:
        sh("ip", "netns", "add", self.name)
        sh(*self.exec("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1",
                      "net.ipv6.conf.all.disable_ipv6=1"))  # fmt: skip
        sh(*self.exec("ip", "link", "add", "tpwa", "type", "veth", "peer", "name", "tpwb"))
        for itf in ("tpwa", "tpwb"):
            sh(*self.exec("ip", "link", "set", itf, "up"))
        return self

    def __exit__(self, *exc: object) -> None:
        for pid in sh("ip", "netns", "pids", self.name, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        sh("ip", "netns", "del", self.name, check=False)

    def exec(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]


def pcap_packets(path: Path) -> int:
    from tapetum.sources.pcap import CaptureReader

    with CaptureReader(path) as r:
        return sum(b.n for b in r)


def attack_pcaps(out: Path, count: int) -> list[tuple[str, Path]]:
    made = []
    for k in range(count):
        ip = f"10.66.{k // 250}.{k % 250 + 1}"
        b = CaptureBuilder(seed=100 + k)
        rng = random.Random(k)
        b.add(0.0, vertical_scan, Host(ip), Host(f"10.1.0.{k % 200 + 10}"),
              rng.sample(range(1, 10000), 60), rate_pps=4000.0)  # fmt: skip
        path = out / f"attack{k}.pcap"
        b.write(path)
        made.append((ip, path))
    return made


def tail_alerts(path: Path, seen: dict[str, float], stop: threading.Event) -> None:
    """First wall time each alert entity shows up in the JSON lines (polled every 5 ms)."""
    pos = 0
    buf = b""
    while not stop.is_set():
        if path.exists():
            with open(path, "rb") as fh:
                fh.seek(pos)
                data = fh.read()
            pos += len(data)
            now = time.time()
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                ev = json.loads(line)
                if ev.get("event_type") == "alert":
                    seen.setdefault(ev["alert"]["entity"], now)
        time.sleep(0.005)


def run_variant(
    ns: Namespace, work: Path, variant: str, background: Path, args: argparse.Namespace
) -> dict[str, Any]:
    name = variant
    toml, extra, _ = VARIANTS[name]
    name = re.sub(r"[^\w+-]", "_", name)  # a file name
    cfg_args: list[str] = []
    if toml:
        cfg = work / f"{name}.toml"
        cfg.write_text(toml)
        cfg_args = ["--config", str(cfg)]
    jsonl = work / f"{name}.jsonl"
    jsonl.unlink(missing_ok=True)
    err = open(work / f"{name}.err", "wb")  # noqa: SIM115
    summary = work / f"{name}.json"
    watch = subprocess.Popen(
        ns.exec(sys.executable, "-m", "tapetum", "watch", "-i", "tpwb", "--jsonl", str(jsonl),
                "--status-every", "0", "--quiet", "--json", *cfg_args, *extra),
        stdout=open(summary, "wb"), stderr=err,  # noqa: SIM115
    )  # fmt: skip
    deadline = time.time() + 120
    while b"watching" not in (work / f"{name}.err").read_bytes():
        if watch.poll() is not None or time.time() > deadline:
            raise SystemExit(f"watch did not start: {(work / f'{name}.err').read_text()}")
        time.sleep(0.05)
    time.sleep(1.0)
    seen: dict[str, float] = {}
    stop = threading.Event()
    tail = threading.Thread(target=tail_alerts, args=(jsonl, seen, stop), daemon=True)
    tail.start()
    limit = int(args.pps * args.seconds)
    bg = subprocess.Popen(
        ns.exec("tcpreplay", "-i", "tpwa", f"--pps={args.pps}", f"--limit={limit}",
                "--loop=0", str(background)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    n_attacks = int((args.seconds - 3) / args.attacks_every)
    attacks = attack_pcaps(work, n_attacks)
    sent: dict[str, float] = {}
    attack_packets = sum(pcap_packets(path) for _, path in attacks)
    t0 = time.time() + 1.0
    for k, (ip, path) in enumerate(attacks):
        delay = t0 + k * args.attacks_every - time.time()
        if delay > 0:
            time.sleep(delay)
        sh(*ns.exec("tcpreplay", "-i", "tpwa", "--topspeed", str(path)))
        sent[ip] = time.time()
    bg_out, _ = bg.communicate(timeout=args.seconds * 4 + 60)
    # Alerts still due (windows close on data time): give them the longest expected wait.
    wait_until = time.time() + args.settle
    while time.time() < wait_until and not all(ip in seen for ip in sent):
        time.sleep(0.05)
    stop.set()
    tail.join()
    watch.send_signal(signal.SIGTERM)
    watch.wait(timeout=300)
    err.close()
    final = json.loads(summary.read_text())["live"]
    lat = np.array([seen[ip] - t for ip, t in sent.items() if ip in seen])
    rate = re.search(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps", bg_out)
    actual = re.search(r"Actual: (\d+) packets", bg_out)
    uptime = float(final["uptime_s"])
    return {
        "variant": variant,
        "attacks": len(sent),
        "detected_live": int(lat.shape[0]),
        "p50_s": float(np.percentile(lat, 50)) if lat.size else None,
        "p99_s": float(np.percentile(lat, 99)) if lat.size else None,
        "max_s": float(lat.max()) if lat.size else None,
        "sent_pps": float(rate.group(1)) if rate else None,
        "sent_packets": int(actual.group(1)) if actual else None,
        "captured_packets": final["packets"],
        "kernel_drops": final["kernel_drops"],
        # Sent (background + attacks) but never captured, wherever it was lost.
        "lost_packets": (int(actual.group(1)) if actual else 0) + attack_packets - final["packets"],
        "cpu_per_wall_s": final["cpu_s"] / uptime if uptime else None,
        "max_rss_mib": final["max_rss_mib"],
        "alerts_written": final["alerts_written"],
        "peak_active_flows": final["peak_active_flows"],
    }


def fmt(v: Any, spec: str = ".2f") -> str:
    return "–" if v is None else format(v, spec)


def write_doc(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    rows = [
        "| configuration | attacks | alerted live | p50 s | p99 s | max s | sent pps | "
        "captured | kernel drops | lost | CPU (s/s) | RSS MiB | alerts (all) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {VARIANTS[r['variant']][2]} | {r['attacks']} | {r['detected_live']} | "
            f"{fmt(r['p50_s'])} | {fmt(r['p99_s'])} | {fmt(r['max_s'])} | "
            f"{fmt(r['sent_pps'], ',.0f')} | {r['captured_packets']:,} | {r['kernel_drops']:,} | "
            f"{r['lost_packets']:,} | {fmt(r['cpu_per_wall_s'])} | "
            f"{fmt(r['max_rss_mib'], '.0f')} | "
            f"{r['alerts_written']:,} |"
        )
    body = "\n".join(
        [
            START,
            f"`sudo python bench/bench_live.py --pps {args.pps} --seconds {args.seconds} "
            f"--attacks-every {args.attacks_every} --write-doc` "
            f"(background `{args.background.name}`, TPACKET_V3 ring; {os.cpu_count()} cores "
            "shared with the sender). Latency: from the end of a scan's send to its alert line "
            "in the JSON lines; 'alerted live' counts alerts that came before SIGTERM's flush.",
            "",
            *rows,
            END,
        ]
    )
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if START in text and END in text:
        text = text[: text.index(START)] + body + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n## Live capture: packet to alert (`tapetum watch`)\n\n"
        text += "See docs/live.md for what the numbers mean.\n\n" + body + "\n"
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pps", type=int, default=50_000)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--attacks-every", type=float, default=0.75)
    p.add_argument("--background", type=Path, default=ROOT / "out" / "bench.pcap")
    p.add_argument("--variants", default="fast-windows,fast-windows+live-lag")
    p.add_argument("--settle", type=float, default=15.0,
                   help="seconds to wait for alerts after the traffic ends")  # fmt: skip
    p.add_argument("--write-doc", action="store_true")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces, AF_PACKET)", file=sys.stderr)
        return 2
    if not args.background.exists():
        print(f"{args.background}: make it with python bench/gen_capture.py", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="tpwbench") as tmp, Namespace() as ns:
        for name in args.variants.split(","):
            r = run_variant(ns, Path(tmp), name, args.background, args)
            print(json.dumps(r), flush=True)
            results.append(r)
    if args.write_doc:
        write_doc(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
