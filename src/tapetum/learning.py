"""Models: what the detectors learnt from a period taken as normal, saved and loaded.

`tapetum learn CAPTURE… --out MODEL_DIR` runs the pipeline over the captures with every chosen
detector learning (`learning_config`: the anomaly detector's warm-up covers the whole input;
kitsune trains after its grace periods and then learns only packets under its threshold; the
baselines of scan, brute force, exfiltration … learn from their non-alerting windows as always),
lets each finish (`finish_learning`) and saves their states (`save_model`). `tapetum analyze
--model MODEL_DIR` restores them (`load_model`) instead of starting cold; detectors keep learning
while analysing, and `--update-model` writes the result back.

A model directory holds, per detector, `NAME.json` (its `state()`, plain JSON) and, when the
state carries arrays, `NAME.npz` (the arrays, moved out of the JSON: base64 blobs in the state
become `{"npz_key": …}` references; npz is read without pickle), and `manifest.json`:
format and version, Tapetum version, config hash, per detector its state version and
feature-schema hash, the size and SHA-256 of every file, the input captures (name, size, SHA-256
of the first MiB), the data-time span and what was learnt (packets, flows). Loading checks all of
it and refuses — `ModelError` naming the file and the mismatch — a missing, truncated or edited
file, another format version, a detector whose state version or feature schema differs from this
Tapetum's. A different config is only a warning: each detector checks the parameters its state
depends on (e.g. the anomaly detector's window) in `from_state`.

Saving is atomic: the model is written to a temporary directory beside the target, which then
replaces it (the old one is moved aside first and removed last).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import math
import os
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from tapetum import __version__
from tapetum.config import Config
from tapetum.detectors.base import StreamingDetector
from tapetum.errors import ModelError
from tapetum.registry import DETECTORS, enabled_by_default

FORMAT = "tapetum-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_HEAD_BYTES = 1 << 20


def config_hash(cfg: Config) -> str:
    return hashlib.sha256(msgspec.json.encode(cfg)).hexdigest()[:16]


def feature_schema(state: dict[str, Any]) -> str:
    """Hash of the feature names a state was learnt on (`state["features"]`; none: "-")."""
    feats = state.get("features")
    if feats is None:
        return "-"
    return hashlib.sha256(json.dumps(feats, sort_keys=True).encode()).hexdigest()[:16]


def _sha256(path: Path, limit: int | None = None) -> str:
    h = hashlib.sha256()
    left = math.inf if limit is None else limit
    with open(path, "rb") as f:
        while left > 0:
            chunk = f.read(int(min(1 << 20, left)))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def input_record(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    return {"name": p.name, "path": str(p.resolve()), "bytes": p.stat().st_size,
            "sha256_first_mib": _sha256(p, _HEAD_BYTES)}  # fmt: skip


# -- learning -------------------------------------------------------------------------------


def learning_config(cfg: Config) -> Config:
    """The config a learning run uses: the anomaly detector's warm-up covers the whole input
    (everything in it is taken as normal); the rest learn as they do in analysis."""
    anomaly = msgspec.structs.replace(cfg.detectors.anomaly, warmup_s=math.inf)
    detectors = msgspec.structs.replace(cfg.detectors, anomaly=anomaly)
    return msgspec.structs.replace(cfg, detectors=detectors)


def learning_names(cfg: Config, names: Sequence[str] | None) -> list[str]:
    """The detectors a learning run builds: those named, else the default set of the config."""
    if names:
        unknown = [n for n in names if n not in DETECTORS]
        if unknown:
            from tapetum.errors import ConfigError

            raise ConfigError(
                f"unknown detector(s): {', '.join(unknown)}; known: {', '.join(DETECTORS)}"
            )
        return [n for n in DETECTORS if n in names]
    return [n for n in DETECTORS if enabled_by_default(cfg, n)]


def finish_learning(det: StreamingDetector) -> str | None:
    """End of a learning run: a detector still warming up fits what it has (`finish_learning()`
    where the detector defines it). Returns a note when it has too little to do so."""
    hook = getattr(det, "finish_learning", None)
    if callable(hook):
        hook()
        return None
    if det.name == "anomaly":
        # The anomaly detector has no hook: end its warm-up as its own `observe` would — the
        # input stands for its warm-up time, not for its minimum number of flows.
        a: Any = det
        need = a.config.warmup_flows
        if a.flow_model_ is None and a.flows_learnt_ >= max(need, 2):
            a._fit_flows()
        a.warm_ = a.flow_model_ is not None
        if not a.warm_:
            return (f"anomaly: {a.flows_learnt_:,} flows learnt, fewer than its warm-up minimum "
                    f"of {need:,} (detectors.anomaly.warmup_flows): it keeps warming up during "
                    "analysis")  # fmt: skip
    return None


def learnt_count(det: StreamingDetector) -> int | None:
    """Rows a detector learnt from, where it counts them."""
    for attr in ("learnt_", "flows_learnt_"):
        v = getattr(det, attr, None)
        if isinstance(v, int):
            return v
    return None


# -- saving ---------------------------------------------------------------------------------


def _split_arrays(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    """The state with base64 array blobs replaced by npz references (arrays collected)."""
    if isinstance(obj, dict):
        if set(obj) == {"dtype", "shape", "b64"}:
            from tapetum.anomaly.arrays import decode_array

            key = f"a{len(arrays)}"
            arrays[key] = decode_array(obj)
            return {"npz_key": key}
        return {k: _split_arrays(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_split_arrays(v, arrays) for v in obj]
    return obj


def _join_arrays(obj: Any, arrays: dict[str, np.ndarray], where: str) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"npz_key"}:
            from tapetum.anomaly.arrays import encode_array

            key = str(obj["npz_key"])
            if key not in arrays:
                raise ModelError(f"{where}: array {key!r} missing from the npz file")
            return encode_array(arrays[key])
        return {k: _join_arrays(v, arrays, where) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_arrays(v, arrays, where) for v in obj]
    return obj


@dataclass
class Learnt:
    """What a learning (or updating) run adds to a model's manifest."""

    inputs: list[dict[str, Any]] = field(default_factory=list)
    first_ns: int | None = None
    last_ns: int | None = None
    packets: int = 0
    flows: int = 0
    alerts: int = 0


