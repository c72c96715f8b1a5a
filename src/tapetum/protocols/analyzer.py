"""The protocol stage's dispatcher: per-flow parser choice, TCP reassembly, bounded state.

The pipeline calls `feed` for each packet with payload (and each SYN), in capture order. For a
new flow the analyzer picks a parser from the ports (DNS, mDNS, LLMNR) or, failing that, from the
first bytes of each side (TLS handshake record, HTTP method or status line, "SSH-", QUIC Initial).
A flow none of whose sides matches is remembered as "of no interest", so its later packets cost
one dict lookup. So is a flow whose parser has finished.

TCP payload is put in sequence order per direction: bytes already delivered are dropped,
segments after a hole wait (bounded in count and bytes) and, if the hole is not filled within
those bounds, the direction stops there (a gap) while the other goes on. A SYN consumes one
sequence number.

State is bounded: at most `max_flows` flows (least recently fed evicted first, after flushing
their pending events, counted in `stats["flows_evicted"]`), and at most
`max_bytes_per_direction` bytes buffered per direction by the reassembly and by each parser.
What parsers remember across flows (certificates, hello fingerprints, DNS messages seen with
another ID) lives in bounded memos owned by this analyzer (`BoundedCache`).
Parsers never raise to the caller: a malformed input is counted in `counters.malformed` and
described in `warnings` (the first `MAX_WARNINGS`, with the file offset when known).
"""

from __future__ import annotations

from collections import OrderedDict

from tapetum.protocols._parser import MAX_WARNINGS, EventSink, Parser
from tapetum.protocols.base import ProtocolCounters, Segment
from tapetum.protocols.dns import DNS_PORTS, DnsParser
from tapetum.protocols.http import REQUEST_PREFIXES, RESPONSE_PREFIX, HttpParser
from tapetum.protocols.quic import QuicParser, looks_like_initial
from tapetum.protocols.ssh import SshParser
from tapetum.protocols.tls import TlsParser
from tapetum.records import AppEvent, FlowRef

__all__ = ["MAX_WARNINGS", "ProtocolAnalyzer"]

_SEQ_MASK = 0xFFFFFFFF
_HALF = 0x80000000
_SYN = 0x02
#: Segments waiting behind a hole, per direction.
MAX_OUT_OF_ORDER_SEGMENTS = 64
#: Bytes of a side's first payload looked at to choose a parser.
_DETECT_BYTES = 8

_TCP_SIGNATURES: tuple[tuple[bytes, type[Parser]], ...] = (
    *((prefix, HttpParser) for prefix in REQUEST_PREFIXES),
    (RESPONSE_PREFIX, HttpParser),
    (b"SSH-", SshParser),
    (b"\x16\x03", TlsParser),
)


def _classify_tcp(data: bytes) -> type[Parser] | None:
    """The parser for a side's first bytes, or None if nothing matches."""
    if data[0] == 0x16:
        ok = len(data) >= 3 and data[1] == 0x03 and data[2] <= 0x04
        return TlsParser if ok else None
    for prefix, parser in _TCP_SIGNATURES:
        if data.startswith(prefix):
            return parser
    return None


def _could_match(data: bytes) -> bool:
    """Whether more bytes could still make a too-short first payload match a signature."""
    return len(data) < _DETECT_BYTES and any(
        prefix.startswith(data) for prefix, _ in _TCP_SIGNATURES
    )


class _Direction:
    """Reassembly state of one TCP direction."""

    __slots__ = ("closed", "next_seq", "ooo", "ooo_bytes")

    def __init__(self) -> None:
        self.next_seq = -1  # unknown until the SYN or first payload
        self.ooo: dict[int, bytes] | None = None
        self.ooo_bytes = 0
        self.closed = False


class _Flow:
    __slots__ = ("done", "orig", "parser", "prefix", "ref", "resp", "uid", "undecided")

    def __init__(self, ref: FlowRef, uid: int, tcp: bool) -> None:
        self.ref = ref
        self.uid = uid
        self.parser: Parser | None = None
        self.done = False
        #: Sides (1 originator, 2 responder) whose first payload has not been classified yet.
        self.undecided = 3
        #: First bytes of a side (and their time) kept while too short to classify (rare).
        self.prefix: dict[bool, tuple[bytes, int]] | None = None
        self.orig = _Direction() if tcp else None
        self.resp = _Direction() if tcp else None


