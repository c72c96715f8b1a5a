"""The contract between the flow meter and the protocol parsers.

The pipeline feeds the payload of the first packets of each flow (every packet for DNS ports) to
one `ProtocolAnalyzer`, in capture order. The analyzer picks a parser per flow by content and port,
reassembles what it needs (TCP by sequence number), and hands back typed records from
`tapetum.records`. Malformed payloads are counted in `counters` and reported as warnings with the
file and packet offset; they never raise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from tapetum.records import FlowRef


class Segment(msgspec.Struct, frozen=True, gc=False):
    """One packet's transport payload, oriented by the flow's originator.

    A Struct, not a dataclass: the pipeline builds one per packet it hands over, and a
    Struct is built about ten times faster. Its fields are plain values, so it stays out of
    the garbage collector's way (`gc=False`).
    """

    flow_uid: int
    ts_ns: int
    from_orig: bool
    #: IP protocol number: 6 TCP, 17 UDP.
    ip_proto: int
    payload: bytes
    #: TCP sequence number (0 for UDP).
    tcp_seq: int = 0
    tcp_flags: int = 0
    #: Where the packet starts in its capture file, for warnings.
    file_offset: int = -1


@dataclass(slots=True)
class ProtocolCounters:
    parsed: dict[str, int] = field(default_factory=dict)
    malformed: dict[str, int] = field(default_factory=dict)

    def bump_parsed(self, proto: str) -> None:
        self.parsed[proto] = self.parsed.get(proto, 0) + 1

    def bump_malformed(self, proto: str) -> None:
        self.malformed[proto] = self.malformed.get(proto, 0) + 1


__all__ = ["FlowRef", "ProtocolCounters", "Segment"]
