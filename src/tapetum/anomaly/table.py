"""Numeric flow-feature tables from CSV files (CICFlowMeter style and similar).

Excluded from the features, by normalised column name (case, spaces and punctuation ignored):
- row and flow identifiers (`id`, `Flow ID`): unique per row, they describe no behaviour;
- addresses (`Src IP`, `Dst IP`, `Source IP`, `Destination IP`): they identify the hosts of one
  testbed; a model would learn the testbed, and attacker addresses leak the label;
- ports (`Src Port`, `Dst Port`, …): nominal numbers, not magnitudes (8080 is not "more" than
  443); the source port is ephemeral noise and the destination port names the attacked service,
  a shortcut specific to the data set (FTP-Patator is port 21);
- `Timestamp`: when, not what; with a split by time it would separate train from test by itself;
- the label column and label metadata (`Attempted Category` in the improved CIC-IDS2017).
Any other column whose values are mostly not numbers is excluded as non-numeric (reported).
A value that does not parse in a numeric column is reported with file:line and becomes NaN;
inf and -inf ("Infinity" in CICFlowMeter output) are kept and handled by the models' scaler.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IDENTIFIER_COLUMNS = {
    "id": "row identifier",
    "flowid": "flow identifier",
    "srcip": "address (identifies testbed hosts)",
    "dstip": "address (identifies testbed hosts)",
    "sourceip": "address (identifies testbed hosts)",
    "destinationip": "address (identifies testbed hosts)",
    "srcport": "port (nominal; ephemeral)",
    "dstport": "port (nominal; names the service)",
    "sourceport": "port (nominal; ephemeral)",
    "destinationport": "port (nominal; names the service)",
    "timestamp": "time of the flow, not its behaviour",
    "attemptedcategory": "label metadata",
}
#: Report at most this many unparsable cells per column.
MAX_REPORTED = 3


def normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass
class FeatureTable:
    names: list[str]
    x: np.ndarray
    labels: list[str]
    time: list[str]
    files: list[str]
    excluded: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, idx: np.ndarray) -> FeatureTable:
        lst = idx.tolist()
        return FeatureTable(
            self.names, self.x[idx], [self.labels[i] for i in lst], [self.time[i] for i in lst],
            [self.files[i] for i in lst], dict(self.excluded), list(self.warnings),
        )  # fmt: skip


def csv_files(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given; a directory stands for its *.csv files (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.glob("*.csv") if q.is_file()))
        else:
            out.append(p)
    return out


def _parse_column(
    values: list[str], path: Path, lines: list[int], name: str, warnings: list[str]
) -> np.ndarray | None:
    """Floats, or None when most non-empty values are not numbers."""
    try:
        return np.array(values, dtype=np.float64)
    except ValueError:
        pass
    out = np.empty(len(values))
    bad: list[int] = []
    for k, v in enumerate(values):
        try:
            out[k] = float(v)
        except ValueError:
            out[k] = np.nan
            bad.append(k)
    filled = sum(1 for v in values if v.strip())
    if filled and len(bad) > filled / 2:
        return None
    shown = ", ".join(f"{path}:{lines[k]}: {values[k]!r}" for k in bad[:MAX_REPORTED])
    more = f" (and {len(bad) - MAX_REPORTED} more)" if len(bad) > MAX_REPORTED else ""
    warnings.append(f"column {name!r}: {len(bad)} unparsable value(s) read as NaN: {shown}{more}")
    return out


def read_table(
    paths: Sequence[str | Path],
    label_column: str,
    *,
    features: Sequence[str] | None = None,
    time_column: str = "Timestamp",
) -> FeatureTable:
    """Rows of all these CSV files. With `features` given (the training table's), the same
    columns in that order are read, and a file that lacks one is an error."""
    files = csv_files(paths)
    if not files:
        raise ValueError(f"no CSV files in {', '.join(map(str, paths))}")
    parts: list[np.ndarray] = []
    labels: list[str] = []
    times: list[str] = []
    origin: list[str] = []
    excluded: dict[str, str] = {}
    warnings: list[str] = []
    names: list[str] | None = list(features) if features is not None else None
    for path in files:
        try:
            fh = open(path, newline="", encoding="utf-8", errors="replace")  # noqa: SIM115
        except OSError as exc:
            raise ValueError(f"{path}: {exc.strerror}") from None
        with fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            rows: list[list[str]] = []
            lines: list[int] = []
            for r in reader:
                if not r:
                    continue
                if len(r) != len(header):
                    warnings.append(
                        f"{path}:{reader.line_num}: {len(r)} fields, header has {len(header)}; "
                        "row skipped"
                    )
                    continue
                rows.append(r)
                lines.append(reader.line_num)
        if label_column not in header:
            raise ValueError(f"{path}: no label column {label_column!r}")
        index = {h: k for k, h in enumerate(header)}
        cols = list(zip(*rows, strict=True)) if rows else [() for _ in header]
        fixed = names is not None  # columns already chosen (training table or an earlier file)
        if names is None:
            names = []
            for h in header:
                key = normalise(h)
                if h == label_column:
                    excluded[h] = "label"
                elif key in IDENTIFIER_COLUMNS:
                    excluded[h] = IDENTIFIER_COLUMNS[key]
                else:
                    names.append(h)
        missing = [n for n in names if n not in index]
        if missing:
            raise ValueError(f"{path}: missing feature column(s) {', '.join(missing[:5])}")
        mat = np.empty((len(rows), len(names)))
        keep = np.ones(len(names), dtype=bool)
        for j, n in enumerate(names):
            col = _parse_column(list(cols[index[n]]), path, lines, n, warnings)
            if col is None:
                if fixed:
                    raise ValueError(f"{path}: feature column {n!r} is not numeric here")
                keep[j] = False
                excluded[n] = "not numeric"
                continue
            mat[:, j] = col
        if not keep.all():
            names = [n for n, k in zip(names, keep.tolist(), strict=True) if k]
            mat = mat[:, keep]
        parts.append(mat)
        labels.extend(str(v).strip() for v in cols[index[label_column]])
        t = index.get(time_column)
        times.extend(cols[t] if t is not None else [""] * len(rows))
        origin.extend([str(path)] * len(rows))
    assert names is not None
    x = np.concatenate(parts) if parts else np.zeros((0, len(names)))
    return FeatureTable(names, x, labels, [str(v) for v in times], origin, excluded, warnings)
