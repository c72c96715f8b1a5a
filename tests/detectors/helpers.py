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
from tapetum.records import Alert, AppEvent, AuthEvent
from tapetum.sources.pcap import CaptureReader
from tapetum.testing import CaptureBuilder


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
    #: Authentication events (auth-log inputs); a step of them has no flows.
    auth: list[AuthEvent] = field(default_factory=list)


class _Recorder:
    """A detector that records its input, to replay it into real detectors in tests."""

    name = "recorder"

    def __init__(self) -> None:
        self.steps: list[Step] = [Step()]

    def observe_events(self, events: Sequence[AppEvent]) -> None:
        self.steps[-1].events.extend(events)

    def observe_auth(self, events: Sequence[AuthEvent]) -> None:
        self.steps[-1].auth.extend(events)
        self.steps.append(Step())

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
    return [s for s in rec.steps if s.events or s.auth or (s.flows is not None and len(s.flows))]


def replay_split(det: Any, steps: list[Step]) -> tuple[list[Alert], list[Alert]]:
    """Feed recorded steps to a streaming detector as the pipeline would: the alerts of its
    `poll` calls while streaming, and those of the final `flush`."""
    polled: list[Alert] = []
    for s in steps:
        if s.events:
            det.observe_events(s.events)
        if s.flows is not None:
            det.observe(s.flows)
        if s.auth and hasattr(det, "observe_auth"):
            det.observe_auth(s.auth)
        polled.extend(det.poll(None))
    return polled, det.flush()


def replay(det: Any, steps: list[Step]) -> list[Alert]:
    """Feed recorded steps to a streaming detector as the pipeline would; all its alerts."""
    polled, flushed = replay_split(det, steps)
    return polled + flushed


def replay_flows(det: Any, path: Path | str) -> list[Alert]:
    """Feed a capture's flows alone (no protocol events) to a streaming detector, polling after
    each batch; all its alerts."""
    alerts: list[Alert] = []
    for fb in flows_of(path):
        det.observe(fb)
        alerts.extend(det.poll(None))
    flushed: list[Alert] = det.flush()
    return alerts + flushed


def write(b: CaptureBuilder, tmp: Path, name: str = "capture.pcap") -> Path:
    """Write a built capture to `tmp / name`; its path."""
    path = tmp / name
    b.write(path)
    return path


def no_flows() -> FlowBatch:
    """An empty flow batch: the flows of a step of an input without any (an auth log)."""
    from tapetum.flows.build import flow_batch

    return flow_batch(start_ns=[], end_ns=[], proto=[], src_ip=[], dest_ip=[], src_port=[],
                      dest_port=[], pkts_toserver=[], pkts_toclient=[], bytes_toserver=[],
                      bytes_toclient=[])  # fmt: skip
