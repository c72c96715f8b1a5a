"""Read side of the store, for the CLI and (later) the web UI: queries only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from tapetum.errors import StoreError
from tapetum.sinks.duckdb import connect


def run_query(store: str | Path, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one SQL statement read-only; return column names and rows."""
    con = connect(store, read_only=True)
    try:
        cur = con.execute(query)
        names = [d[0] for d in (cur.description or [])]
        rows = cur.fetchall() if cur.description else []
    except duckdb.Error as exc:
        raise StoreError(f"{store}: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
    return names, rows
