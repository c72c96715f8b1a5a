"""JSON lines sink: one EVE-shaped object per line."""

from __future__ import annotations

from pathlib import Path
from typing import IO

import msgspec

from tapetum.flows.meter import FlowBatch
from tapetum.sinks.base import Record
from tapetum.sinks.eve import flow_events, record_event


class JsonlSink:
    def __init__(self, path: str | Path | IO[bytes], *, flow_sequences: bool = False) -> None:
        if isinstance(path, str | Path):
            self._fh: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()
            self._own = True
        else:
            self._fh = path
            self._own = False
        self._enc = msgspec.json.Encoder()
        self._seq = flow_sequences
        self.events = 0

    def _emit(self, events: list[dict[str, object]]) -> None:
        if events:
            self._fh.write(b"\n".join(self._enc.encode(e) for e in events) + b"\n")
            self.events += len(events)

    def write_flows(self, flows: FlowBatch, services: list[str]) -> None:
        self._emit(flow_events(flows, services, self._seq))

    def write(self, records: list[Record]) -> None:
        self._emit([record_event(r) for r in records])

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self.flush()
        if self._own:
            self._fh.close()
