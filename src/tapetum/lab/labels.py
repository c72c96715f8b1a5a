"""Write DIR/SCENARIO.labels.json in the shared `tapetum-labels/1` format (read by
`tapetum eval`)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tapetum.lab.scenarios import Attack

FORMAT = "tapetum-labels/1"


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def labels_document(
    scenario: str,
    capture: str,
    seed: int,
    start_ts: float,
    end_ts: float,
    benign_hosts: Sequence[str],
    internal: Sequence[str],
    attacks: Sequence[Attack],
) -> dict[str, Any]:
    out = []
    for a in attacks:
        d = asdict(a)
        params = d.pop("params")
        d["start"] = iso(a.start_ts)
        d["end"] = iso(a.end_ts)
        d["params"] = params
        out.append(d)
    return {
        "format": FORMAT,
        "scenario": scenario,
        "capture": capture,
        "seed": seed,
        "start_ts": start_ts,
        "end_ts": end_ts,
        "benign_hosts": list(benign_hosts),
        "networks": {"internal": list(internal)},
        "attacks": out,
    }


def write_labels(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
