"""The source contract: iterate packet batches from one input, then close."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from tapetum.errors import InputWarning
from tapetum.sources.pcap import PacketBatch, ReaderCounters


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

    def __iter__(self) -> Iterator[PacketBatch]: ...

    def close(self) -> None: ...