class ProtocolAnalyzer:
    """Application-layer metadata (DNS, TLS, QUIC, HTTP, SSH) from flows' first packets."""

    def __init__(self, *, max_flows: int = 200_000, max_bytes_per_direction: int = 65_536) -> None:
        if max_flows < 1 or max_bytes_per_direction < 1:
            raise ValueError("max_flows and max_bytes_per_direction must be positive")
        self._max_flows = max_flows
        self._max_bytes = max_bytes_per_direction
        self._flows: OrderedDict[int, _Flow] = OrderedDict()
        self._sink = EventSink()
        self.counters: ProtocolCounters = self._sink.counters
        self.warnings: list[str] = self._sink.warnings
        #: Counts that are not about one protocol: flows evicted, TCP gaps, caps reached.
        self.stats: dict[str, int] = self._sink.stats

    # -- public API -------------------------------------------------------------------------

    def feed(self, flow: FlowRef, segment: Segment) -> None:
        """Take one packet's payload; called in capture order."""
        uid = segment.flow_uid
        state = self._flows.get(uid)
        if state is not None and state.done:
            return  # the commonest case: a flow already read or of no interest
        payload = segment.payload
        proto = segment.ip_proto
        if proto == 6:
            if not payload and not segment.tcp_flags & _SYN:
                return
        elif proto != 17 or not payload:
            return
        if state is None:
            state = self._open(flow, uid, proto)
        else:
            self._flows.move_to_end(uid)
        self._sink.file_offset = segment.file_offset
        try:
            if proto == 6:
                self._tcp(state, segment)
            else:
                self._udp(state, segment)
        except Exception as exc:  # a parser defect must not stop the pipeline: count it
            self._crash(state, exc)

    def wants(self, flow_uid: int) -> bool:
        """False once a flow's parser has finished or the flow matched no parser: the caller
        may skip building segments for it."""
        state = self._flows.get(flow_uid)
        return state is None or not state.done

    def flow_ended(self, flow_uid: int) -> None:
        """Flush and forget one flow's state."""
        state = self._flows.pop(flow_uid, None)
        if state is not None and not state.done:  # a done flow holds nothing to flush
            self._sink.file_offset = -1
            self._finish(state)

    def drain(self) -> list[AppEvent]:
        """Events completed since the last call, in order of completion."""
        events = self._sink.events
        self._sink.events = []
        return events

    def close(self) -> None:
        """End of input: flush every flow, oldest first."""
        self._sink.file_offset = -1
        flows = self._flows
        self._flows = OrderedDict()
        for state in flows.values():
            self._finish(state)

    @property
    def flow_count(self) -> int:
        return len(self._flows)

    # -- flow table -------------------------------------------------------------------------

    def _open(self, flow: FlowRef, uid: int, proto: int) -> _Flow:
        flows = self._flows
        if len(flows) >= self._max_flows:
            _, oldest = flows.popitem(last=False)
            self._sink.bump("flows_evicted")
            self._sink.file_offset = -1
            self._finish(oldest)
        state = _Flow(flow, uid, proto == 6)
        if flow.src_port in DNS_PORTS or flow.dest_port in DNS_PORTS:
            state.parser = DnsParser(self._sink, flow, uid, self._max_bytes)
        flows[uid] = state
        return state

    def _finish(self, state: _Flow) -> None:
        parser = state.parser
        state.done = True
        state.parser = None
        state.orig = state.resp = None
        if parser is not None and not parser.done:
            try:
                parser.end()
            except Exception as exc:
                self._sink.malformed(parser.name, state.uid, f"{type(exc).__name__}: {exc}")

    def _retire(self, state: _Flow) -> None:
        """The parser needs nothing more: keep only the 'done' marker."""
        state.done = True
        state.parser = None
        state.orig = state.resp = None
        state.prefix = None

    def _crash(self, state: _Flow, exc: Exception) -> None:
        # Parsers raise nothing on purpose; this counts their defects separately.
        name = state.parser.name if state.parser is not None else "tcp"
        self._sink.bump("parser_errors")
        self._sink.malformed(name, state.uid, f"{type(exc).__name__}: {exc}")
        self._finish(state)

    # -- UDP --------------------------------------------------------------------------------

    def _udp(self, state: _Flow, segment: Segment) -> None:
        parser = state.parser
        if parser is None:
            side = 1 if segment.from_orig else 2
            if not state.undecided & side:
                return
            if not looks_like_initial(segment.payload):
                state.undecided &= ~side
                if not state.undecided:
                    self._retire(state)
                return
            parser = state.parser = QuicParser(self._sink, state.ref, state.uid, self._max_bytes)
        parser.datagram(segment.from_orig, segment.payload, segment.ts_ns)
        if parser.done:
            self._retire(state)

    # -- TCP --------------------------------------------------------------------------------

    def _tcp(self, state: _Flow, segment: Segment) -> None:
        from_orig = segment.from_orig
        d = state.orig if from_orig else state.resp
        if d is None or d.closed:
            return
        seq = segment.tcp_seq
        payload = segment.payload
        next_seq = d.next_seq
        if segment.tcp_flags & _SYN:
            seq = (seq + 1) & _SEQ_MASK  # the SYN takes one sequence number
            if next_seq < 0:
                d.next_seq = next_seq = seq
            if not payload:
                return
        if next_seq < 0:
            next_seq = seq  # stored below: the segment is in order by definition
        delta = (seq - next_seq) & _SEQ_MASK
        if delta >= _HALF:  # starts before what was delivered: drop the repeated bytes
            overlap = (next_seq - seq) & _SEQ_MASK
            if overlap >= len(payload):
                return
            payload = payload[overlap:]
            delta = 0
        if delta == 0:
            d.next_seq = (next_seq + len(payload)) & _SEQ_MASK
            parser = state.parser
            if parser is not None and not state.prefix:
                # In order, to a chosen parser: what `_deliver` does, without its detours.
                if state.undecided & (1 if from_orig else 2):
                    parser.tcp_data(from_orig, payload, segment.ts_ns)
                    if parser.done:
                        self._retire(state)
            else:
                self._deliver(state, from_orig, payload, segment.ts_ns)
            if d.ooo and not state.done:
                self._drain_out_of_order(state, d, from_orig, segment.ts_ns)
            return
        # A hole before this segment: keep it until the hole is filled, within bounds.
        if delta > self._max_bytes:
            self._gap(state, d, from_orig)
            return
        ooo = d.ooo
        if ooo is None:
            ooo = d.ooo = {}
        previous = ooo.get(seq)
        if previous is None or len(previous) < len(payload):
            d.ooo_bytes += len(payload) - (len(previous) if previous is not None else 0)
            ooo[seq] = payload
        if d.ooo_bytes > self._max_bytes or len(ooo) > MAX_OUT_OF_ORDER_SEGMENTS:
            self._gap(state, d, from_orig)

    def _drain_out_of_order(self, state: _Flow, d: _Direction, from_orig: bool, ts: int) -> None:
        ooo = d.ooo
        while ooo and not state.done and not d.closed:
            ready = None
            for seq in ooo:
                if (seq - d.next_seq) & _SEQ_MASK == 0 or (seq - d.next_seq) & _SEQ_MASK >= _HALF:
                    ready = seq
                    break
            if ready is None:
                return
            data = ooo.pop(ready)
            d.ooo_bytes -= len(data)
            overlap = (d.next_seq - ready) & _SEQ_MASK
            if overlap < len(data):
                data = data[overlap:]
                d.next_seq = (d.next_seq + len(data)) & _SEQ_MASK
                self._deliver(state, from_orig, data, ts)

    def _gap(self, state: _Flow, d: _Direction, from_orig: bool) -> None:
        d.closed = True
        d.ooo = None
        d.ooo_bytes = 0
        self._sink.bump("tcp_gaps")
        parser = state.parser
        if parser is not None:
            parser.tcp_gap(from_orig)
        other = state.resp if from_orig else state.orig
        if other is None or other.closed:
            self._finish(state)  # nothing more can arrive: flush now

    def _deliver(self, state: _Flow, from_orig: bool, data: bytes, ts: int) -> None:
        side = 1 if from_orig else 2
        if not state.undecided & side:
            return  # this side's stream did not start with anything we parse
        if state.prefix:
            held = state.prefix.pop(from_orig, None)
            if held is not None:
                data = held[0] + data
                ts = held[1]
        parser = state.parser
        if parser is None:
            kind = _classify_tcp(data)
            if kind is None:
                if _could_match(data):
                    if state.prefix is None:
                        state.prefix = {}
                    state.prefix[from_orig] = (data, ts)
                    return
                state.undecided &= ~side
                if not state.undecided:
                    self._retire(state)
                return
            parser = state.parser = kind(self._sink, state.ref, state.uid, self._max_bytes)
        parser.tcp_data(from_orig, data, ts)
        if parser.done:
            self._retire(state)
