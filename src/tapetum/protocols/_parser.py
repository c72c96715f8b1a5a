"""What every protocol parser shares: the event sink and the per-flow parser base class.

The analyzer owns one `EventSink`; each flow's parser holds a reference to it and to the flow's
`FlowRef`. Parsers push finished records into the sink (in completion order) and report
malformed input through it, so counting and warning live in one place.
"""

from __future__ import annotations

import re
from typing import ClassVar

from tapetum.protocols.base import ProtocolCounters
from tapetum.records import AppEvent, FlowRef

MAX_WARNINGS = 100


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def printable(raw: bytes) -> str:
    """Text of protocol bytes for logs: UTF-8 when valid, invalid bytes and control
    characters as \\xNN escapes (scanned by the regex engine, not a Python loop)."""
    text = raw.decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return _CONTROL.sub(_escape, text)


class MalformedError(Exception):
    """Input that cannot be what its protocol says; the message names what was wrong."""


class EventSink:
    """Collects events, counters, bounded warnings and internal statistics for one analyzer."""

    __slots__ = ("counters", "events", "file_offset", "stats", "warnings")

    def __init__(self) -> None:
        self.events: list[AppEvent] = []
        self.counters = ProtocolCounters()
        self.warnings: list[str] = []
        #: Non-protocol counts (evictions, gaps, caps hit), for the pipeline's summary.
        self.stats: dict[str, int] = {}
        #: File offset of the segment being processed, -1 when unknown.
        self.file_offset = -1

    def emit(self, proto: str, event: AppEvent) -> None:
        self.events.append(event)
        parsed = self.counters.parsed
        parsed[proto] = parsed.get(proto, 0) + 1

    def malformed(self, proto: str, flow_uid: int, message: str) -> None:
        self.counters.bump_malformed(proto)
        if len(self.warnings) < MAX_WARNINGS:
            where = f" at file offset {self.file_offset}" if self.file_offset >= 0 else ""
            self.warnings.append(f"{proto}: flow {flow_uid}{where}: {message}")

    def bump(self, stat: str, by: int = 1) -> None:
        self.stats[stat] = self.stats.get(stat, 0) + by


class Parser:
    """One flow's parser. Subclasses override the hooks they need.

    `tcp_data` receives each direction's stream in order, without duplicates; `datagram` one UDP
    payload; `tcp_gap` says a direction lost bytes and will deliver nothing more; `end` flushes
    whatever is pending (the flow is over). A parser sets `done` when it needs no more input.
    """

    name: ClassVar[str] = "?"
    __slots__ = ("done", "flow", "flow_uid", "max_bytes", "sink")

    def __init__(self, sink: EventSink, flow: FlowRef, flow_uid: int, max_bytes: int) -> None:
        self.sink = sink
        self.flow = flow
        self.flow_uid = flow_uid
        self.max_bytes = max_bytes
        self.done = False

    def tcp_data(self, from_orig: bool, data: bytes, ts_ns: int) -> None:
        self.datagram(from_orig, data, ts_ns)

    def datagram(self, from_orig: bool, data: bytes, ts_ns: int) -> None:
        return None

    def tcp_gap(self, from_orig: bool) -> None:
        return None

    def end(self) -> None:
        return None

    def malformed(self, message: str) -> None:
        self.sink.malformed(self.name, self.flow_uid, message)
