"""Row sets stored as columns: slotted dataclasses whose fields are equal-length numpy arrays
(indexed along their first axis) or Python lists (one item per row)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

R = TypeVar("R")


def take(rows: R, idx: np.ndarray | Sequence[int]) -> R:
    """The rows at `idx` (an index array or a boolean mask), in that order."""
    a = np.asarray(idx)
    ii = np.flatnonzero(a) if a.dtype == bool else a.astype(np.int64, copy=False)
    lst: list[int] | None = None
    cols: dict[str, Any] = {}
    for f in type(rows).__slots__:  # type: ignore[attr-defined]
        v = getattr(rows, f)
        if isinstance(v, list):
            lst = ii.tolist() if lst is None else lst
            cols[f] = [v[i] for i in lst]
        else:
            cols[f] = v[ii]
    return type(rows)(**cols)


def concat(cls: type[R], parts: Sequence[R]) -> R:
    """The rows of all parts, in order (at least one part; numpy columns only)."""
    fields = cls.__slots__  # type: ignore[attr-defined]
    return cls(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in fields})


def group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique rows of a 2-D key array: (first index of each group in key order, the group of
    every row)."""
    order = np.lexsort(keys.T[::-1])
    k = keys[order]
    new = np.ones(k.shape[0], dtype=bool)
    if k.shape[0] > 1:
        new[1:] = np.any(k[1:] != k[:-1], axis=1)
    gid_sorted = np.cumsum(new) - 1
    inv = np.empty_like(gid_sorted)
    inv[order] = gid_sorted
    return order[new], inv
