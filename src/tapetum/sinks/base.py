"""The sink contract: where flows and records go (DuckDB, JSON lines, …)."""

from __future__ import annotations

from typing import Protocol

from tapetum.flows.meter import FlowBatch
from tapetum.records import (
    Alert,
    AuthEvent,
    DnsEvent,
    HttpEvent,
    Incident,
    SshEvent,
    TlsEvent,
)

Record = DnsEvent | TlsEvent | HttpEvent | SshEvent | AuthEvent | Alert | Incident


class Sink(Protocol):
    def write_flows(self, flows: FlowBatch, services: list[str]) -> None:
        """Finished flows; `services` names the application protocol per flow ('' unknown)."""

    def write(self, records: list[Record]) -> None:
        """Typed records in the order they were produced."""

    def flush(self) -> None: ...

    def close(self) -> None: ...
