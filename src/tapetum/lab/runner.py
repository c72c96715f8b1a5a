"""Run scenarios: build the lab once, then per scenario capture on the bridge, run background
traffic and the attack, write the pcap and its labels; tear everything down at the end, after
an error, on Ctrl-C or SIGTERM/SIGHUP, and at interpreter exit."""

from __future__ import annotations

import atexit
import os
import random
import re
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from tapetum.errors import TapetumError
from tapetum.lab import topology as T
from tapetum.lab.background import Background
from tapetum.lab.build import Lab
from tapetum.lab.labels import labels_document, write_labels
from tapetum.lab.netns import LabError, Netns, delete_namespace, stale_namespaces
from tapetum.lab.scenarios import SCENARIOS, Context, dga_name

MIN_DURATION_S = 8.0
Log = Callable[[str], None]


class LabInterrupted(TapetumError):
    """SIGINT/SIGTERM/SIGHUP arrived; the lab was torn down."""


@dataclass
class RunResult:
    scenario: str
    pcap: Path
    labels: Path
    packets: int
    capture_bytes: int
    duration_s: float  # first to last packet
    wall_s: float
    kernel_dropped: int
    attacks: int
    background: dict[str, int] = field(default_factory=dict)
    background_failures: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "pcap": str(self.pcap),
            "labels": str(self.labels),
            "packets": self.packets,
            "capture_bytes": self.capture_bytes,
            "duration_s": round(self.duration_s, 3),
            "wall_s": round(self.wall_s, 3),
            "kernel_dropped": self.kernel_dropped,
            "attacks": self.attacks,
            "background": self.background,
            "background_failures": self.background_failures,
        }


def pcap_stats(path: Path) -> tuple[int, float | None, float | None]:
    """Packets and first/last timestamp (seconds) of a capture."""
    from tapetum.sources.decode import C_TS
    from tapetum.sources.pcap import CaptureReader

    n, first, last = 0, None, None
    with CaptureReader(path) as reader:
        for b in reader:
            if b.n == 0:
                continue
            ts = b.cols[: b.n, C_TS]
            lo, hi = int(np.min(ts)), int(np.max(ts))
            first = lo if first is None else min(first, lo)
            last = hi if last is None else max(last, hi)
            n += b.n
    return n, None if first is None else first / 1e9, None if last is None else last / 1e9


class _Teardown:
    """Idempotent cleanup, shared by `finally`, the signal handlers and atexit."""

    def __init__(self, net: Netns, work: Path) -> None:
        self.net = net
        self.work = work
        self.background: Background | None = None
        self.done = False

    def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        main = threading.current_thread() is threading.main_thread()
        old = {}
        if main:  # a second Ctrl-C must not abort the cleanup half-way
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                old[sig] = signal.signal(sig, signal.SIG_IGN)
        try:
            if self.background is not None:
                self.background.stop(join=False)
            self.net.teardown()
            shutil.rmtree(self.work, ignore_errors=True)
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise LabInterrupted(f"interrupted by {signal.Signals(signum).name}; the lab was torn down")


def run_lab(
    scenarios: Sequence[str],
    out: Path,
    *,
    tools: dict[str, str],
    ftp_python: str,
    seed: int = 1,
    duration_s: float = 60.0,
    log: Log = lambda s: None,
    fault: Callable[[str], None] = lambda stage: None,
) -> list[RunResult]:
    """Run `scenarios` one after another on one lab. `fault(stage)` is a test hook called at
    "built" and "capturing"; whatever it raises is handled like any error."""
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        raise LabError(f"unknown scenario(s): {', '.join(unknown)}")
    if duration_s < MIN_DURATION_S:
        raise LabError(f"--duration must be at least {MIN_DURATION_S:g} s")
    out.mkdir(parents=True, exist_ok=True)
    net = Netns(f"tpl{os.getpid()}")
    lab = Lab(seed=seed, tools=tools, ftp_python=ftp_python, net=net)
    lab.secrets.dga_registered = dga_name(seed, -1)
    cleanup = _Teardown(net, lab.work)
    atexit.register(cleanup)
    handlers: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            handlers[sig] = signal.signal(sig, _raise_interrupted)
        handlers[signal.SIGINT] = signal.signal(signal.SIGINT, _raise_interrupted)
    results = []
    try:
        t = time.monotonic()
        for name in stale_namespaces():
            log(f"removing {name}, left behind by a lab run that is gone")
            delete_namespace(name)
        log(f"building the lab (namespaces {net.prefix}-*)")
        lab.build()
        log(f"lab ready in {time.monotonic() - t:.1f} s")
        fault("built")
        for name in scenarios:
            results.append(_run_scenario(lab, cleanup, name, out, seed, duration_s, log, fault))
    except (subprocess.SubprocessError, OSError) as exc:
        raise LabError(f"lab failed: {exc}") from None
    finally:
        log("tearing down the lab")
        cleanup()
        atexit.unregister(cleanup)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return results


