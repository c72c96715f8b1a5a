"""`tapetum watch --interface IF`: the full pipeline on live traffic, for days.

Alerts are written as they happen (DuckDB store, JSON lines, console). Memory is bounded by the
meter's flow cap (evictions counted) and the detectors' own caps. Checkpoints (periodically and
on SIGTERM/SIGINT) hold every detector's learnt state (a model directory, as `tapetum learn`
writes it) plus the ids of the alerts already written and the sinks' positions; a restart with
the same `--checkpoint` resumes with the learnt baselines and writes no alert twice: an alert
whose id (deterministic from its content, `detectors.common.AlertIds`) is in the checkpoint, in
the JSON lines written after it, or in the store's rows of this watch is not written again.
See docs/live.md.

Exit codes: 0 stopped (signal, --max-seconds, --max-packets); 2 usage error; 3 the interface
cannot be captured (not root, no such interface, bad filter); 4 store error; 5 config error;
6 the checkpoint cannot be used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import click
import msgspec
import numpy as np
from rich.console import Console
from rich.markup import escape

from tapetum.config import Config
from tapetum.detectors.base import StreamingDetector
from tapetum.flows.meter import FlowBatch
from tapetum.records import Alert, Incident
from tapetum.sinks.base import Record, Sink

EXIT_CAPTURE = 3
EXIT_STORE = 4
EXIT_CONFIG = 5
EXIT_CHECKPOINT = 6
CHECKPOINT_FORMAT = "tapetum-watch-checkpoint"
CHECKPOINT_VERSION = 1
#: Alert ids kept in the checkpoint; older ones are found again in the sinks' own records.
MAX_REMEMBERED_IDS = 200_000
#: Alerts kept in memory for the summary (the store and JSON lines have them all).
MAX_SUMMARY_ALERTS = 10_000
SEVERITY_NAMES = {1: "high", 2: "medium", 3: "low"}


# -- written alerts -------------------------------------------------------------------------


class AlertLedger:
    """Ids of the alerts already written, oldest first, bounded (oldest forgotten first)."""

    def __init__(self, cap: int = MAX_REMEMBERED_IDS) -> None:
        self.cap = cap
        self._ids: dict[str, None] = {}
        self.suppressed = 0

    def __contains__(self, alert_id: object) -> bool:
        return alert_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, alert_id: str) -> None:
        self._ids[alert_id] = None
        if len(self._ids) > self.cap:
            del self._ids[next(iter(self._ids))]

    def update(self, ids: Iterable[str]) -> None:
        for i in ids:
            self.add(i)

    def ids(self) -> list[str]:
        return list(self._ids)


def jsonl_alert_ids(path: Path, start: int) -> tuple[list[str], int]:
    """Alert ids in the JSON lines of `path` from byte `start` (0 when the file is shorter: it
    was rotated or replaced). A partial last line (a kill during a write) is cut off: that alert
    was not written. Returns (ids, the file's size afterwards)."""
    if not path.exists():
        return [], 0
    size = path.stat().st_size
    if start > size:
        start = 0
    ids: list[str] = []
    with open(path, "r+b") as fh:
        fh.seek(start)
        data = fh.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            fh.truncate(start + end)
            size = start + end
        dec = msgspec.json.Decoder()
        for line in data[:end].splitlines():
            if b'"alert"' not in line:
                continue
            try:
                ev = dec.decode(line)
            except msgspec.DecodeError:
                continue
            if isinstance(ev, dict) and ev.get("event_type") == "alert":
                aid = (ev.get("alert") or {}).get("alert_id")
                if isinstance(aid, str):
                    ids.append(aid)
    return ids, size


# -- output ---------------------------------------------------------------------------------


@dataclass
class LiveOutput:
    """The pipeline's one sink: alerts not written before go to every sink and the console
    as they come (and are flushed at once); flows and events go to the store (and to the JSON
    lines with `jsonl_flows`)."""

    ledger: AlertLedger
    store: Sink | None = None
    jsonl: Sink | None = None
    jsonl_fh: IO[bytes] | None = None
    jsonl_flows: bool = False
    console: Console | None = None
    alerts_written: int = 0
    #: Wall clock (time.time_ns) at which each alert was written, for latency measurements.
    written_at: dict[str, int] = field(default_factory=dict)
    _store_dirty: bool = False

    def write_flows(self, flows: FlowBatch, services: list[str]) -> None:
        if self.store is not None:
            self.store.write_flows(flows, services)
        if self.jsonl is not None and self.jsonl_flows:
            self.jsonl.write_flows(flows, services)

    def write(self, records: list[Record]) -> None:
        fresh: list[Record] = []
        other: list[Record] = []
        for r in records:
            if isinstance(r, Alert):
                if r.alert_id in self.ledger:
                    self.ledger.suppressed += 1
                    continue
                self.ledger.add(r.alert_id)
                fresh.append(r)
            elif isinstance(r, Incident):
                fresh.append(r)
            else:
                other.append(r)
        if other:
            if self.store is not None:
                self.store.write(other)
            if self.jsonl is not None and self.jsonl_flows:
                self.jsonl.write(other)
        if not fresh:
            return
        for sink in (self.store, self.jsonl):
            if sink is not None:
                sink.write(fresh)
        if self.jsonl is not None:
            self.jsonl.flush()  # alerts are visible at once
        self._store_dirty = self.store is not None
        now = time.time_ns()
        for r in fresh:
            if isinstance(r, Alert):
                self.alerts_written += 1
                if len(self.written_at) < 1_000_000:
                    self.written_at[r.alert_id] = now
                if self.console is not None:
                    self.console.print(_alert_line(r), soft_wrap=True)

    def flush_store(self) -> None:
        if self.store is not None and self._store_dirty:
            self.store.flush()
            self._store_dirty = False

    def flush(self) -> None:
        for sink in (self.store, self.jsonl):
            if sink is not None:
                sink.flush()
        self._store_dirty = False

    def close(self) -> None:
        for sink in (self.store, self.jsonl):
            if sink is not None:
                sink.close()

    def jsonl_position(self) -> int | None:
        if self.jsonl_fh is None:
            return None
        try:
            return self.jsonl_fh.tell()
        except (OSError, ValueError):
            return None


def _alert_line(a: Alert) -> str:
    from tapetum.sinks.eve import ts_text

    sev = SEVERITY_NAMES.get(a.severity, str(a.severity))
    color = {"high": "red", "medium": "yellow"}.get(sev, "cyan")
    return (
        f"[{color}]■ {sev}[/{color}] {ts_text(a.ts_ns)} [bold]{escape(a.signature)}[/bold] "
        f"{escape(a.entity)}: {escape(a.explanation)}"
    )


# -- checkpoints ----------------------------------------------------------------------------


def _checkpoint_dirs(root: Path) -> list[Path]:
    """Where a checkpoint may be, best first: the current one, then one left aside by a save
    that was killed between its two renames."""
    cur = root / "checkpoint"
    olds = sorted(root.glob(".checkpoint.old-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    return [p for p in [cur, *olds] if (p / "live.json").is_file()]


def load_checkpoint(
    root: Path, config: Config, cfg_hash: str
) -> tuple[list[StreamingDetector] | None, dict[str, Any], dict[str, Any] | None, list[str]]:
    """(detectors or None, live state, model manifest, warnings) from checkpoint dir `root`."""
    from tapetum.errors import ModelError
    from tapetum.learning import load_model

    dirs = _checkpoint_dirs(root)
    if not dirs:
        return None, {}, None, []
    d = dirs[0]
    try:
        live = json.loads((d / "live.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{d / 'live.json'}: unreadable checkpoint ({exc})") from None
    if live.get("format") != CHECKPOINT_FORMAT or live.get("version") != CHECKPOINT_VERSION:
        raise ModelError(f"{d / 'live.json'}: not a Tapetum watch checkpoint of this version")
    detectors, manifest, warnings = load_model(d / "model", config, cfg_hash)
    for det in detectors:
        _window_lags(det)
    return detectors, live, manifest, warnings


def _window_lags(det: StreamingDetector) -> None:
    """`learning.restore` sets a restored detector's `lag_ns` from the config, but the
    detector's `DataTimeWindows` were built by `from_state` with the default lag (300 s) and
    keep their own copy: give them the detector's, or windows close minutes late."""
    from tapetum.detectors.windows import DataTimeWindows

    lag = getattr(det, "lag_ns", None)
    if not isinstance(lag, int):
        return
    for value in vars(det).values() if hasattr(det, "__dict__") else ():
        for w in value if isinstance(value, list | tuple) else (value,):
            if isinstance(w, DataTimeWindows):
                w.lag_ns = lag


def save_checkpoint(
    root: Path,
    detectors: list[StreamingDetector],
    config: Config,
    cfg_hash: str,
    live: dict[str, Any],
    learnt: Any,
    manifest: dict[str, Any] | None,
) -> dict[str, Any]:
    """Write model + live.json to a temporary directory, then swap it in (atomic per rename;
    a kill between the renames leaves the previous checkpoint as .checkpoint.old-PID, which
    `load_checkpoint` falls back to)."""
    from tapetum.learning import save_model

    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".checkpoint.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        new_manifest = save_model(tmp / "model", detectors, config, learnt, manifest, cfg_hash)
        body = json.dumps(live, sort_keys=True).encode()
        with open(tmp / "live.json", "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        cur = root / "checkpoint"
        old = root / f".checkpoint.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        if cur.exists():
            cur.rename(old)
        tmp.rename(cur)
        if old.exists():
            shutil.rmtree(old)
        return new_manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# -- the loop -------------------------------------------------------------------------------


@dataclass
class WatchStats:
    started_mono_ns: int = 0
    packets: int = 0
    batches: int = 0
    ticks: int = 0
    checkpoints: int = 0
    last_checkpoint_s: float = 0.0
    checkpoint_seconds: float = 0.0
    stop_reason: str = ""
    cpu_s: float = 0.0


class Watcher:
    """Live capture → Pipeline, with ticks, status, metrics and checkpoints. The CLI command is
    a thin shell around it (the benchmark drives it the same way, as a subprocess)."""

    def __init__(
        self,
        capture: Any,
        pipeline: Any,
        output: LiveOutput,
        config: Config,
        *,
        cfg_hash: str,
        checkpoint: Path | None,
        checkpoint_every_s: float,
        live_state: dict[str, Any],
        manifest: dict[str, Any] | None,
        status_every_s: float,
        metrics_path: Path | None,
        console: Console,
        run_id: str,
    ) -> None:
        self.capture = capture
        self.pipe = pipeline
        self.out = output
        self.config = config
        self.cfg_hash = cfg_hash
        self.checkpoint = checkpoint
        self.checkpoint_every_s = checkpoint_every_s
        self.prior = live_state
        self.manifest = manifest
        self.status_every_s = status_every_s
        self.metrics_path = metrics_path
        self.console = console
        self.run_id = run_id
        self.stats = WatchStats()
        self.stop = False
        self._last_ts: int | None = None
        self._last_mono = 0

    def request_stop(self, reason: str) -> None:
        if not self.stop:
            self.stop = True
            self.stats.stop_reason = reason

    def run(self, max_seconds: float | None, max_packets: int | None) -> None:
        from tapetum.sources.decode import C_TS

        st = self.stats
        st.started_mono_ns = time.monotonic_ns()
        next_status = time.monotonic() + self.status_every_s
        next_ckpt = time.monotonic() + self.checkpoint_every_s
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        for batch in self.capture:
            if batch.n:
                self.pipe.process_batch(batch)
                st.packets += batch.n
                self._last_ts = int(batch.cols[:, C_TS].max())
                self._last_mono = time.monotonic_ns()
            st.batches += 1
            self._trim()
            if self._last_ts is not None:
                # Idle or not, data time moves on with the wall clock since the last packet:
                # flows idle that long expire and windows complete without a new packet.
                self.pipe.tick(self._last_ts + (time.monotonic_ns() - self._last_mono))
                st.ticks += 1
            self.out.flush_store()
            now = time.monotonic()
            if self.status_every_s > 0 and now >= next_status:
                self.status()
                next_status = now + self.status_every_s
            if self.checkpoint is not None and self.checkpoint_every_s > 0 and now >= next_ckpt:
                self.save()
                next_ckpt = time.monotonic() + self.checkpoint_every_s
            if deadline is not None and now >= deadline:
                self.request_stop("max-seconds")
            if max_packets is not None and st.packets >= max_packets:
                self.request_stop("max-packets")
            if self.stop:
                break

    def finish(self) -> Any:
        """Graceful end: flush the meter, parsers and detectors (their pending alerts are
        written), correlate, flush the sinks, then checkpoint what was learnt."""
        summary = self.pipe.finish()
        self.out.flush()
        if self.checkpoint is not None:
            self.save()
        with contextlib.suppress(OSError):
            self.capture.kernel_stats()
        self.write_metrics()
        return summary

    def _trim(self) -> None:
        """The summary keeps the latest alerts only: a week of alerts must not fill memory."""
        s = self.pipe.summary
        if len(s.alerts) > MAX_SUMMARY_ALERTS:
            del s.alerts[: len(s.alerts) - MAX_SUMMARY_ALERTS]
        em = self.pipe.alert_emitted_ns
        if len(em) > MAX_SUMMARY_ALERTS:
            for k in list(em)[: len(em) - MAX_SUMMARY_ALERTS]:
                del em[k]

    def counters(self) -> dict[str, Any]:
        cap = self.capture
        with contextlib.suppress(OSError):
            cap.kernel_stats()
        c = cap.counters
        mc = self.pipe.meter.counters
        elapsed = (time.monotonic_ns() - self.stats.started_mono_ns) / 1e9
        usage = os.times()
        self.stats.cpu_s = usage.user + usage.system
        return {
            "interface": cap.interface,
            "capture": cap.format,
            "uptime_s": round(elapsed, 3),
            "packets": c.packets,
            "bytes_on_wire": c.bytes_on_wire,
            "kernel_packets": c.kernel_packets,
            "kernel_drops": c.kernel_drops,
            "kernel_freezes": c.kernel_freezes,
            "batches": c.batches,
            "empty_batches": c.empty_batches,
            "active_flows": self.pipe.meter.active_flows,
            "flows": mc.flows,
            "peak_active_flows": mc.peak_active_flows,
            "evicted_flows": mc.evicted,
            "max_flows": self.pipe.meter.config.max_flows,
            "alerts_written": self.out.alerts_written,
            "alerts_suppressed_as_written_before": self.out.ledger.suppressed,
            "checkpoints": self.stats.checkpoints,
            "last_checkpoint_s": round(self.stats.last_checkpoint_s, 3),
            "cpu_s": round(self.stats.cpu_s, 3),
            "max_rss_mib": round(_max_rss_mib(), 1),
        }

    def status(self) -> None:
        c = self.counters()
        self.console.print(
            f"[dim]{c['interface']}: {c['packets']:,} packets, kernel drops {c['kernel_drops']:,}, "
            f"flows active {c['active_flows']:,} (peak {c['peak_active_flows']:,}, evicted "
            f"{c['evicted_flows']:,}), alerts {c['alerts_written']:,}, "
            f"cpu {c['cpu_s']:.1f} s, rss {c['max_rss_mib']:.0f} MiB[/dim]"
        )
        self.write_metrics(c)

    def write_metrics(self, c: dict[str, Any] | None = None) -> None:
        """Prometheus text format (node_exporter's textfile collector reads it)."""
        if self.metrics_path is None:
            return
        from tapetum.metrics import render

        c = c or self.counters()
        tmp = self.metrics_path.with_name(self.metrics_path.name + ".tmp")
        tmp.write_text(render(c, {"interface": str(c["interface"])}))
        tmp.replace(self.metrics_path)

    def save(self) -> None:
        from tapetum.learning import Learnt

        assert self.checkpoint is not None
        t0 = time.monotonic()
        s = self.pipe.summary
        self.out.flush()
        live = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "interface": self.capture.interface,
            "run_id": self.run_id,
            "saved_at_ns": time.time_ns(),
            "data_time_ns": self.pipe.meter.now_ns,
            "written_alert_ids": self.out.ledger.ids(),
            "sinks": {"jsonl_bytes": self.out.jsonl_position()},
            "counters": self.counters(),
            "previous": self.prior.get("counters"),
        }
        learnt = Learnt(first_ns=s.first_ns, last_ns=s.last_ns, packets=0, flows=0, alerts=0)
        self.manifest = save_checkpoint(
            self.checkpoint, self.pipe.detectors, self.config, self.cfg_hash, live, learnt,
            self.manifest,
        )  # fmt: skip
        self.stats.checkpoints += 1
        self.stats.last_checkpoint_s = time.monotonic() - t0
        self.stats.checkpoint_seconds += self.stats.last_checkpoint_s


def _max_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _watch_run_id(interface: str, checkpoint: Path | None, prior: dict[str, Any]) -> str:
    """One run id per watch: kept across restarts from the same checkpoint."""
    if prior.get("run_id"):
        return str(prior["run_id"])
    key = f"watch|{interface}|{checkpoint.resolve() if checkpoint else ''}|{time.time_ns()}"
    return hashlib.sha1(key.encode()).hexdigest()[:16]


@click.command(name="watch")
@click.option("--interface", "-i", "interface", required=True, help="Interface to capture on.")
@click.option("--bpf", help="Capture filter in tcpdump syntax (compiled by tcpdump -ddd).")
@click.option(
    "--store",
    type=click.Path(dir_okay=False, path_type=Path),
    help="DuckDB store for flows, metadata, alerts and incidents.",
)
@click.option(
    "--jsonl",
    "jsonl_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append alerts as EVE JSON lines to this file ('-': standard output).",
)
@click.option(
    "--jsonl-flows", is_flag=True, help="Also write flows and protocol events to the JSON lines."
)
@click.option(
    "--checkpoint",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for checkpoints; an existing checkpoint there is resumed.",
)
@click.option(
    "--checkpoint-every",
    "checkpoint_every",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds between checkpoints (0: only at shutdown).",
)
@click.option("--max-seconds", type=float, help="Stop (gracefully) after this many seconds.")
@click.option("--max-packets", type=int, help="Stop (gracefully) after this many packets.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML configuration file.",
)
@click.option(
    "--capture",
    "mode",
    type=click.Choice(["ring", "recv"]),
    default="ring",
    show_default=True,
    help="TPACKET_V3 memory-mapped ring, or one recvmsg per packet.",
)
@click.option(
    "--no-promiscuous", is_flag=True, help="Do not put the interface in promiscuous mode."
)
@click.option(
    "--flush-ms",
    type=int,
    default=250,
    show_default=True,
    help="Longest wait before a batch goes through the pipeline.",
)
@click.option(
    "--status-every",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds between status lines on standard error (0: none).",
)
@click.option(
    "--metrics",
    "metrics_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write counters in Prometheus text format to this file.",
)
@click.option(
    "--live-lag",
    "live_lag_s",
    type=float,
    help="Seconds after a window's end before detectors close it (default: the meter's "
    "longest idle timeout, as in analyze). Shorter gives faster alerts; flows still in the "
    "meter when their window closed are then counted in a window of their own.",
)
@click.option("--quiet", is_flag=True, help="No alert lines on the console.")
@click.option("--json", "as_json", is_flag=True, help="Print the final summary as JSON.")
def watch(
    interface: str,
    bpf: str | None,
    store: Path | None,
    jsonl_path: Path | None,
    jsonl_flows: bool,
    checkpoint: Path | None,
    checkpoint_every: float,
    max_seconds: float | None,
    max_packets: int | None,
    config_path: Path | None,
    mode: str,
    no_promiscuous: bool,
    flush_ms: int,
    status_every: float,
    metrics_path: Path | None,
    quiet: bool,
    as_json: bool,
    live_lag_s: float | None = None,
) -> None:
    """Capture on an interface and run the full pipeline continuously (Linux, root)."""
    from tapetum import __version__
    from tapetum.commands._common import default_intel_store, load_config_or_exit
    from tapetum.errors import StoreError, TapetumError
    from tapetum.learning import config_hash
    from tapetum.pipeline import Pipeline
    from tapetum.sinks.jsonl import JsonlSink
    from tapetum.sources.live import LiveCapture, LiveCaptureError

    err = Console(stderr=True, soft_wrap=True, highlight=False)
    config = load_config_or_exit(config_path, err)
    cfg_hash = config_hash(config)
    default_intel_store(config, store)

    ledger = AlertLedger()
    detectors = None
    prior: dict[str, Any] = {}
    manifest = None
    if checkpoint is not None:
        try:
            detectors, prior, manifest, warns = load_checkpoint(checkpoint, config, cfg_hash)
        except TapetumError as exc:
            err.print(f"[red]error:[/red] {exc}")
            sys.exit(EXIT_CHECKPOINT)
        for w in warns:
            err.print(f"[yellow]warning:[/yellow] {w}")
        ledger.update(prior.get("written_alert_ids", []))
        if detectors is not None:
            err.print(f"resuming from {checkpoint} ({len(ledger):,} alert ids already written)")
    run_id = _watch_run_id(interface, checkpoint, prior)
    if detectors is None:
        from tapetum.registry import build_detectors

        detectors = build_detectors(config)
    if live_lag_s is not None:
        for det in detectors:
            if hasattr(det, "lag_ns"):
                det.lag_ns = int(live_lag_s * 1e9)
                _window_lags(det)

    try:
        capture = LiveCapture(
            interface, bpf=bpf, mode=mode, promiscuous=not no_promiscuous, flush_ms=flush_ms
        )
    except LiveCaptureError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_CAPTURE)

    out = LiveOutput(ledger, jsonl_flows=jsonl_flows, console=None if quiet else err)
    try:
        if jsonl_path is not None:
            if str(jsonl_path) == "-":
                fh: IO[bytes] = sys.stdout.buffer
            else:
                start = (prior.get("sinks") or {}).get("jsonl_bytes") or 0
                ids, _ = jsonl_alert_ids(jsonl_path, int(start))
                ledger.update(ids)
                fh = open(jsonl_path, "ab")  # noqa: SIM115 - closed by the sink
                out.jsonl_fh = fh
            out.jsonl = JsonlSink(fh, flow_sequences=config.output.flow_sequences_in_json)
            if fh is not sys.stdout.buffer:
                out.jsonl = _OwningJsonl(out.jsonl, fh)
        if store is not None:
            from tapetum.sinks.duckdb import DuckDBSink

            db = DuckDBSink(str(store), run_id)
            known = db.con.execute(
                "SELECT alert_id FROM alerts WHERE run_id = ?", [run_id]
            ).fetchall()
            ledger.update(r[0] for r in known)
            if not db.con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchall():
                import datetime as dt

                db.begin_run(dt.datetime.now(dt.UTC).replace(tzinfo=None),
                             [f"live:{interface}"], __version__)  # fmt: skip
            out.store = db
    except StoreError as exc:
        capture.close()
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_STORE)
    except OSError as exc:
        capture.close()
        err.print(f"[red]error:[/red] {jsonl_path}: {exc.strerror}")
        sys.exit(EXIT_STORE)

    pipe = Pipeline(config, [out], detectors=detectors)
    watcher = Watcher(
        capture, pipe, out, config, cfg_hash=cfg_hash, checkpoint=checkpoint,
        checkpoint_every_s=checkpoint_every, live_state=prior, manifest=manifest,
        status_every_s=status_every, metrics_path=metrics_path, console=err, run_id=run_id,
    )  # fmt: skip

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        watcher.request_stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    err.print(
        f"watching {interface} ({capture.format}{', filter ' + repr(bpf) if bpf else ''}); "
        "SIGINT/SIGTERM stop and checkpoint"
    )
    try:
        watcher.run(max_seconds, max_packets)
        summary = watcher.finish()
    finally:
        capture.close()
    counters = watcher.counters()
    if out.store is not None:
        from tapetum.sinks.duckdb import DuckDBSink

        if isinstance(out.store, DuckDBSink):
            out.store.end_run({**summary.to_dict(), "live": counters})
    out.close()
    if as_json:
        click.echo(json.dumps({"live": counters, "stop": watcher.stats.stop_reason,
                               "summary": summary.to_dict()}, indent=1, default=_np))  # fmt: skip
    else:
        err.print(
            f"stopped ({watcher.stats.stop_reason or 'capture ended'}): {counters['packets']:,} "
            f"packets, kernel drops {counters['kernel_drops']:,}, {summary.flows:,} flows "
            f"(evicted {counters['evicted_flows']:,}), {counters['alerts_written']:,} alerts "
            f"written, {len(summary.incidents)} incidents; {watcher.stats.checkpoints} checkpoints"
        )


def _np(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"not JSON: {type(v).__name__}")


class _OwningJsonl:
    """The JSON lines sink over a file this command opened (append mode), closed with it."""

    def __init__(self, sink: Sink, fh: IO[bytes]) -> None:
        self.sink = sink
        self.fh = fh

    def write_flows(self, flows: FlowBatch, services: list[str]) -> None:
        self.sink.write_flows(flows, services)

    def write(self, records: list[Record]) -> None:
        self.sink.write(records)

    def flush(self) -> None:
        self.sink.flush()

    def close(self) -> None:
        self.sink.close()
        self.fh.close()
