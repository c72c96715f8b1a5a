"""Throughput and memory of the capture path, as ratios against tcpdump measured in the same run.

    python bench/run_bench.py [--capture bench/out/bench.pcap] [--repeat 3] [--write-doc]

Stages (each the best of --repeat runs, after a warm-up that also loads compiled code):
  tcpdump      `tcpdump -r X -w /dev/null`: the reference (libpcap read + write).
  reader       Tapetum's CaptureReader alone (index + decode of every header).
  meter        reader + flow meter (flows finished and exported as columns).
  pipeline     the full pipeline (protocols, detectors, DuckDB store) in this warm process.
  analyze      `tapetum analyze X --store … --json` as a fresh process: wall time (including
               interpreter start-up and loading compiled kernels) and peak RSS.
  nfstream     NFStream (libpcap + nDPI in C) with dissection off, statistical features off.
  dpkt         a plain dpkt loop with a Python dict flow table (what many Python tools do).
The page cache is warmed first, so disk speed is not measured. Results go to bench/results.json
and, with --write-doc, to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def best_of(fn: Callable[[], int], repeat: int) -> tuple[float, int]:
    times = []
    out = 0
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def run_tcpdump(path: str) -> int:
    subprocess.run(
        ["tcpdump", "-r", path, "-w", "/dev/null"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return 0


def run_reader(path: str) -> int:
    from tapetum.sources.pcap import CaptureReader

    n = 0
    with CaptureReader(path) as r:
        for b in r:
            n += b.n
    return n


def run_meter(path: str) -> int:
    from tapetum.flows.meter import FlowMeter
    from tapetum.sources.pcap import CaptureReader

    m = FlowMeter()
    flows = 0
    with CaptureReader(path) as r:
        for b in r:
            _, fin = m.process(b)
            flows += sum(len(f) for f in fin)
    flows += sum(len(f) for f in m.flush())
    return flows


def run_pipeline(path: str) -> int:
    """The full pipeline with the DuckDB store, in this (warm) process: no start-up cost."""
    from tapetum.config import Config
    from tapetum.pipeline import Pipeline
    from tapetum.sinks.duckdb import DuckDBSink

    with tempfile.TemporaryDirectory() as tmp:
        sink = DuckDBSink(os.path.join(tmp, "b.duckdb"), "bench")
        summary = Pipeline(Config(), [sink]).run([path])
        sink.close()
    return summary.flows


def run_analyze(path: str) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of a fresh `tapetum analyze` process."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "tapetum", "analyze", path, "--no-progress",
               "--store", os.path.join(tmp, "b.duckdb"), "--json"]  # fmt: skip
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, _, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        if proc.returncode not in (None, 0) and ru is None:
            raise RuntimeError("analyze failed")
        proc.communicate()
        return wall, int(ru.ru_maxrss)


def run_nfstream(path: str) -> int:
    from nfstream import NFStreamer  # type: ignore[import-not-found]

    s = NFStreamer(source=path, n_dissections=0, statistical_analysis=False, n_meters=1)
    return sum(1 for _ in s)


def run_dpkt(path: str) -> int:
    import socket

    import dpkt

    flows: dict[tuple[object, ...], list[int]] = {}
    with open(path, "rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            try:
                eth = dpkt.ethernet.Ethernet(buf)
            except (dpkt.UnpackError, IndexError):
                continue
            ip = eth.data
            if not isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6):
                continue
            l4 = ip.data
            sport = getattr(l4, "sport", 0)
            dport = getattr(l4, "dport", 0)
            a, b = (ip.src, sport), (ip.dst, dport)
            key = (min(a, b), max(a, b), ip.p if isinstance(ip, dpkt.ip.IP) else ip.nxt)
            v = flows.get(key)
            if v is None:
                flows[key] = [1, len(buf)]
            else:
                v[0] += 1
                v[1] += len(buf)
    del socket
    return len(flows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--capture", default=str(REPO / "bench" / "out" / "bench.pcap"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-peers", action="store_true", help="skip NFStream and dpkt")
    ap.add_argument("--write-doc", action="store_true")
    args = ap.parse_args()
    path = args.capture
    if not os.path.exists(path):
        sys.exit(f"{path}: no capture; make one with: python bench/gen_capture.py --out {path}")
    if shutil.which("tcpdump") is None:
        sys.exit("tcpdump is needed as the reference (apt-get install tcpdump)")
    size = os.path.getsize(path)
    # Warm the page cache and compiled code.
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass
    run_reader(str(REPO / "src" / "tapetum" / "data" / "demo.pcap"))
    run_meter(str(REPO / "src" / "tapetum" / "data" / "demo.pcap"))

    results: dict[str, dict[str, float]] = {}
    t_ref, _ = best_of(lambda: run_tcpdump(path), args.repeat)
    packets = run_reader(path)
    results["tcpdump"] = {"seconds": t_ref}
    t, _ = best_of(lambda: run_reader(path), args.repeat)
    results["reader"] = {"seconds": t}
    t, flows = best_of(lambda: run_meter(path), args.repeat)
    results["reader+meter"] = {"seconds": t, "flows": flows}
    run_pipeline(str(REPO / "src" / "tapetum" / "data" / "demo.pcap"))
    t, _ = best_of(lambda: run_pipeline(path), args.repeat)
    results["pipeline (in-process)"] = {"seconds": t}
    analyze_runs = [run_analyze(path) for _ in range(args.repeat)]
    t = min(w for w, _ in analyze_runs)
    rss = max(r for _, r in analyze_runs)
    results["analyze (CLI)"] = {"seconds": t, "peak_rss_mib": rss / 1024}
    if not args.skip_peers:
        try:
            t, nflows = best_of(lambda: run_nfstream(path), 1)
            results["nfstream"] = {"seconds": t, "flows": nflows}
        except ImportError:
            print("nfstream not installed (pip install nfstream): skipped", file=sys.stderr)
        t, dflows = best_of(lambda: run_dpkt(path), 1)
        results["dpkt"] = {"seconds": t, "flows": dflows}
    for r in results.values():
        r["packets_per_s"] = packets / r["seconds"]
        r["ratio_to_tcpdump"] = t_ref / r["seconds"]
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    meta = {
        "capture": os.path.relpath(path, REPO),
        "packets": packets,
        "bytes": size,
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "repeat": args.repeat,
        "bench_process_peak_rss_mib": self_rss,
    }
    out = {"meta": meta, "results": results}
    (REPO / "bench" / "results.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        f"| {name} | {r['seconds']:.3f} | {r['packets_per_s'] / 1e6:.2f} M | "
        f"{r['ratio_to_tcpdump']:.2f} × | "
        f"{format(r['peak_rss_mib'], '.0f') if 'peak_rss_mib' in r else '–'} |"
        for name, r in results.items()
    ]
    table = "\n".join(
        [
            "| stage | seconds | packets/s | vs tcpdump | peak RSS MiB |",
            "|---|---|---|---|---|",
            *lines,
        ]
    )
    print(f"{packets:,} packets, {size / 2**20:,.0f} MiB\n{table}")
    if args.write_doc:
        write_doc(meta, table)


def write_doc(meta: dict[str, object], table: str) -> None:
    doc = REPO / "docs" / "benchmarks.md"
    text = doc.read_text() if doc.exists() else ""
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    block = (
        f"{start}\nCapture `{meta['capture']}`: {meta['packets']:,} packets, "
        f"{int(meta['bytes']) / 2**20:,.0f} MiB (made by `python bench/gen_capture.py`). "
        f"Python {meta['python']}, best of {meta['repeat']}.\n\n{table}\n{end}"
    )
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text + "\n" + block + "\n"
    doc.write_text(text)


if __name__ == "__main__":
    main()
