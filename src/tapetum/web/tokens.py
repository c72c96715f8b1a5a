"""API tokens: created once (printed, never stored in clear), kept as SHA-256 hashes in the
store's `api_tokens` table, revoked by id.

A token is 32 random bytes (url-safe base64) behind a "tpt_" prefix; SHA-256 without a salt is
enough for such high-entropy secrets (nothing to brute-force), and lets a request be checked with
one indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

import duckdb

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_tokens (
    token_id VARCHAR PRIMARY KEY, name VARCHAR, sha256 VARCHAR UNIQUE, created_ns BIGINT,
    revoked_ns BIGINT, last_used_ns BIGINT
);
"""
PREFIX = "tpt_"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def ensure_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(SCHEMA)


def create_token(con: duckdb.DuckDBPyConnection, name: str = "") -> tuple[str, str]:
    """A new token: (token_id, token). The token itself is shown once and not kept."""
    ensure_table(con)
    token = PREFIX + secrets.token_urlsafe(32)
    token_id = secrets.token_hex(4)
    con.execute(
        "INSERT INTO api_tokens VALUES (?, ?, ?, ?, NULL, NULL)",
        [token_id, name, digest(token), time.time_ns()],
    )
    return token_id, token


def list_tokens(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    ensure_table(con)
    cur = con.execute(
        "SELECT token_id, name, created_ns, revoked_ns, last_used_ns FROM api_tokens "
        "ORDER BY created_ns"
    )
    names = [d[0] for d in cur.description or []]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def revoke_token(con: duckdb.DuckDBPyConnection, token_id: str) -> bool:
    """Revoke by id; False when no active token has that id."""
    ensure_table(con)
    row = con.execute(
        "UPDATE api_tokens SET revoked_ns = ? WHERE token_id = ? AND revoked_ns IS NULL "
        "RETURNING token_id",
        [time.time_ns(), token_id],
    ).fetchone()
    return row is not None


def active_count(con: duckdb.DuckDBPyConnection) -> int:
    ensure_table(con)
    row = con.execute("SELECT count(*) FROM api_tokens WHERE revoked_ns IS NULL").fetchone()
    return int(row[0]) if row else 0


def check_token(con: duckdb.DuckDBPyConnection, token: str) -> str | None:
    """The token's id when it is valid and not revoked, else None."""
    ensure_table(con)
    wanted = digest(token)
    row = con.execute(
        "SELECT token_id, sha256 FROM api_tokens WHERE sha256 = ? AND revoked_ns IS NULL",
        [wanted],
    ).fetchone()
    # The lookup is by hash, so timing reveals nothing about the token; compare anyway.
    if row is None or not secrets.compare_digest(str(row[1]), wanted):
        return None
    return str(row[0])
