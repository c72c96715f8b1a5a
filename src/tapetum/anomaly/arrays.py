"""Arrays in safe formats: npz files (never pickled) and base64 blobs inside JSON states."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from tapetum.errors import ModelError

#: Dtypes a model may store; object arrays would need pickle and are refused.
SAFE_KINDS = "biuf"


def encode_array(a: np.ndarray) -> dict[str, Any]:
    """An array as a JSON-able dict (exact: raw little-endian bytes, base64)."""
    a = np.ascontiguousarray(a)
    if a.dtype.kind not in SAFE_KINDS:
        raise TypeError(f"cannot store arrays of dtype {a.dtype}")
    le = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return {
        "dtype": le.dtype.str,
        "shape": list(a.shape),
        "b64": base64.b64encode(le.tobytes()).decode("ascii"),
    }


def decode_array(d: Any, what: str = "array") -> np.ndarray:
    try:
        dtype = np.dtype(str(d["dtype"]))
        shape = tuple(int(x) for x in d["shape"])
        raw = base64.b64decode(str(d["b64"]), validate=True)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{what}: not an encoded array ({exc})") from None
    if dtype.kind not in SAFE_KINDS:
        raise ModelError(f"{what}: dtype {dtype} is not allowed")
    n = int(np.prod(shape)) if shape else 1
    if len(raw) != n * dtype.itemsize:
        raise ModelError(f"{what}: {len(raw)} bytes for shape {shape} {dtype} (truncated?)")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes: detects a truncated or altered model."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


META_KEY = "__meta_json__"


def save_npz(path: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Arrays plus JSON metadata (stored as UTF-8 bytes) in one uncompressed npz file."""
    meta = {**meta, "sha256": digest(arrays)}
    blob = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    for k, a in arrays.items():
        if np.asarray(a).dtype.kind not in SAFE_KINDS:
            raise TypeError(f"{k}: cannot store arrays of dtype {np.asarray(a).dtype}")
    with open(path, "wb") as fh:
        np.savez(fh, **{META_KEY: blob, **arrays})  # type: ignore[arg-type]


def load_npz(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and metadata saved by `save_npz`; ModelError if unreadable, truncated or altered."""
    try:
        if isinstance(path, str | Path):
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        else:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise ModelError(f"{path}: no such model file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{path}: not a readable model file (truncated?): {exc}") from None
    blob = arrays.pop(META_KEY, None)
    if blob is None:
        raise ModelError(f"{path}: no Tapetum model metadata in this npz file")
    try:
        meta = json.loads(blob.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: model metadata is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: model metadata is not a JSON object")
    if meta.get("sha256") != digest(arrays):
        raise ModelError(f"{path}: model arrays do not match their checksum (altered?)")
    return arrays, meta


def load_bytes(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """`load_npz` from bytes in memory."""
    return load_npz(io.BytesIO(data))  # type: ignore[arg-type]
