"""Indicators in the DuckDB store: table `intel`, one row per (type, value, source).

Importing a file is one transaction: all its good indicators, or nothing. Re-importing an
indicator of the same source merges it with the stored one (longest validity, highest
confidence; `merges` counts how often) and keeps its `first_imported`.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from tapetum.errors import StoreError
from tapetum.intel.indicators import Indicator, merge

SCHEMA = """
CREATE TABLE IF NOT EXISTS intel (
    type VARCHAR, value VARCHAR, source VARCHAR, confidence INTEGER,
    valid_from TIMESTAMP_NS, valid_until TIMESTAMP_NS, name VARCHAR, description VARCHAR,
    labels VARCHAR[], stix_id VARCHAR, techniques VARCHAR[], tactics VARCHAR[],
    first_imported TIMESTAMP_NS, last_imported TIMESTAMP_NS, merges INTEGER,
    PRIMARY KEY (type, value, source)
);
"""
_COLUMNS = (
    "type", "value", "source", "confidence", "valid_from", "valid_until", "name", "description",
    "labels", "stix_id", "techniques", "tactics", "first_imported", "last_imported", "merges",
)  # fmt: skip
_SELECT = (
    "SELECT type, value, source, confidence, epoch_ns(valid_from), epoch_ns(valid_until), "
    "name, description, labels, stix_id, techniques, tactics, epoch_ns(first_imported), merges "
    "FROM intel"
)
_NAT = np.iinfo(np.int64).min


def connect(path: str | Path, *, create: bool = True) -> duckdb.DuckDBPyConnection:
    """A connection to the store; shares the process's open instance when `analyze` already
    has the file open for writing (DuckDB refuses a second one with other settings)."""
    p = Path(path)
    if not create and not p.exists():
        raise StoreError(f"{p}: no such store")
    try:
        con = duckdb.connect(str(p))
        con.execute(SCHEMA)
    except (duckdb.Error, OSError) as exc:
        raise StoreError(f"{p}: cannot open the store: {exc}") from None
    return con


def _obj(values: list[Any]) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def _ts(values: list[int | None]) -> np.ndarray:
    return np.array([_NAT if v is None else v for v in values], dtype=np.int64).view(
        "datetime64[ns]"
    )


def _row(r: tuple[Any, ...]) -> Indicator:
    return Indicator(
        type=r[0],
        value=r[1],
        source=r[2],
        confidence=int(r[3]),
        valid_from_ns=r[4],
        valid_until_ns=r[5],
        name=r[6] or "",
        description=r[7] or "",
        labels=tuple(r[8] or ()),
        stix_id=r[9],
        techniques=tuple(r[10] or ()),
        tactics=tuple(r[11] or ()),
        first_imported_ns=r[12],
        merges=int(r[13] or 0),
    )


def load(con: duckdb.DuckDBPyConnection, type_: str | None = None) -> list[Indicator]:
    sql = _SELECT + (" WHERE type = ?" if type_ else "") + " ORDER BY type, value, source"
    return [_row(r) for r in con.execute(sql, [type_] if type_ else []).fetchall()]


def load_path(path: str | Path) -> list[Indicator]:
    """All indicators of a store; none when the file or its `intel` table does not exist.
    Nothing is written: read-only, unless `analyze` has the file open for writing already
    (DuckDB then only allows a connection with the same settings)."""
    p = Path(path)
    if not p.exists():
        return []
    try:
        try:
            con = duckdb.connect(str(p), read_only=True)
        except duckdb.ConnectionException:
            con = duckdb.connect(str(p))
        try:
            row = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'intel'"
            ).fetchone()
            return load(con) if row and row[0] else []
        finally:
            con.close()
    except (duckdb.Error, OSError) as exc:
        raise StoreError(f"{p}: cannot read indicators: {exc}") from None


def save(
    con: duckdb.DuckDBPyConnection, indicators: list[Indicator], now_ns: int | None = None
) -> tuple[int, int]:
    """Insert or merge `indicators` in one transaction; (new rows, merged into stored rows)."""
    now_ns = now_ns if now_ns is not None else time_ns()
    if not indicators:
        return 0, 0
    con.execute("BEGIN TRANSACTION")
    try:
        con.register(
            "_intel_keys",
            {
                "type": _obj([i.type for i in indicators]),
                "value": _obj([i.value for i in indicators]),
                "source": _obj([i.source for i in indicators]),
            },
        )
        stored = {
            ind.key: ind
            for ind in (
                _row(r)
                for r in con.execute(
                    _SELECT + " JOIN _intel_keys USING (type, value, source)"
                ).fetchall()
            )
        }
        con.unregister("_intel_keys")
        rows: list[Indicator] = []
        merged = 0
        for ind in indicators:
            old = stored.get(ind.key)
            if old is None:
                rows.append(_with_first(ind, now_ns))
            else:
                rows.append(merge(old, ind))
                merged += 1
        frame = {
            "type": _obj([i.type for i in rows]),
            "value": _obj([i.value for i in rows]),
            "source": _obj([i.source for i in rows]),
            "confidence": np.array([i.confidence for i in rows], dtype=np.int32),
            "valid_from": _ts([i.valid_from_ns for i in rows]),
            "valid_until": _ts([i.valid_until_ns for i in rows]),
            "name": _obj([i.name for i in rows]),
            "description": _obj([i.description for i in rows]),
            "labels": _obj([list(i.labels) for i in rows]),
            "stix_id": _obj([i.stix_id for i in rows]),
            "techniques": _obj([list(i.techniques) for i in rows]),
            "tactics": _obj([list(i.tactics) for i in rows]),
            "first_imported": _ts([i.first_imported_ns for i in rows]),
            "last_imported": _ts([now_ns] * len(rows)),
            "merges": np.array([i.merges for i in rows], dtype=np.int32),
        }
        names = ", ".join(_COLUMNS)
        con.register("_intel_batch", frame)
        con.execute(f"INSERT OR REPLACE INTO intel ({names}) SELECT {names} FROM _intel_batch")
        con.unregister("_intel_batch")
        con.execute("COMMIT")
    except duckdb.Error as exc:
        con.execute("ROLLBACK")
        raise StoreError(f"cannot store the indicators: {exc}") from None
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return len(rows) - merged, merged


def _with_first(ind: Indicator, now_ns: int) -> Indicator:
    if ind.first_imported_ns is not None:
        return ind
    import msgspec

    return msgspec.structs.replace(ind, first_imported_ns=now_ns)


def remove_source(con: duckdb.DuckDBPyConnection, source: str) -> int:
    row = con.execute("SELECT count(*) FROM intel WHERE source = ?", [source]).fetchone()
    n = int(row[0]) if row else 0
    con.execute("DELETE FROM intel WHERE source = ?", [source])
    return n


def counts(con: duckdb.DuckDBPyConnection) -> dict[str, Counter[str]]:
    """Indicators by type and by source."""
    by_type: Counter[str] = Counter()
    by_source: Counter[str] = Counter()
    for t, s, n in con.execute(
        "SELECT type, source, count(*) FROM intel GROUP BY type, source"
    ).fetchall():
        by_type[t] += int(n)
        by_source[s] += int(n)
    return {"type": by_type, "source": by_source}


def time_ns() -> int:
    """Wall-clock now: only for `first_imported` (an import is not data)."""
    return int(dt.datetime.now(dt.UTC).timestamp() * 1e9)
