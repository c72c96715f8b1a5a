"""`tapetum serve`: the dashboard and REST API; `tapetum token create|list|revoke`: its tokens."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import duckdb
from rich.console import Console
from rich.table import Table

from tapetum.errors import ConfigError, StoreError

EXIT_USAGE = 2
EXIT_STORE = 4
EXIT_CONFIG = 5


def _store_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--store",
        type=click.Path(dir_okay=False, path_type=Path),
        default="tapetum.duckdb",
        show_default=True,
        help="DuckDB store written by `tapetum analyze`.",
    )(f)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, "localhost")."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _open(store: Path) -> duckdb.DuckDBPyConnection:
    from tapetum.sinks.duckdb import connect

    if not store.exists():
        raise StoreError(f"{store}: no such store; run `tapetum analyze --store {store}` first")
    return connect(store)


@click.command(name="serve")
@_store_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML configuration (response playbooks shown for incidents, detector settings).",
)
def serve(store: Path, host: str, port: int, config_path: Path | None) -> None:
    """Serve the dashboard and the REST API (OpenAPI at /openapi.json) for a store.

    Every page's data and every /api route except /api/health needs a token from
    `tapetum token create`. Listening on a non-loopback address is refused until one exists.
    """
    import uvicorn

    from tapetum.config import load_config
    from tapetum.web import tokens
    from tapetum.web.app import create_app

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_CONFIG)
    try:
        con = _open(store)
        try:
            n = tokens.active_count(con)
        finally:
            con.close()
    except StoreError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_STORE)
    if not is_loopback(host) and n == 0:
        err.print(
            f"[red]error:[/red] refusing to listen on {host} (not loopback) without an API token; "
            f"create one with `tapetum token create --store {store}`"
        )
        sys.exit(EXIT_USAGE)
    if n == 0:
        err.print(
            f"[yellow]no API token yet: create one with `tapetum token create --store {store}`"
        )
    err.print(f"Tapetum dashboard on http://{host}:{port}/ (store {store})")
    uvicorn.run(create_app(store, cfg), host=host, port=port, log_level="warning")


@click.group(name="token")
def token() -> None:
    """API tokens for `tapetum serve` (kept in the store as SHA-256 hashes)."""


@token.command(name="create")
@_store_option
@click.option("--name", default="", help="What the token is for (shown by `token list`).")
def token_create(store: Path, name: str) -> None:
    """Create a token and print it once (it cannot be shown again)."""
    from tapetum.web import tokens

    try:
        con = _open(store)
        try:
            token_id, secret = tokens.create_token(con, name)
        finally:
            con.close()
    except StoreError as exc:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_STORE)
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"token {token_id} created; it is shown only now:", style="dim"
    )
    click.echo(secret)


@token.command(name="list")
@_store_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def token_list(store: Path, as_json: bool) -> None:
    """List tokens (ids and names, never the tokens)."""
    from tapetum.web import tokens

    try:
        con = _open(store)
        try:
            rows = tokens.list_tokens(con)
        finally:
            con.close()
    except StoreError as exc:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_STORE)
    if as_json:
        click.echo(json.dumps(rows))
        return

    def when(ns: int | None) -> str:
        if ns is None:
            return ""
        return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")

    t = Table("id", "name", "created (UTC)", "revoked (UTC)")
    for r in rows:
        t.add_row(r["token_id"], r["name"] or "", when(r["created_ns"]), when(r["revoked_ns"]))
    Console().print(t)


@token.command(name="revoke")
@_store_option
@click.argument("token_id")
def token_revoke(store: Path, token_id: str) -> None:
    """Revoke a token by id (takes effect on the next request)."""
    from tapetum.web import tokens

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        con = _open(store)
        try:
            done = tokens.revoke_token(con, token_id)
        finally:
            con.close()
    except StoreError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_STORE)
    if not done:
        err.print(f"[red]error:[/red] no active token {token_id!r}")
        sys.exit(1)
    err.print(f"token {token_id} revoked")
