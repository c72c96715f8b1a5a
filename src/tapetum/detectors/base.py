"""The detector contract.

A detector scores feature rows (higher = more anomalous) and explains them; it learns from rows
taken as normal and persists its learned state in safe formats (JSON-compatible dicts here,
arrays as npz/safetensors where needed) — never pickle. Constructors only store parameters;
learned attributes end in `_`.

Streaming detectors also implement `observe` (fold in finished flows), `poll` (emit alerts for
work that is complete at a data-time watermark) and `flush` (end of input), which the pipeline
calls; they never read the wall clock.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from tapetum.flows.meter import FlowBatch
from tapetum.records import Alert


class Detector(Protocol):
    name: str

    def features(self, flows: FlowBatch) -> Any:
        """The detector's feature rows for these flows (a pure function of its input)."""
        ...

    def entities(self, rows: Any) -> list[str]:
        """The entity each row is about (host, host pair, user …)."""
        ...

    def learn(self, rows: Any) -> None: ...

    def score(self, rows: Any) -> np.ndarray: ...

    def explain(self, rows: Any, idx: np.ndarray) -> list[str]: ...

    def state(self) -> dict[str, Any]: ...


class StreamingDetector(Detector, Protocol):
    def observe(self, flows: FlowBatch) -> None: ...

    def poll(self, watermark_ns: int | None) -> list[Alert]: ...

    def flush(self) -> list[Alert]: ...
