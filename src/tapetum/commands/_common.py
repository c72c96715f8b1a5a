"""What the pipeline commands (`analyze`, `collect`, `ingest`, `watch`, `learn`) share: the
config loaded or exit 5, the intel store defaulting to the DuckDB store, the DuckDB and JSON
lines sinks opened (and closed) as `analyze` does it, the summary printed, the per-file progress
bar, and SIGINT/SIGTERM asking a loop to stop.

`tapetum.cli` is imported inside the functions only: it imports the command modules itself.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from tapetum.config import Config
from tapetum.errors import ConfigError, StoreError
from tapetum.sinks.base import Sink

if TYPE_CHECKING:
    from tapetum.sinks.duckdb import DuckDBSink


class StopSignals:
    """SIGINT/SIGTERM set `requested`; the loop ends at its next check and flushes everything
    (the previous handlers are restored on exit)."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def load_config_or_exit(config_path: Path | None, err: Console) -> Config:
    """The configuration (defaults without a file); a bad one is reported and exits 5."""
    from tapetum.cli import EXIT_CONFIG
    from tapetum.config import load_config

    try:
        return load_config(config_path)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_CONFIG)


def default_intel_store(config: Config, store: Path | None) -> None:
    """Indicators from `tapetum intel import` are looked up in the store unless configured."""
    if config.detectors.intel.store is None and store is not None and store.exists():
        config.detectors.intel.store = str(store)


def open_sinks(
    config: Config, *, store: Path | None, jsonl_path: Path | None, run_id: str, inputs: list[str]
) -> tuple[list[Sink], DuckDBSink | None]:
    """The DuckDB store (its run begun, rows of the same run id replaced) and JSON lines
    ('-' is standard output), as `analyze` writes them. Returns (sinks, the store or None)."""
    from tapetum import __version__
    from tapetum.cli import _replace_run
    from tapetum.registry import SINKS
    from tapetum.sinks.duckdb import DuckDBSink

    sinks: list[Sink] = []
    db: DuckDBSink | None = None
    if store is not None:
        made = SINKS["duckdb"](store, config, run_id=run_id)
        assert isinstance(made, DuckDBSink)
        db = made
        _replace_run(db, run_id)
        db.begin_run(dt.datetime.now(dt.UTC).replace(tzinfo=None), inputs, __version__)
        sinks.append(db)
    if jsonl_path is not None:
        out = sys.stdout.buffer if str(jsonl_path) == "-" else jsonl_path
        sinks.append(SINKS["jsonl"](out, config, run_id=run_id))
    return sinks, db


def open_sinks_or_exit(
    err: Console,
    config: Config,
    store: Path,
    *,
    no_store: bool,
    jsonl_path: Path | None,
    run_id: str,
    inputs: list[str],
) -> tuple[list[Sink], DuckDBSink | None]:
    """`default_intel_store` then `open_sinks` (no store with `no_store`); a store or JSON lines
    file that cannot be opened is reported and exits 4."""
    from tapetum.cli import EXIT_STORE

    default_intel_store(config, store)
    try:
        return open_sinks(
            config,
            store=None if no_store else store,
            jsonl_path=jsonl_path,
            run_id=run_id,
            inputs=inputs,
        )
    except StoreError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_STORE)
    except OSError as exc:
        err.print(f"[red]error:[/red] {jsonl_path}: {exc.strerror}")
        sys.exit(EXIT_STORE)


def close_sinks(sinks: list[Sink], db: DuckDBSink | None, summary: Any, err: Console) -> None:
    """The store's run ended with the summary, every sink closed and its warnings printed."""
    for sink in sinks:
        if db is sink:
            db.end_run(summary.to_dict())
        sink.close()
        for w in getattr(sink, "warnings", list)():
            err.print(f"[yellow]warning:[/yellow] {w}")


def print_result(summary: Any, *, as_json: bool, store: Path | None) -> None:
    """The summary as JSON, or for people (with where it is stored)."""
    from tapetum.cli import _print_summary

    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        _print_summary(Console(), summary, store)


ProgressCallback = Callable[[str, int, int, int], None]


def file_progress(
    err: Console, *, disable: bool, description: str
) -> tuple[Progress, ProgressCallback, dict[str, Any]]:
    """A progress bar per input file on standard error: (the bar, the `Pipeline.run_file`
    callback, the task of each path)."""
    progress = Progress(
        TextColumn("[bold]{task.fields[name]}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[packets]:,} packets"),
        TimeRemainingColumn(),
        console=err,
        disable=disable,
        transient=False,
    )
    tasks: dict[str, Any] = {}

    def on_progress(path: str, done: int, total: int, packets: int) -> None:
        if path not in tasks:
            tasks[path] = progress.add_task(
                description, total=total, name=Path(path).name, packets=0
            )
        t = tasks[path]
        progress.update(t, completed=done, packets=progress.tasks[t].fields["packets"] + packets)

    return progress, on_progress, tasks