def _start_capture(lab: Lab, pcap: Path) -> subprocess.Popen[Any]:
    proc = lab.net.spawn(
        "net",
        [lab.tool("tcpdump"), "-i", "br0", "-s", "0", "-n", "-B", "16384", "-Z", "root",
         "-w", str(pcap)],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    deadline = time.monotonic() + 15
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stderr.fileno(), 4096)
            seen += chunk
            if b"listening on" in seen:
                return proc
            if not chunk:
                break
        if proc.poll() is not None:
            break
    raise LabError(f"tcpdump did not start: {seen.decode(errors='replace').strip()[-300:]}")


def _run_scenario(
    lab: Lab,
    cleanup: _Teardown,
    name: str,
    out: Path,
    seed: int,
    duration_s: float,
    log: Log,
    fault: Callable[[str], None],
) -> RunResult:
    sc = SCENARIOS[name]
    rng = random.Random(f"{seed}:{name}")
    pcap = out / f"{name}.pcap"
    labels = out / f"{name}.labels.json"
    wall0 = time.time()
    capture = _start_capture(lab, pcap)
    t0 = time.monotonic()
    log(f"{name}: capturing to {pcap} for {duration_s:g} s")
    bg = Background(lab, seed, name, T.CLIENTS)
    cleanup.background = bg
    bg.start()
    fault("capturing")
    start_at = t0 + max(2.0, duration_s * rng.uniform(0.15, 0.25))
    deadline = max(start_at + 2.0, t0 + 0.85 * duration_s)
    ctx = Context(lab, name, rng, start_at, deadline)
    if sc.run is not None:
        sc.run(ctx)
        for a in ctx.attacks:
            log(f"{name}: {a.id} {a.tool} from {a.attacker[0]} {a.end_ts - a.start_ts:.1f} s")
    ctx.wait_until(t0 + duration_s)
    bg.stop()
    cleanup.background = None
    time.sleep(1.0)  # let the last answers reach the capture
    lab.net.stop(capture, signal.SIGTERM, wait_s=15)
    assert capture.stderr is not None
    tail = capture.stderr.read().decode(errors="replace")
    capture.stderr.close()
    lab.net.procs.remove(capture)
    m = re.search(r"(\d+) packets dropped by kernel", tail)
    packets, first, last = pcap_stats(pcap)
    start_ts = first if first is not None else wall0
    end_ts = last if last is not None else time.time()
    benign = [h.ip for h in (*T.CLIENTS, *T.SERVERS, T.DNS)]
    doc = labels_document(name, pcap.name, seed, start_ts, end_ts, benign, [T.LAN], ctx.attacks)
    write_labels(labels, doc)
    res = RunResult(
        scenario=name,
        pcap=pcap,
        labels=labels,
        packets=packets,
        capture_bytes=pcap.stat().st_size,
        duration_s=end_ts - start_ts,
        wall_s=time.time() - wall0,
        kernel_dropped=int(m.group(1)) if m else 0,
        attacks=len(ctx.attacks),
        background=dict(bg.counts),
        background_failures=dict(bg.failures),
    )
    log(
        f"{name}: {packets:,} packets, {res.capture_bytes:,} bytes, "
        f"{res.duration_s:.1f} s of capture, wall {res.wall_s:.1f} s"
    )
    return res
