"""The source contract: iterate batches from one input, then close.

Packet sources (pcap, live capture) yield `PacketBatch`es that go through the flow meter and the
protocol parsers. Record sources (Zeek logs, Suricata EVE, NetFlow/IPFIX, auth logs) yield
`RecordBatch`es: flows already made (`tapetum.flows.build.flow_batch`), application events,
authentication events and alerts of other sensors, which join the pipeline after the meter.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from tapetum.errors import InputWarning
from tapetum.flows.meter import FlowBatch
from tapetum.records import Alert, AppEvent, AuthEvent
from tapetum.sources.pcap import PacketBatch, ReaderCounters


@dataclass(slots=True)
class RecordBatch:
    """Records from a sensor's logs, in data-time order within the batch."""

    flows: FlowBatch | None = None
    events: list[AppEvent] = field(default_factory=list)
    auth: list[AuthEvent] = field(default_factory=list)
    #: Alerts raised by another sensor (Suricata): they join incidents like Tapetum's own.
    alerts: list[Alert] = field(default_factory=list)
    #: Input records this batch came from (lines, datagrams), for progress and counters.
    records: int = 0


class Source(Protocol):
    path: str
    #: A short name of the input's format ("pcap", "pcapng", …), known once reading started.
    format: str
    counters: ReaderCounters
    warnings: list[InputWarning]
    total_bytes: int

    @property
    def progress_bytes(self) -> int:
        """How far into `total_bytes` the source has read (for progress bars)."""
        ...

    def __iter__(self) -> Iterator[PacketBatch | RecordBatch]: ...

    def close(self) -> None: ...