def _ts(ns: int | None) -> str | None:
    if ns is None:
        return None
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat().replace("+00:00", "Z")


def save_model(
    out: str | Path,
    detectors: Sequence[StreamingDetector],
    config: Config,
    learnt: Learnt,
    previous: dict[str, Any] | None = None,
    cfg_hash: str | None = None,
) -> dict[str, Any]:
    """Write the detectors' states and the manifest to `out` atomically; returns the manifest.

    `previous` (the manifest of the model being updated) carries its inputs and counts over;
    `cfg_hash` overrides the config's hash (the config as the user wrote it, before the CLI
    fills in defaults such as the intel store)."""
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        entries: dict[str, Any] = {}
        files: dict[str, Any] = {}
        for det in detectors:
            state = det.state()
            arrays: dict[str, np.ndarray] = {}
            doc = _split_arrays(state, arrays)
            name = det.name
            jpath = tmp / f"{name}.json"
            jpath.write_text(json.dumps(doc, sort_keys=True, allow_nan=True), encoding="utf-8")
            npz = None
            if arrays:
                npz = f"{name}.npz"
                buf = io.BytesIO()
                np.savez(buf, **arrays)  # type: ignore[arg-type]
                (tmp / npz).write_bytes(buf.getvalue())
            for fname in [f"{name}.json"] + ([npz] if npz else []):
                files[fname] = {"bytes": (tmp / fname).stat().st_size,
                                "sha256": _sha256(tmp / fname)}  # fmt: skip
            entries[name] = {
                "file": f"{name}.json",
                "arrays": npz,
                "state_version": state.get("version"),
                "feature_schema": feature_schema(state),
                "learnt": learnt_count(det),
            }
        prev = previous or {}
        span = prev.get("data_span", {})
        firsts = [x for x in (span.get("first_ns"), learnt.first_ns) if x is not None]
        lasts = [x for x in (span.get("last_ns"), learnt.last_ns) if x is not None]
        first, last = (min(firsts) if firsts else None), (max(lasts) if lasts else None)
        counts = dict(prev.get("counts", {}))
        for k, v in (("packets", learnt.packets), ("flows", learnt.flows),
                     ("alerts_while_learning", learnt.alerts)):  # fmt: skip
            counts[k] = int(counts.get(k, 0)) + v
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tapetum_version": __version__,
            "created": prev.get("created") or _ts(learnt.last_ns),
            "updates": int(prev.get("updates", -1)) + 1,
            "config_hash": cfg_hash or config_hash(config),
            "detectors": entries,
            "files": files,
            "inputs": list(prev.get("inputs", [])) + learnt.inputs,
            "data_span": {"first_ns": first, "last_ns": last, "first": _ts(first),
                          "last": _ts(last),
                          "duration_s": (last - first) / 1e9 if first and last else 0.0},
            "counts": counts,
        }  # fmt: skip
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        if old.exists():
            shutil.rmtree(old)
        return manifest
    except BaseException:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        raise


# -- loading --------------------------------------------------------------------------------


