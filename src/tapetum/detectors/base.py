"""The detector contract.

A detector scores feature rows (higher = more anomalous) and explains them; it learns from rows
taken as normal and persists its learned state in safe formats (JSON-compatible dicts here,
arrays as npz/safetensors where needed) — never pickle. Constructors only store parameters;
learned attributes end in `_`.

Streaming detectors also implement `observe` (fold in finished flows), `observe_events` (fold in
application events: DNS, TLS, HTTP, SSH), `poll` (emit alerts for work that is complete at a
data-time watermark) and `flush` (end of input), which the pipeline calls; they never read the
wall clock.

Order: the events of a flow reach `observe_events` before the flow itself reaches `observe`
(the parsers finish when the flow ends). A detector that needs both joins them on `flow_id`.

`features(flows, events)` gets both kinds of input; each detector uses the kind it needs (a DNS
detector's rows come from the DNS events, a scan detector's from the flows).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from tapetum.flows.meter import FlowBatch
from tapetum.records import Alert, AppEvent


class Detector(Protocol):
    name: str

    def features(self, flows: FlowBatch, events: Sequence[AppEvent] = ()) -> Any:
        """The detector's feature rows for this input (a pure function of it)."""
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

    def observe_events(self, events: Sequence[AppEvent]) -> None: ...

    def poll(self, watermark_ns: int | None) -> list[Alert]: ...

    def flush(self) -> list[Alert]: ...
