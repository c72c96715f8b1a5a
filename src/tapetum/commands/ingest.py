"""`tapetum ingest zeek|eve`: other sensors' logs through the pipeline, read once or followed.

Read once, the result is what `tapetum analyze PATH` gives (the same store, JSON lines and
summary), with the source's own counts (records, events by type, skipped log types, unknown
fields) in the file report. With `--follow` the input is followed as it grows and rotates: new
lines reach the pipeline in batches at least every 250 ms, alerts are written to the store and
the JSON lines as they happen and printed to standard error; SIGINT/SIGTERM (or --max-seconds)
stop it cleanly: the last lines are read, everything is flushed, incidents are correlated and the
summary printed. See docs/ingest.md.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from tapetum.commands._common import (
    StopSignals,
    close_sinks,
    load_config_or_exit,
    open_sinks_or_exit,
    print_result,
)
from tapetum.errors import InputError
from tapetum.records import Alert
from tapetum.sources.base import RecordBatch

#: Longest pause between two polls of a followed input (batches reach the pipeline at least
#: this often when data is arriving).
POLL_S = 0.1


def _options(f: Callable[..., Any]) -> Callable[..., Any]:
    from tapetum.cli import output_options

    f = click.option(
        "--max-seconds",
        type=float,
        default=None,
        help="With --follow: stop after this many seconds (for tests).",
    )(f)
    f = click.option(
        "--follow",
        is_flag=True,
        help="Follow the input as it grows (and rotates) until SIGINT/SIGTERM.",
    )(f)
    return output_options(
        "DuckDB file to store flows, metadata, alerts and incidents in.",
        jsonl_help="Also write EVE-shaped JSON lines to this file ('-' for stdout).",
    )(f)


@click.group()
def ingest() -> None:
    """Ingest other sensors' logs: Zeek (TSV/JSON) and Suricata EVE (file or Redis)."""


@ingest.command("zeek")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@_options
def zeek(path: Path, **opts: Any) -> None:
    """Zeek logs: one log file or a folder of logs (conn, dns, ssl, x509, http, ssh, notice)."""
    from tapetum.sources.zeek import ZeekFollower, ZeekSource

    if opts.pop("follow"):
        _run(str(path), lambda: ZeekFollower(str(path)), follow=True, **opts)
    else:
        _run(str(path), lambda: ZeekSource(str(path)), follow=False, **opts)


@ingest.command("eve")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--redis", "redis_url", help="Read from Redis instead, e.g. redis://127.0.0.1:6379/0."
)
@click.option(
    "--key",
    default="suricata",
    show_default=True,
    help="Redis list or channel name (Suricata's redis output `key`).",
)
@click.option(
    "--mode",
    type=click.Choice(["list", "channel"]),
    default="list",
    show_default=True,
    help="Redis list (LPUSH by Suricata) or pub/sub channel.",
)
@_options
def eve(path: Path | None, redis_url: str | None, key: str, mode: str, **opts: Any) -> None:
    """Suricata EVE JSON: a file (with --follow as it grows) or a Redis list/channel."""
    from tapetum.sources.eve import EveFollower, EveSource, RedisEve

    follow = opts.pop("follow")
    if redis_url is not None:
        if path is not None:
            raise click.UsageError("give an EVE file or --redis, not both")
        try:
            import redis  # noqa: F401 - an optional dependency
        except ImportError:
            raise click.UsageError("--redis needs redis-py: pip install 'tapetum[redis]'") from None
        _run(f"{redis_url}#{key}", lambda: RedisEve(redis_url, key, mode), follow=True, **opts)
        return
    if path is None:
        raise click.UsageError("give an EVE file or --redis URL")
    if not path.exists():
        raise click.UsageError(f"{path}: no such file")
    if follow:
        _run(str(path), lambda: EveFollower(str(path)), follow=True, **opts)
    else:
        _run(str(path), lambda: EveSource(str(path)), follow=False, **opts)


def _run(
    name: str,
    make_source: Callable[[], Any],
    *,
    follow: bool,
    store: Path,
    no_store: bool,
    jsonl_path: Path | None,
    as_json: bool,
    config_path: Path | None,
    max_seconds: float | None,
) -> None:
    from tapetum.cli import EXIT_NO_INPUT
    from tapetum.pipeline import FileReport, Pipeline, run_id_for

    err = Console(stderr=True, soft_wrap=True, highlight=False)
    config = load_config_or_exit(config_path, err)
    run_id = run_id_for([name], config)
    if follow:  # a followed input is a new run each time it is started
        run_id = run_id_for([name, dt.datetime.now(dt.UTC).isoformat()], config)
    sinks, db = open_sinks_or_exit(
        err, config, store, no_store=no_store, jsonl_path=jsonl_path, run_id=run_id, inputs=[name]
    )

    pipe = Pipeline(config, sinks)
    rep = FileReport(path=name)
    pipe.summary.files.append(rep)
    shown = 0

    def handle(rb: RecordBatch | None) -> None:
        nonlocal shown
        if rb is None:
            return
        pipe.process_records(rb)
        if follow:
            for sink in sinks:
                sink.flush()
            alerts = pipe.summary.alerts
            for a in alerts[shown:]:
                err.print(_alert_line(a))
            shown = len(alerts)

    source: Any = None
    try:
        source = make_source()
        rep.format = source.format
        if not follow:
            for rb in source:
                handle(rb)
        else:
            deadline = time.monotonic() + max_seconds if max_seconds else float("inf")
            with StopSignals() as stopper:
                while not stopper.requested and time.monotonic() < deadline:
                    t0 = time.monotonic()
                    rb = source.poll()
                    handle(rb)
                    if hasattr(source, "ack") and rb is not None:
                        source.ack()  # handed on and flushed: Redis may forget it
                    left = POLL_S - (time.monotonic() - t0)
                    if rb is None and left > 0 and not source.format.endswith("redis"):
                        time.sleep(left)
                if hasattr(source, "finish"):
                    handle(source.finish())
    except InputError as exc:
        rep.error = str(exc)
    finally:
        if source is not None:
            source.close()
            rep.warnings = [str(w) for w in source.warnings]
            rep.counters = _flat(source)
    summary = pipe.finish()
    close_sinks(sinks, db, summary, err)
    if rep.error:
        err.print(f"[red]error:[/red] {rep.error}")
    for w in rep.warnings:
        err.print(f"[yellow]warning:[/yellow] {w}")
    print_result(summary, as_json=as_json, store=None if no_store else store)
    if rep.error:
        sys.exit(EXIT_NO_INPUT)


def _flat(source: Any) -> dict[str, int]:
    """The source's counts as one flat name -> int map (the file report's counters)."""
    c = source.counters
    out: dict[str, int] = {}
    for k, v in c.as_dict().items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                out[f"{k}.{kk}"] = int(vv)
        else:
            out[k] = int(v)
    for k, v in getattr(source, "stats", {}).items():
        out[f"redis.{k}"] = int(v)
    tail = getattr(source, "tailer", None)
    if tail is not None:
        for k in ("lines", "rotations", "truncations", "long_lines", "partial_lines"):
            out[f"follow.{k}"] = int(getattr(tail.counters, k))
    return out


def _alert_line(a: Alert) -> str:
    from tapetum.sinks.eve import ts_text

    sev = {1: "red", 2: "yellow"}.get(a.severity, "cyan")
    return (
        f"[{sev}]alert[/{sev}] {ts_text(a.ts_ns)} {escape(a.signature)} "
        f"[bold]{escape(a.entity)}[/bold]: {escape(a.explanation)}"
    )
