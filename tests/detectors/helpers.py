"""Run captures through the reader and meter (and the protocol parsers); build small captures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tapetum.config import Config
from tapetum.flows.meter import FlowBatch, FlowMeter, MeterConfig
from tapetum.pipeline import Pipeline
from tapetum.records import Alert, AppEvent
from tapetum.sources.pcap import CaptureReader


def flows_of(path: Path | str, config: MeterConfig | None = None) -> list[FlowBatch]:
    meter = FlowMeter(config)
    out: list[FlowBatch] = []
    with CaptureReader(path) as reader:
        for batch in reader:
            _, finished = meter.process(batch)
            out.extend(finished)
    out.extend(meter.flush())
    return [fb for fb in out if len(fb)]


@dataclass
class Step:
    """What the pipeline hands a detector, in order: application events, then finished flows."""

    events: list[AppEvent] = field(default_factory=list)
    flows: FlowBatch | None = None


class _Recorder:
    """A detector that records its input, to replay it into real detectors in tests."""

    name = "recorder"

    def __init__(self) -> None:
        self.steps: list[Step] = [Step()]

    def observe_events(self, events: Sequence[AppEvent]) -> None:
        self.steps[-1].events.extend(events)

    def observe(self, flows: FlowBatch) -> None:
        self.steps[-1].flows = flows  # finished flows are fresh arrays, safe to keep
        self.steps.append(Step())

    def poll(self, watermark_ns: int | None) -> list[Alert]:
        return []

    def flush(self) -> list[Alert]:
        return []

    # The rest of the contract is unused here.
    def features(self, flows: FlowBatch, events: Sequence[AppEvent] = ()) -> Any:
        return None

    def entities(self, rows: Any) -> list[str]:
        return []

    def learn(self, rows: Any) -> None:
        return None

    def score(self, rows: Any) -> np.ndarray:
        return np.zeros(0)

    def explain(self, rows: Any, idx: np.ndarray) -> list[str]:
        return []

    def state(self) -> dict[str, Any]:
        return {}


def stream_of(path: Path | str, config: Config | None = None) -> list[Step]:
    """The (events, flows) steps the pipeline gives its detectors for this capture."""
    rec = _Recorder()
    Pipeline(config, detectors=[rec]).run([str(path)])
    return [s for s in rec.steps if s.events or (s.flows is not None and len(s.flows))]


def replay(det: Any, steps: list[Step]) -> list[Alert]:
    """Feed recorded steps to a streaming detector as the pipeline would; all its alerts."""
    alerts: list[Alert] = []
    for s in steps:
        if s.events:
            det.observe_events(s.events)
        if s.flows is not None:
            det.observe(s.flows)
        alerts.extend(det.poll(None))
    return alerts + det.flush()
