"""The response tables in the DuckDB store: `actions` (one row per action; only its state and
expiry change) and `audit` (append-only: who did what, when, with what result).

Created with CREATE TABLE IF NOT EXISTS on first use, so any store written by `tapetum analyze`
(or a new file) works. Every value goes in as a `?` parameter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import msgspec

from tapetum.errors import StoreError
from tapetum.response.actions import Action
from tapetum.sinks.duckdb import connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS actions (
    action_id VARCHAR PRIMARY KEY, kind VARCHAR, target VARCHAR, params JSON, mode VARCHAR,
    state VARCHAR, ttl_s DOUBLE, created_ns BIGINT, expires_ns BIGINT, incident_id VARCHAR,
    playbook VARCHAR, reason VARCHAR, updated_ns BIGINT
);
CREATE SEQUENCE IF NOT EXISTS audit_seq;
CREATE TABLE IF NOT EXISTS audit (
    audit_id BIGINT DEFAULT nextval('audit_seq'), ts_ns BIGINT, action_id VARCHAR,
    actor VARCHAR, event VARCHAR, result VARCHAR, detail VARCHAR
);
"""

_COLS = (
    "action_id, kind, target, params, mode, state, ttl_s, created_ns, expires_ns, "
    "incident_id, playbook, reason"
)

Store = str | Path | duckdb.DuckDBPyConnection


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    audit_id: int
    ts_ns: int
    action_id: str
    #: Who: "pipeline", "cli", an analyst's name, "expiry".
    actor: str
    #: What: planned, refused, dry-run, queued, approved, applied, failed, reverted, expired.
    event: str
    #: ok, error, refused or dry-run.
    result: str
    detail: str


@contextmanager
def opened(store: Store) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection with the response tables; closed afterwards if it was opened here."""
    own = not isinstance(store, duckdb.DuckDBPyConnection)
    con = connect(store) if not isinstance(store, duckdb.DuckDBPyConnection) else store
    try:
        con.execute(SCHEMA)
        yield con
    except duckdb.Error as exc:
        raise StoreError(f"response tables: {str(exc).splitlines()[0]}") from None
    finally:
        if own:
            con.close()


def _row(r: tuple[Any, ...]) -> Action:
    return Action(
        action_id=r[0],
        kind=r[1],
        target=r[2],
        params=json.loads(r[3]) if r[3] else {},
        mode=r[4],
        state=r[5],
        ttl_s=float(r[6]),
        created_ns=int(r[7]),
        expires_ns=int(r[8]),
        incident_id=r[9] or "",
        playbook=r[10] or "",
        reason=r[11] or "",
    )


def insert(con: duckdb.DuckDBPyConnection, action: Action, now_ns: int) -> bool:
    """Insert a new action; False if its id is already stored (a re-run plans the same ids)."""
    if con.execute("SELECT 1 FROM actions WHERE action_id = ?", [action.action_id]).fetchone():
        return False
    con.execute(
        f"INSERT INTO actions ({_COLS}, updated_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            action.action_id,
            action.kind,
            action.target,
            json.dumps(action.params),
            action.mode,
            action.state,
            action.ttl_s,
            action.created_ns,
            action.expires_ns,
            action.incident_id,
            action.playbook,
            action.reason,
            now_ns,
        ],
    )
    return True


def set_state(con: duckdb.DuckDBPyConnection, action: Action, now_ns: int) -> None:
    """The one in-place update: an action's state (and its expiry, which starts when applied)."""
    con.execute(
        "UPDATE actions SET state = ?, created_ns = ?, expires_ns = ?, updated_ns = ? "
        "WHERE action_id = ?",
        [action.state, action.created_ns, action.expires_ns, now_ns, action.action_id],
    )


def audit(
    con: duckdb.DuckDBPyConnection,
    action_id: str,
    *,
    actor: str,
    event: str,
    result: str,
    detail: str,
    now_ns: int,
) -> None:
    con.execute(
        "INSERT INTO audit (ts_ns, action_id, actor, event, result, detail) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [now_ns, action_id, actor, event, result, detail],
    )


def get(con: duckdb.DuckDBPyConnection, action_id: str) -> Action | None:
    r = con.execute(f"SELECT {_COLS} FROM actions WHERE action_id = ?", [action_id]).fetchone()
    return None if r is None else _row(r)


def select(
    con: duckdb.DuckDBPyConnection,
    *,
    state: str | None = None,
    incident_id: str | None = None,
    due_before_ns: int | None = None,
) -> list[Action]:
    where: list[str] = []
    args: list[Any] = []
    if state is not None:
        where.append("state = ?")
        args.append(state)
    if incident_id is not None:
        where.append("incident_id = ?")
        args.append(incident_id)
    if due_before_ns is not None:
        where.append("expires_ns <= ?")
        args.append(due_before_ns)
    sql = f"SELECT {_COLS} FROM actions"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = con.execute(sql + " ORDER BY created_ns, action_id", args).fetchall()
    return [_row(r) for r in rows]


def entries(con: duckdb.DuckDBPyConnection, action_id: str | None = None) -> list[AuditEntry]:
    sql = "SELECT audit_id, ts_ns, action_id, actor, event, result, detail FROM audit"
    args: list[Any] = []
    if action_id is not None:
        sql += " WHERE action_id = ?"
        args.append(action_id)
    rows = con.execute(sql + " ORDER BY audit_id", args).fetchall()
    return [
        AuditEntry(
            audit_id=int(r[0]),
            ts_ns=int(r[1]),
            action_id=r[2],
            actor=r[3],
            event=r[4],
            result=r[5],
            detail=r[6],
        )
        for r in rows
    ]
