"""What every protocol parser shares: the event sink and the per-flow parser base class.

The analyzer owns one `EventSink`; each flow's parser holds a reference to it and to the flow's
`FlowRef`. Parsers push finished records into the sink (in completion order) and report
malformed input through it, so counting and warning live in one place.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import ClassVar, Generic, TypeVar

from tapetum.protocols.base import ProtocolCounters
from tapetum.records import AppEvent, FlowRef

_M = TypeVar("_M")

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


_K = TypeVar("_K")
_V = TypeVar("_V")


class BoundedCache(Generic[_K, _V]):
    """A memo of a pure function's results, bounded in entries and in weight.

    The weight of an entry is what the caller says it costs (roughly bytes); an entry heavier
    than `max_weight` is not kept. When a bound would be exceeded the oldest entries go first
    (FIFO: a hit costs one dict lookup, nothing is reordered). Used for what servers and
    clients repeat from flow to flow (certificates, hello fingerprints, DNS messages), so one
    analyzer pays for each distinct value about once.
    """

    __slots__ = ("_data", "_max_entries", "_max_weight", "_weight", "_weights", "get")

    def __init__(self, max_entries: int, max_weight: int) -> None:
        self._data: dict[_K, _V] = {}
        self._weights: dict[_K, int] = {}
        self._max_entries = max_entries
        self._max_weight = max_weight
        self._weight = 0
        #: The value remembered for a key, or None.
        self.get: Callable[[_K], _V | None] = self._data.get

    def put(self, key: _K, value: _V, weight: int = 1) -> None:
        if weight > self._max_weight:
            return
        data = self._data
        weights = self._weights
        self._weight += weight - weights.pop(key, 0)
        data.pop(key, None)
        data[key] = value
        weights[key] = weight
        while len(data) > self._max_entries or self._weight > self._max_weight:
            oldest = next(iter(data))
            del data[oldest]
            self._weight -= weights.pop(oldest)

    def __len__(self) -> int:
        return len(self._data)


class MalformedError(Exception):
    """Input that cannot be what its protocol says; the message names what was wrong."""


class EventSink:
    """Collects events, counters, bounded warnings and internal statistics for one analyzer."""

    __slots__ = ("counters", "events", "file_offset", "memos", "stats", "warnings")

    def __init__(self) -> None:
        self.events: list[AppEvent] = []
        self.counters = ProtocolCounters()
        self.warnings: list[str] = []
        #: Non-protocol counts (evictions, gaps, caps hit), for the pipeline's summary.
        self.stats: dict[str, int] = {}
        #: File offset of the segment being processed, -1 when unknown.
        self.file_offset = -1
        #: Bounded memos shared by this analyzer's parsers, one per kind (see `BoundedCache`).
        self.memos: dict[type, object] = {}

    def memo(self, kind: type[_M]) -> _M:
        """This analyzer's memo of `kind`, made on first use."""
        memo = self.memos.get(kind)
        if not isinstance(memo, kind):
            memo = self.memos[kind] = kind()
        return memo

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
