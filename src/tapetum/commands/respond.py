"""`tapetum respond list|approve ID|revert ID|expire|audit`: the response actions in a store.

Exit codes as in `tapetum.cli`: 2 usage error (unknown action id, wrong state), 4 store error,
5 config error.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tapetum.cli import EXIT_CONFIG, EXIT_STORE, store_option
from tapetum.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from tapetum.config import Config
    from tapetum.records import Incident

EXIT_USAGE = 2


def _err() -> Console:
    return Console(stderr=True, soft_wrap=True, highlight=False)


def _when(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def respond_after_run(
    incidents: Sequence[Incident], config: Config, store: Path | None, *, to_stderr: bool = False
) -> None:
    """Run the playbooks on a finished run's incidents and print one line per new action
    ("would have blocked 10.0.0.66 for 1 h (dry-run)"). Called by `tapetum analyze`."""
    from tapetum.response import respond

    con = _err() if to_stderr else Console(soft_wrap=True, highlight=False)
    try:
        done = respond(incidents, config, store)
    except StoreError as exc:
        _err().print(f"[red]error:[/red] response: {exc}")
        return
    if done:
        con.print(f"[bold]Response[/bold]: {len(done)} action{'s' if len(done) != 1 else ''}")
    for action, message in done:
        # Messages carry incident text: escaped so it cannot inject console markup.
        tag = escape(f"[{action.action_id}, {action.playbook}]")
        con.print(f"  • {escape(message)} [dim]{tag}[/dim]")


def _config(path: Path | None) -> Config:
    from tapetum.config import load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        _err().print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_CONFIG)


def _need(store: Path) -> None:
    if not store.exists():
        _err().print(f"[red]error:[/red] {store}: no such store; run `tapetum analyze` first")
        sys.exit(EXIT_STORE)


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML configuration file (its [response] section: allowlist, nft, netns).",
)


@click.group(name="respond")
def respond_group() -> None:
    """Response actions planned by the playbooks: list, approve, revert, expire."""


@respond_group.command(name="list")
@store_option("DuckDB store written by `tapetum analyze`.")
@click.option("--state", help="Only actions in this state (e.g. pending-approval, applied).")
@click.option("--incident", "incident_id", help="Only actions for this incident.")
@click.option("--audit", "show_audit", is_flag=True, help="Show the audit log instead.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_command(
    store: Path, state: str | None, incident_id: str | None, show_audit: bool, as_json: bool
) -> None:
    """List actions (or the audit log) in the store."""
    from tapetum.response import audit_log, describe, list_actions

    _need(store)
    try:
        rows: Any = (
            audit_log(store)
            if show_audit
            else list_actions(store, state=state, incident_id=incident_id)
        )
    except StoreError as exc:
        _err().print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_STORE)
    if as_json:
        click.echo(json.dumps(msgspec.to_builtins(rows), indent=1))
        return
    if show_audit:
        t = Table("time (UTC)", "action", "who", "event", "result", "detail")
        for e in rows:
            t.add_row(_when(e.ts_ns), e.action_id, e.actor, e.event, e.result, e.detail)
    else:
        t = Table("action", "state", "mode", "what", "expires (UTC)", "incident", "playbook")
        for a in rows:
            t.add_row(
                a.action_id, a.state, a.mode, describe(a), _when(a.expires_ns),
                a.incident_id, a.playbook,
            )  # fmt: skip
    Console().print(t)


def _one(fn_name: str, store: Path, action_id: str, config_path: Path | None, analyst: str) -> None:
    from tapetum import response
    from tapetum.response import NotFound, ResponseError

    _need(store)
    config = _config(config_path)
    fn = getattr(response, fn_name)
    try:
        action, detail = fn(store, action_id, config, analyst=analyst)
    except (NotFound, ResponseError) as exc:
        _err().print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_USAGE)
    except StoreError as exc:
        _err().print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_STORE)
    click.echo(f"{action.action_id}: {action.state}: {detail}")
    if action.state == "failed":
        sys.exit(1)


@respond_group.command(name="approve")
@click.argument("action_id")
@store_option("DuckDB store written by `tapetum analyze`.")
@config_option
@click.option("--analyst", default="cli", show_default=True, help="Name recorded in the audit.")
def approve_command(store: Path, action_id: str, config_path: Path | None, analyst: str) -> None:
    """Apply an action waiting for approval (its TTL starts now)."""
    _one("approve", store, action_id, config_path, analyst)


@respond_group.command(name="revert")
@click.argument("action_id")
@store_option("DuckDB store written by `tapetum analyze`.")
@config_option
@click.option("--analyst", default="cli", show_default=True, help="Name recorded in the audit.")
def revert_command(store: Path, action_id: str, config_path: Path | None, analyst: str) -> None:
    """Revert an applied action now (or withdraw a queued one)."""
    _one("revert_stored", store, action_id, config_path, analyst)


@respond_group.command(name="expire")
@store_option("DuckDB store written by `tapetum analyze`.")
@config_option
def expire_command(store: Path, config_path: Path | None) -> None:
    """Revert every applied action whose TTL is over (run it from cron or a timer)."""
    from tapetum.response import expire_due

    _need(store)
    config = _config(config_path)
    try:
        done = expire_due(store, None, config)
    except StoreError as exc:
        _err().print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_STORE)
    for action, detail in done:
        click.echo(f"{action.action_id}: {action.state}: {detail}")
    click.echo(f"{len(done)} action(s) expired")
    if any(a.state == "failed" for a, _ in done):
        sys.exit(1)
