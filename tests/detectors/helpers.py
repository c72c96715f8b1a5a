"""Run captures through the reader and meter; build small synthetic captures."""

from __future__ import annotations

from pathlib import Path

from tapetum.flows.meter import FlowBatch, FlowMeter, MeterConfig
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