def read_manifest(model: str | Path) -> dict[str, Any]:
    """The manifest, after checking format, version and every file's size and hash."""
    d = Path(model)
    mpath = d / MANIFEST
    if not d.is_dir():
        raise ModelError(f"{d}: not a directory; give a model directory made by `tapetum learn`")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{mpath}: missing; {d} is not a model made by `tapetum learn`") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{mpath}: unreadable or not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelError(f"{mpath}: not a Tapetum model manifest (format {FORMAT!r} expected)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{mpath}: model format version {manifest.get('format_version')}, this Tapetum "
            f"({__version__}) reads version {FORMAT_VERSION}; run `tapetum learn` again"
        )
    try:
        files = dict(manifest["files"])
        entries = dict(manifest["detectors"])
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"{mpath}: manifest lacks its file or detector list") from None
    for fname, meta in sorted(files.items()):
        p = d / fname
        if Path(fname).name != fname:
            raise ModelError(f"{mpath}: file name {fname!r} outside the model directory")
        if not p.is_file():
            raise ModelError(f"{p}: missing (listed in the manifest)")
        size = p.stat().st_size
        if size != meta.get("bytes"):
            raise ModelError(
                f"{p}: {size:,} bytes, the manifest says {meta.get('bytes'):,} "
                "(truncated or edited); run `tapetum learn` again"
            )
        if _sha256(p) != meta.get("sha256"):
            raise ModelError(f"{p}: content differs from the manifest's SHA-256 (edited?)")
    for name, e in entries.items():
        for key in ("file", "arrays"):
            if e.get(key) is not None and e[key] not in files:
                raise ModelError(f"{mpath}: {name}'s {key} {e[key]!r} is not a listed file")
    return manifest


def _read_state(d: Path, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    jpath = d / str(entry["file"])
    try:
        state = json.loads(jpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{jpath}: unreadable or not JSON ({exc})") from None
    if entry.get("arrays"):
        npath = d / str(entry["arrays"])
        try:
            with np.load(npath, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ModelError(f"{npath}: not a readable npz file ({exc})") from None
        state = _join_arrays(state, arrays, str(npath))
    if not isinstance(state, dict) or state.get("detector") != name:
        raise ModelError(f"{jpath}: not the state of the {name} detector")
    return dict(state)


def restore(name: str, state: dict[str, Any], cfg: Config, where: str) -> StreamingDetector:
    """A detector of this Tapetum with `state` restored; refuses another state version or
    feature schema with a message naming `where`."""
    fresh = DETECTORS[name](cfg)
    now = fresh.state()
    if state.get("version") != now.get("version"):
        raise ModelError(
            f"{where}: {name} state version {state.get('version')}, this Tapetum "
            f"({__version__}) has version {now.get('version')}; run `tapetum learn` again"
        )
    if feature_schema(state) != feature_schema(now):
        raise ModelError(
            f"{where}: {name} was learnt on feature schema {feature_schema(state)}, this Tapetum "
            f"computes {feature_schema(now)}; run `tapetum learn` again"
        )
    section = getattr(cfg.detectors, name, None)
    try:
        det: StreamingDetector = type(fresh).from_state(state, section)  # type: ignore[attr-defined]
    except ModelError as exc:
        raise ModelError(f"{where}: {exc}") from None
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelError(f"{where}: {name} state incomplete or damaged ({exc!r})") from None
    # from_state builds with the section only; the registry's factory also passes the
    # reporting lag derived from the meter's timeouts.
    if hasattr(fresh, "lag_ns") and hasattr(det, "lag_ns"):
        det.lag_ns = fresh.lag_ns
    return det


def load_model(
    model: str | Path, cfg: Config, cfg_hash: str | None = None
) -> tuple[list[StreamingDetector], dict[str, Any], list[str]]:
    """(detectors, manifest, warnings): the model's detectors restored, plus the default set's
    others built fresh, in registry order. `cfg_hash`: as in `save_model`."""
    d = Path(model)
    manifest = read_manifest(d)
    entries: dict[str, Any] = manifest["detectors"]
    unknown = [n for n in entries if n not in DETECTORS]
    if unknown:
        raise ModelError(
            f"{d / MANIFEST}: detector(s) {', '.join(unknown)} unknown to this Tapetum "
            f"({__version__}); run `tapetum learn` again"
        )
    warnings = []
    now = cfg_hash or config_hash(cfg)
    if manifest.get("config_hash") != now:
        warnings.append(
            f"{d}: learnt with another configuration (hash {manifest.get('config_hash')}, now "
            f"{now}); detectors whose learnt state depends on it refuse it"
        )
    out: list[StreamingDetector] = []
    for name in DETECTORS:
        if name in entries:
            e = entries[name]
            where = str(d / str(e["file"]))
            state = _read_state(d, name, e)
            if state.get("version") != e.get("state_version"):
                raise ModelError(f"{where}: state version differs from the manifest's")
            out.append(restore(name, state, cfg, where))
        elif enabled_by_default(cfg, name):
            out.append(DETECTORS[name](cfg))
    return out, manifest, warnings


def update_model(
    model: str | Path,
    detectors: Sequence[StreamingDetector],
    config: Config,
    summary: Any,
    manifest: dict[str, Any],
    cfg_hash: str | None = None,
) -> dict[str, Any]:
    """`analyze --model M --update-model`: save what the detectors learnt while analysing
    (`summary`: the pipeline's Summary) back into M, atomically."""
    learnt = Learnt(
        inputs=[input_record(f.path) for f in summary.files if f.error is None],
        first_ns=summary.first_ns,
        last_ns=summary.last_ns,
        packets=summary.packets,
        flows=summary.flows,
        alerts=len(summary.alerts),
    )
    return save_model(model, detectors, config, learnt, manifest, cfg_hash)
