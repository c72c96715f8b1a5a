"""NetFlow v5, NetFlow v9 (RFC 3954) and IPFIX (RFC 7011) collection into flow batches.

`NetflowCollector.feed(datagram, exporter)` decodes one export datagram; `take()` returns the
flows decoded since the last call as a `FlowBatch` (the same columns the meter produces).
Decoding is columnar: a v5 datagram is one `np.frombuffer` with a fixed structured dtype, and
each v9/IPFIX data template is compiled once into a structured dtype over the fields Tapetum
maps, so a data set is one `np.frombuffer` too. Only templates with variable-length fields
(IPFIX) are walked record by record, copying their fixed-length fields into the same layout.

Templates are kept per (exporter address, version, observation domain / source id, template
id), bounded, and IPFIX withdrawals remove them. Options templates are parsed and their data
skipped (counted), except IPFIX `systemInitTimeMilliseconds`, which anchors uptime-relative
times. Data sets whose template has not arrived yet are buffered (bounded, counted) and decoded
when it does. Unknown information elements are skipped by their length (counted). Lengths that
lie are rejected with a counter and a warning naming the exporter and the byte offset: nothing
here can loop forever or raise on hostile input.

NetFlow records are unidirectional. By default the records of both directions of one
connection that arrive in the same `take()` window are paired into one bidirectional flow
(originator = the earlier start, then the side that sent a SYN without being answered, then the
side talking to the lower port). An unpaired record stays a flow whose other direction is 0.
IPFIX biflow records (RFC 5103 reverse elements, enterprise 29305) are bidirectional already.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tapetum.errors import InputWarning
from tapetum.flows.build import flow_batch, state_bits_from_flags
from tapetum.flows.key import addr_text_array
from tapetum.flows.meter import FlowBatch
from tapetum.sources import decode as D
from tapetum.sources.base import RecordBatch
from tapetum.sources.pcap import CaptureReader, ReaderCounters

NS = 1_000_000_000
MS = 1_000_000
NTP_UNIX_OFFSET_S = 2_208_988_800
#: RFC 5103: reverse information elements are the forward ids under this enterprise number.
REVERSE_PEN = 29305
VARLEN = 65535
MAX_WARNINGS_PER_KIND = 20
_V4_MAPPED = np.uint64(0xFFFF << 32)
_INT64_MAX = np.uint64(2**63 - 1)

V5_HEADER = struct.Struct(">HHIIIIBBH")
V9_HEADER = struct.Struct(">HHIIII")
IPFIX_HEADER = struct.Struct(">HHIII")
SET_HEADER = struct.Struct(">HH")

#: NetFlow v5 flow record (48 bytes, Cisco's layout).
V5_RECORD = np.dtype(
    [
        ("src", ">u4"),
        ("dst", ">u4"),
        ("nexthop", ">u4"),
        ("input", ">u2"),
        ("output", ">u2"),
        ("pkts", ">u4"),
        ("octets", ">u4"),
        ("first", ">u4"),
        ("last", ">u4"),
        ("sport", ">u2"),
        ("dport", ">u2"),
        ("pad1", "u1"),
        ("flags", "u1"),
        ("proto", "u1"),
        ("tos", "u1"),
        ("src_as", ">u2"),
        ("dst_as", ">u2"),
        ("src_mask", "u1"),
        ("dst_mask", "u1"),
        ("pad2", ">u2"),
    ]
)
assert V5_RECORD.itemsize == 48

#: (enterprise, element id) -> (slot, priority): the information elements Tapetum maps (IANA
#: ids; NetFlow v9 uses the same numbers). Lower priority wins when a template has several.
ELEMENTS: dict[tuple[int, int], tuple[str, int]] = {
    (0, 1): ("octets", 0),
    (0, 85): ("octets", 1),
    (0, 231): ("octets", 2),
    (0, 2): ("pkts", 0),
    (0, 86): ("pkts", 1),
    (0, 298): ("pkts", 2),
    (REVERSE_PEN, 1): ("rev_octets", 0),
    (REVERSE_PEN, 85): ("rev_octets", 1),
    (0, 232): ("rev_octets", 2),
    (REVERSE_PEN, 2): ("rev_pkts", 0),
    (REVERSE_PEN, 86): ("rev_pkts", 1),
    (0, 299): ("rev_pkts", 2),
    (0, 4): ("proto", 0),
    (0, 6): ("flags", 0),
    (REVERSE_PEN, 6): ("rev_flags", 0),
    (0, 7): ("sport", 0),
    (0, 180): ("sport", 1),
    (0, 182): ("sport", 2),
    (0, 11): ("dport", 0),
    (0, 181): ("dport", 1),
    (0, 183): ("dport", 2),
    (0, 8): ("src4", 0),
    (0, 12): ("dst4", 0),
    (0, 27): ("src6", 0),
    (0, 28): ("dst6", 0),
    (0, 22): ("first_up", 0),
    (0, 21): ("last_up", 0),
    (0, 150): ("start_s", 0),
    (0, 151): ("end_s", 0),
    (0, 152): ("start_ms", 0),
    (0, 153): ("end_ms", 0),
    (0, 154): ("start_us", 0),
    (0, 155): ("end_us", 0),
    (0, 156): ("start_ns", 0),
    (0, 157): ("end_ns", 0),
    (0, 158): ("start_delta_us", 0),
    (0, 159): ("end_delta_us", 0),
    (0, 160): ("sys_init_ms", 0),
    (0, 161): ("dur_ms", 0),
    (0, 162): ("dur_us", 0),
    (REVERSE_PEN, 153): ("rev_end_ms", 0),
    (REVERSE_PEN, 21): ("rev_last_up", 0),
    (0, 32): ("icmp_tc", 0),
    (0, 139): ("icmp_tc", 1),
    (REVERSE_PEN, 32): ("rev_icmp_tc", 0),
    (REVERSE_PEN, 139): ("rev_icmp_tc", 1),
    (0, 176): ("icmp_type", 0),
    (0, 178): ("icmp_type", 1),
    (0, 177): ("icmp_code", 0),
    (0, 179): ("icmp_code", 1),
    (0, 58): ("vlan", 0),
    (0, 243): ("vlan", 1),
}
_ADDRESS_LEN = {"src4": 4, "dst4": 4, "src6": 16, "dst6": 16}
#: ICMP request/reply counterparts (Community ID's table, as the meter keys ICMP flows):
#: (proto, type) -> the other type. Requests are the keys of _ICMP_REQUESTS.
_ICMP_COUNTERPART = {
    (1, 8): 0,
    (1, 0): 8,
    (1, 13): 14,
    (1, 14): 13,
    (1, 15): 16,
    (1, 16): 15,
    (1, 10): 9,
    (1, 9): 10,
    (1, 17): 18,
    (1, 18): 17,
    (58, 128): 129,
    (58, 129): 128,
    (58, 133): 134,
    (58, 134): 133,
    (58, 135): 136,
    (58, 136): 135,
    (58, 130): 131,
    (58, 131): 130,
    (58, 144): 145,
    (58, 145): 144,
    (58, 139): 140,
    (58, 140): 139,
}
_ICMP_COUNTERPART_LUT = np.full((256, 256), -1, dtype=np.int64)
_ICMP_REQUEST_LUT = np.zeros((256, 256), dtype=bool)
for (_p, _t), _c in _ICMP_COUNTERPART.items():
    _ICMP_COUNTERPART_LUT[_p, _t] = _c
_ICMP_REQUESTS = {
    (1, 8),
    (1, 13),
    (1, 15),
    (1, 10),
    (1, 17),
    (58, 128),
    (58, 133),
    (58, 135),
    (58, 130),
    (58, 144),
    (58, 139),
}
for _p, _t in _ICMP_REQUESTS:
    _ICMP_REQUEST_LUT[_p, _t] = True


@dataclass(slots=True)
class NetflowCounters:
    """Everything the collector saw, dropped or could not use."""

    datagrams: int = 0
    bytes: int = 0
    by_version: dict[str, int] = field(default_factory=dict)
    not_netflow: int = 0
    data_sets: int = 0
    records: int = 0
    flows: int = 0
    biflows_paired: int = 0
    templates: int = 0
    template_updates: int = 0
    templates_withdrawn: int = 0
    templates_evicted: int = 0
    variable_length_templates: int = 0
    options_templates: int = 0
    options_records: int = 0
    unknown_fields: int = 0
    pending_sets: int = 0
    pending_decoded: int = 0
    pending_dropped: int = 0
    pending_never_decoded: int = 0
    records_without_addresses: int = 0
    uptime_without_init_time: int = 0
    malformed: int = 0
    malformed_by_kind: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        out = {
            k: getattr(self, k)
            for k in self.__slots__
            if k not in ("by_version", "malformed_by_kind")
        }
        out.update({f"version_{k}": v for k, v in self.by_version.items()})
        out.update({f"malformed.{k}": v for k, v in self.malformed_by_kind.items()})
        return out


@dataclass(slots=True)
class Template:
    """A data or options template compiled to a structured dtype over the mapped fields.

    `dtype` describes the record's fixed-length fields packed together (for a template without
    variable-length fields that is the record itself); `slots` names the dtype field of each
    mapped element."""

    tid: int
    fields: list[tuple[int, int, int]]  # (enterprise, element id, length)
    dtype: np.dtype[Any]
    slots: dict[str, str]
    min_len: int
    variable: bool
    options: bool


@dataclass(slots=True)
class _Message:
    """What a data set needs from its message header to place records in time."""

    version: int
    exporter: str
    domain: int
    export_ns: int
    uptime_ms: int | None  # v5/v9: the exporter's uptime at export
    where: str  # for messages: the datagram or file position
    base: int | None  # offset of the datagram in its file (None: live socket)


_TemplateKey = tuple[str, int, int, int]  # exporter, version, domain, template id


def _uint(a: np.ndarray) -> np.ndarray:
    """Column of an unsigned field as uint64 (odd sizes arrive as a byte subarray)."""
    if a.ndim == 2:
        out = np.zeros(a.shape[0], dtype=np.uint64)
        for k in range(a.shape[1]):
            out = (out << np.uint64(8)) | a[:, k].astype(np.uint64)
        return out
    return np.asarray(a, dtype=np.uint64)


def _i64(a: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.minimum(a, _INT64_MAX).astype(np.int64)
    return out


def _field_format(slot: str, length: int) -> Any:
    if slot in ("src6", "dst6"):
        return (">u8", (2,))
    return {1: "u1", 2: ">u2", 4: ">u4", 8: ">u8"}.get(length, ("u1", (length,)))


def _valid_length(slot: str, length: int) -> bool:
    if slot in _ADDRESS_LEN:
        return length == _ADDRESS_LEN[slot]
    return 1 <= length <= 8


def _ntp_to_ns(v: np.ndarray, micro: bool) -> np.ndarray:
    """RFC 7011 dateTimeMicroseconds/Nanoseconds (NTP format) to ns since the Unix epoch."""
    if micro:
        v = v & ~np.uint64(0x7FF)  # the low 11 fraction bits carry no information
    sec = (v >> np.uint64(32)).astype(np.int64) - NTP_UNIX_OFFSET_S
    frac = v & np.uint64(0xFFFFFFFF)
    return sec * NS + ((frac * np.uint64(NS)) >> np.uint64(32)).astype(np.int64)


def _uptime_to_ns(export_ns: int, uptime_ms: int, value: np.ndarray) -> np.ndarray:
    """v5/v9 sysUptime-relative times to absolute ns: the signed 32-bit difference to the
    header's uptime, so a wrapped uptime counter (every 49.7 days) stays right."""
    diff = ((np.uint64(uptime_ms) - value) & np.uint64(0xFFFFFFFF)).astype(np.int64)
    diff = np.where(diff >= 2**31, diff - 2**32, diff)
    return export_ns - diff * MS


class NetflowCollector:
    """Decode NetFlow v5/v9 and IPFIX datagrams into flows; see the module doc."""

    def __init__(
        self,
        label: str = "netflow",
        *,
        pair_biflows: bool = True,
        pair_slack_s: float = 1.0,
        max_templates: int = 10_000,
        max_pending_sets: int = 1024,
        max_pending_bytes: int = 8 << 20,
        community_id_seed: int = 0,
    ) -> None:
        self.label = label
        self.pair_biflows = pair_biflows
        self.pair_slack_ns = int(pair_slack_s * NS)
        self.max_templates = max_templates
        self.max_pending_sets = max_pending_sets
        self.max_pending_bytes = max_pending_bytes
        self.community_id_seed = community_id_seed
        self.counters = NetflowCounters()
        self.warnings: list[InputWarning] = []
        self.templates: dict[_TemplateKey, Template] = {}
        #: IPFIX systemInitTimeMilliseconds per (exporter, domain), from options data.
        self.sys_init_ms: dict[tuple[str, int], int] = {}
        self._pending: dict[_TemplateKey, deque[tuple[bytes, int, _Message]]] = {}
        self._pending_order: deque[_TemplateKey] = deque()
        self._pending_bytes = 0
        self._pending_n = 0
        self._parts: list[dict[str, np.ndarray]] = []
        self._exporters: dict[str, int] = {}
        self._addr_cache: dict[tuple[int, int], str] = {}

    # -- reporting -------------------------------------------------------------------------

    def _warn(self, msg: _Message | None, offset: int, kind: str, text: str) -> None:
        """Count a problem; keep the first few of each kind as warnings naming the exporter."""
        seen = self.counters.malformed_by_kind.get(kind, 0)
        self.counters.malformed_by_kind[kind] = seen + 1
        self.counters.malformed += 1
        if seen >= MAX_WARNINGS_PER_KIND:
            return
        if msg is None:
            self.warnings.append(InputWarning(self.label, None, kind, text))
            return
        version = "IPFIX" if msg.version == 10 else f"NetFlow v{msg.version}"
        file_offset = None if msg.base is None else msg.base
        self.warnings.append(
            InputWarning(
                self.label,
                file_offset,
                kind,
                f"{version} from exporter {msg.exporter} ({msg.where}, byte {offset}): {text}",
            )
        )

    def templates_by_exporter(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for exporter, _, _, _ in self.templates:
            out[exporter] = out.get(exporter, 0) + 1
        return out

    # -- input -----------------------------------------------------------------------------

    def feed(self, data: bytes, exporter: str, *, where: str = "", base: int | None = None) -> int:
        """Decode one export datagram from `exporter` (its address). Returns flow records
        decoded (including buffered ones it released). `where`/`base` locate it for messages."""
        c = self.counters
        c.datagrams += 1
        c.bytes += len(data)
        before = c.records
        where = where or f"datagram {c.datagrams}"
        if len(data) < 2:
            c.not_netflow += 1
            return 0
        version = int.from_bytes(data[:2], "big")
        key = {5: "5", 9: "9", 10: "ipfix"}.get(version)
        if key is None:
            c.not_netflow += 1
            return 0
        c.by_version[key] = c.by_version.get(key, 0) + 1
        if version == 5:
            self._v5(data, exporter, where, base)
        else:
            self._v9_ipfix(data, version, exporter, where, base)
        return c.records - before

    def _v5(self, data: bytes, exporter: str, where: str, base: int | None) -> None:
        msg = _Message(5, exporter, 0, 0, None, where, base)
        if len(data) < V5_HEADER.size:
            self._warn(
                msg,
                0,
                "truncated_header",
                f"datagram of {len(data)} bytes is shorter than the 24-byte v5 header; skipped",
            )
            return
        _, count, uptime, secs, nsecs, _, _, engine_id, _ = V5_HEADER.unpack_from(data)
        need = V5_HEADER.size + 48 * count
        if need > len(data):
            self._warn(
                msg,
                2,
                "count_beyond_datagram",
                f"header count {count} needs {need} "
                f"bytes but the datagram has {len(data)}; datagram skipped",
            )
            return
        msg.domain = engine_id
        msg.export_ns = secs * NS + min(nsecs, NS - 1)
        msg.uptime_ms = uptime
        rec = np.frombuffer(data, dtype=V5_RECORD, count=count, offset=V5_HEADER.size)
        n = rec.shape[0]
        if n == 0:
            return
        self.counters.records += n
        src = rec["src"].astype(np.uint64) | _V4_MAPPED
        dst = rec["dst"].astype(np.uint64) | _V4_MAPPED
        zero = np.zeros(n, dtype=np.int64)
        proto = rec["proto"].astype(np.int64)
        sport = rec["sport"].astype(np.int64)
        dport = rec["dport"].astype(np.int64)
        sport, dport = _icmp_ports(proto, sport, dport, dport >> 8, dport & 0xFF)
        self._add(
            msg,
            start_ns=_uptime_to_ns(msg.export_ns, uptime, rec["first"].astype(np.uint64)),
            end_ns=_uptime_to_ns(msg.export_ns, uptime, rec["last"].astype(np.uint64)),
            proto=proto,
            sport=sport,
            dport=dport,
            src_hi=np.zeros(n, np.uint64),
            src_lo=src,
            dst_hi=np.zeros(n, np.uint64),
            dst_lo=dst,
            pkts=rec["pkts"].astype(np.int64),
            octets=rec["octets"].astype(np.int64),
            rev_pkts=zero,
            rev_octets=zero.copy(),
            flags=rec["flags"].astype(np.int64),
            rev_flags=zero.copy(),
            vlan=zero.copy(),
            biflow=np.zeros(n, dtype=bool),
        )

    def _v9_ipfix(
        self, data: bytes, version: int, exporter: str, where: str, base: int | None
    ) -> None:
        msg = _Message(version, exporter, 0, 0, None, where, base)
        if version == 9:
            if len(data) < V9_HEADER.size:
                self._warn(
                    msg,
                    0,
                    "truncated_header",
                    f"datagram of {len(data)} bytes is shorter than the 20-byte v9 header; skipped",
                )
                return
            _, _, uptime, secs, _, source_id = V9_HEADER.unpack_from(data)
            msg.domain, msg.export_ns, msg.uptime_ms = source_id, secs * NS, uptime
            pos, end = V9_HEADER.size, len(data)
        else:
            if len(data) < IPFIX_HEADER.size:
                self._warn(
                    msg,
                    0,
                    "truncated_header",
                    f"datagram of {len(data)} bytes is "
                    "shorter than the 16-byte IPFIX header; skipped",
                )
                return
            _, length, export_s, _, domain = IPFIX_HEADER.unpack_from(data)
            msg.domain, msg.export_ns = domain, export_s * NS
            if length < IPFIX_HEADER.size or length > len(data):
                self._warn(
                    msg,
                    2,
                    "message_length",
                    f"message length {length} does not fit "
                    f"the datagram ({len(data)} bytes); message skipped",
                )
                return
            pos, end = IPFIX_HEADER.size, length
        tpl_set, opt_set = (0, 1) if version == 9 else (2, 3)
        while pos < end:
            if end - pos < SET_HEADER.size:
                if any(data[pos:end]):
                    self._warn(
                        msg,
                        pos,
                        "truncated_set",
                        f"{end - pos} bytes after the last "
                        "set are too short for a set header; ignored",
                    )
                break
            sid, slen = SET_HEADER.unpack_from(data, pos)
            if slen < SET_HEADER.size:
                self._warn(
                    msg,
                    pos,
                    "set_length",
                    f"set {sid} has length {slen} (< 4); rest of the message skipped",
                )
                break
            if pos + slen > end:
                self._warn(
                    msg,
                    pos,
                    "set_length",
                    f"set {sid} length {slen} runs past the end "
                    f"of the message ({end} bytes); rest of the message skipped",
                )
                break
            body_at = pos + SET_HEADER.size
            if sid == tpl_set:
                self._template_set(data, body_at, pos + slen, msg, options=False)
            elif sid == opt_set:
                self._template_set(data, body_at, pos + slen, msg, options=True)
            elif sid >= 256:
                self._data_set(bytes(data[body_at : pos + slen]), body_at, sid, msg)
            else:
                self._warn(msg, pos, "reserved_set_id", f"set id {sid} is reserved; skipped")
            pos += slen

    # -- templates ------------------------------------------------------------------------

    def _template_set(
        self, data: bytes, pos: int, end: int, msg: _Message, *, options: bool
    ) -> None:
        """Walk the template records of one (options) template set."""
        v9 = msg.version == 9
        head = 6 if options else 4
        while end - pos >= 4:  # an IPFIX withdrawal is 4 bytes, even in an options set
            if not any(data[pos:end]):
                break  # padding
            start = pos
            if options and v9:
                tid, scope_bytes, option_bytes = struct.unpack_from(">HHH", data, pos)
                if scope_bytes % 4 or option_bytes % 4:
                    self._warn(
                        msg,
                        pos,
                        "template_length",
                        f"options template {tid}: scope/"
                        "option lengths not multiples of 4; set skipped",
                    )
                    return
                count, scope = (scope_bytes + option_bytes) // 4, scope_bytes // 4
            elif options:
                tid, count = struct.unpack_from(">HH", data, pos)
                scope = data[pos + 4] << 8 | data[pos + 5] if end - pos >= 6 else 0
            else:
                tid, count = struct.unpack_from(">HH", data, pos)
                scope = 0
            if not v9 and count == 0:
                self._withdraw(msg, tid, options)
                pos += 4
                continue
            if end - pos < head:
                self._warn(
                    msg,
                    start,
                    "template_length",
                    f"template {tid}: header cut by the end of its set; set skipped",
                )
                return
            pos += head
            if tid < 256:
                self._warn(msg, start, "template_id", f"template id {tid} < 256; set skipped")
                return
            if count == 0:
                self._warn(
                    msg, start, "template_no_fields", f"template {tid} has 0 fields; set skipped"
                )
                return
            if options and not v9 and (scope == 0 or scope > count):
                self._warn(
                    msg,
                    start,
                    "template_scope",
                    f"options template {tid}: scope field count {scope} of {count}; set skipped",
                )
                return
            fields: list[tuple[int, int, int]] = []
            for _ in range(count):
                if pos + 4 > end:
                    break
                ie, length = struct.unpack_from(">HH", data, pos)
                pos += 4
                pen = 0
                if not v9 and ie & 0x8000:
                    if pos + 4 > end:
                        pos = end + 1
                        break
                    pen = struct.unpack_from(">I", data, pos)[0]
                    ie &= 0x7FFF
                    pos += 4
                fields.append((pen, ie, length))
            if len(fields) < count or pos > end:
                self._warn(
                    msg,
                    start,
                    "template_length",
                    f"template {tid} declares {count} fields but the set ends first; set skipped",
                )
                return
            self._define(msg, start, tid, fields, options=options, scope=scope)

    def _define(
        self,
        msg: _Message,
        at: int,
        tid: int,
        fields: list[tuple[int, int, int]],
        *,
        options: bool,
        scope: int,
    ) -> None:
        names: list[str] = []
        formats: list[Any] = []
        offsets: list[int] = []
        chosen: dict[str, tuple[int, str]] = {}
        fixed = 0
        var_fields = 0
        unknown = 0
        for k, (pen, ie, length) in enumerate(fields):
            if length == VARLEN and msg.version == 10:
                var_fields += 1
                unknown += 1
                continue
            # v9 options scope fields are scope types, not information elements.
            spec = None if (options and msg.version == 9 and k < scope) else ELEMENTS.get((pen, ie))
            if spec is None or not _valid_length(spec[0], length):
                unknown += 1
            else:
                slot, prio = spec
                if slot not in chosen or prio < chosen[slot][0]:
                    chosen[slot] = (prio, f"f{k}")
                    names.append(f"f{k}")
                    formats.append(_field_format(slot, length))
                    offsets.append(fixed)
            fixed += length
        if fixed + var_fields == 0:
            self._warn(
                msg,
                at,
                "record_length_zero",
                f"template {tid}: records would be 0 bytes long; template ignored",
            )
            return
        used = {name for _, name in chosen.values()}
        keep = [i for i, nm in enumerate(names) if nm in used]
        dtype = np.dtype(
            {
                "names": [names[i] for i in keep],
                "formats": [formats[i] for i in keep],
                "offsets": [offsets[i] for i in keep],
                "itemsize": max(fixed, 1),
            }
        )
        tpl = Template(
            tid=tid,
            fields=fields,
            dtype=dtype,
            slots={slot: name for slot, (_, name) in chosen.items()},
            min_len=fixed + var_fields,
            variable=var_fields > 0,
            options=options,
        )
        c = self.counters
        key = (msg.exporter, msg.version, msg.domain, tid)
        if key in self.templates:
            c.template_updates += 1
            del self.templates[key]  # re-insert: the dict's order is the eviction order
        else:
            c.templates += 1
            c.unknown_fields += unknown
            c.options_templates += options
            c.variable_length_templates += tpl.variable
            while len(self.templates) >= self.max_templates:
                del self.templates[next(iter(self.templates))]
                c.templates_evicted += 1
        self.templates[key] = tpl
        waiting = self._pending.pop(key, None)
        if waiting:
            for body, body_at, pmsg in waiting:
                self._pending_bytes -= len(body)
                self._pending_n -= 1
                c.pending_decoded += 1
                self._decode(tpl, body, body_at, pmsg)

    def _withdraw(self, msg: _Message, tid: int, options: bool) -> None:
        """IPFIX template withdrawal: one template, or all (of the set's kind) for tid 2/3."""
        if tid in (2, 3):
            gone = [
                k
                for k, t in self.templates.items()
                if k[:3] == (msg.exporter, msg.version, msg.domain) and t.options == options
            ]
        else:
            gone = [
                k for k in [(msg.exporter, msg.version, msg.domain, tid)] if k in self.templates
            ]
        for k in gone:
            del self.templates[k]
        self.counters.templates_withdrawn += len(gone)

    # -- data -----------------------------------------------------------------------------

    def _data_set(self, body: bytes, body_at: int, tid: int, msg: _Message) -> None:
        c = self.counters
        c.data_sets += 1
        key = (msg.exporter, msg.version, msg.domain, tid)
        tpl = self.templates.get(key)
        if tpl is not None:
            self._decode(tpl, body, body_at, msg)
            return
        # No template yet: keep the set (bounded, oldest dropped first) until it arrives.
        if len(body) > self.max_pending_bytes:
            c.pending_dropped += 1
            return
        self._pending.setdefault(key, deque()).append((body, body_at, msg))
        self._pending_order.append(key)
        self._pending_bytes += len(body)
        self._pending_n += 1
        c.pending_sets += 1
        while self._pending_order and (
            self._pending_n > self.max_pending_sets or self._pending_bytes > self.max_pending_bytes
        ):
            old = self._pending_order.popleft()
            q = self._pending.get(old)
            if not q:
                continue  # already decoded when its template came
            dropped, _, _ = q.popleft()
            self._pending_bytes -= len(dropped)
            self._pending_n -= 1
            c.pending_dropped += 1
            if not q:
                del self._pending[old]
        if len(self._pending_order) > 4 * self.max_pending_sets:
            live = set(self._pending)
            self._pending_order = deque(k for k in self._pending_order if k in live)

    def _records(self, tpl: Template, body: bytes, body_at: int, msg: _Message) -> np.ndarray:
        """The set's records as an array of `tpl.dtype` (trailing padding ignored)."""
        if not tpl.variable:
            n = len(body) // tpl.min_len
            if n == 0:
                return np.zeros(0, dtype=tpl.dtype)
            return np.frombuffer(body, dtype=tpl.dtype, count=n)
        # Variable-length fields: walk each record, keep its fixed-length fields packed.
        rows: list[bytes] = []
        pos, end = 0, len(body)
        while end - pos >= tpl.min_len:
            parts: list[bytes] = []
            ok = True
            for _, _, length in tpl.fields:
                if length == VARLEN:
                    if pos >= end:
                        ok = False
                        break
                    length = body[pos]
                    pos += 1
                    if length == 255:
                        if pos + 2 > end:
                            ok = False
                            break
                        length = int.from_bytes(body[pos : pos + 2], "big")
                        pos += 2
                    pos += length
                else:
                    parts.append(body[pos : pos + length])
                    pos += length
                if pos > end:
                    ok = False
                    break
            if not ok:
                self._warn(
                    msg,
                    body_at + pos,
                    "record_length",
                    f"a record of template {tpl.tid} "
                    "runs past the end of its set; rest of the set skipped",
                )
                break
            rows.append(b"".join(parts))
        if not rows or not rows[0]:
            return np.zeros(len(rows), dtype=tpl.dtype)  # no fixed-length fields at all
        return np.frombuffer(b"".join(rows), dtype=tpl.dtype, count=len(rows))

    def _decode(self, tpl: Template, body: bytes, body_at: int, msg: _Message) -> None:
        rec = self._records(tpl, body, body_at, msg)
        n = rec.shape[0]
        if n == 0:
            return
        s = tpl.slots
        c = self.counters
        if tpl.options:
            c.options_records += n
            if "sys_init_ms" in s:
                if len(self.sys_init_ms) >= self.max_templates:
                    del self.sys_init_ms[next(iter(self.sys_init_ms))]
                self.sys_init_ms[(msg.exporter, msg.domain)] = int(_uint(rec[s["sys_init_ms"]])[-1])
            return

        def col(slot: str) -> np.ndarray | None:
            return _uint(rec[s[slot]]) if slot in s else None

        def icol(slot: str, default: int = 0) -> np.ndarray:
            v = col(slot)
            return np.full(n, default, dtype=np.int64) if v is None else _i64(v)

        # Addresses: IPv6 where the template has it (and it is set), IPv4 otherwise.
        src_hi = np.zeros(n, np.uint64)
        dst_hi = np.zeros(n, np.uint64)
        src_lo = np.zeros(n, np.uint64)
        dst_lo = np.zeros(n, np.uint64)
        has = np.zeros(n, dtype=bool)
        if "src4" in s and "dst4" in s:
            src_lo = rec[s["src4"]].astype(np.uint64) | _V4_MAPPED
            dst_lo = rec[s["dst4"]].astype(np.uint64) | _V4_MAPPED
            has[:] = True
        if "src6" in s and "dst6" in s:
            a, b = rec[s["src6"]].astype(np.uint64), rec[s["dst6"]].astype(np.uint64)
            v6 = (a[:, 0] | a[:, 1]) != 0
            src_hi = np.where(v6, a[:, 0], src_hi)
            src_lo = np.where(v6, a[:, 1], src_lo)
            dst_hi = np.where(v6, b[:, 0], dst_hi)
            dst_lo = np.where(v6, b[:, 1], dst_lo)
            has |= v6
        c.records += n
        if not has.all():
            c.records_without_addresses += int((~has).sum())
            if not has.any():
                return
        start, end = self._times(tpl, rec, msg, n)
        proto = icol("proto")
        sport, dport = icol("sport"), icol("dport")
        if "icmp_tc" in s:
            tc = icol("icmp_tc")
            sport, dport = _icmp_ports(proto, sport, dport, tc >> 8, tc & 0xFF)
        elif "icmp_type" in s:
            sport, dport = _icmp_ports(proto, sport, dport, icol("icmp_type"), icol("icmp_code"))
        else:
            sport, dport = _icmp_ports(proto, sport, dport, dport >> 8, dport & 0xFF)
        pk, rpk = icol("pkts"), icol("rev_pkts")
        octets, rev_octets = icol("octets"), icol("rev_octets")
        flags, rev_flags = icol("flags") & 0xFF, icol("rev_flags") & 0xFF
        if "rev_pkts" in s or "rev_octets" in s:
            # RFC 5103 biflow. Exporters do not always put the initiator forward (softflowd
            # orders by address, and exports an ICMP reply as a biflow with an empty forward
            # side): turn around records whose forward side is empty or whose forward sender
            # uses a well-known port towards an ephemeral one.
            flip = ((pk == 0) & (rpk > 0)) | (
                (pk > 0)
                & (rpk > 0)
                & (sport < dport)
                & (sport < 1024)
                & (dport >= 1024)
                & (proto != 1)
                & (proto != 58)
            )
            if flip.any():
                rs, rd = dport, sport
                if "rev_icmp_tc" in s:
                    rtc = icol("rev_icmp_tc")
                    rs, rd = _icmp_ports(proto, rs, rd, rtc >> 8, rtc & 0xFF)
                sport, dport = np.where(flip, rs, sport), np.where(flip, rd, dport)
                src_hi, dst_hi = np.where(flip, dst_hi, src_hi), np.where(flip, src_hi, dst_hi)
                src_lo, dst_lo = np.where(flip, dst_lo, src_lo), np.where(flip, src_lo, dst_lo)
                pk, rpk = np.where(flip, rpk, pk), np.where(flip, pk, rpk)
                octets, rev_octets = (
                    np.where(flip, rev_octets, octets),
                    np.where(flip, octets, rev_octets),
                )
                flags, rev_flags = (
                    np.where(flip, rev_flags, flags),
                    np.where(flip, flags, rev_flags),
                )
            biflow = rpk > 0  # a biflow with one side empty may still pair like NetFlow
        else:
            biflow = np.zeros(n, dtype=bool)
        self._add(
            msg,
            start_ns=start,
            end_ns=end,
            proto=proto,
            sport=sport,
            dport=dport,
            src_hi=src_hi,
            src_lo=src_lo,
            dst_hi=dst_hi,
            dst_lo=dst_lo,
            pkts=pk,
            octets=octets,
            rev_pkts=rpk,
            rev_octets=rev_octets,
            flags=flags,
            rev_flags=rev_flags,
            vlan=icol("vlan") & 0xFFF,
            biflow=biflow,
            keep=has,
        )

    def _times(
        self, tpl: Template, rec: np.ndarray, msg: _Message, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        s = tpl.slots

        def col(slot: str) -> np.ndarray:
            return _uint(rec[s[slot]])

        start: np.ndarray | None = None
        end: np.ndarray | None = None
        for unit, scale in (("s", NS), ("ms", MS)):
            if start is None and f"start_{unit}" in s:
                start = _i64(col(f"start_{unit}")) * scale
            if end is None and f"end_{unit}" in s:
                end = _i64(col(f"end_{unit}")) * scale
        for unit in ("us", "ns"):
            if start is None and f"start_{unit}" in s:
                start = _ntp_to_ns(col(f"start_{unit}"), unit == "us")
            if end is None and f"end_{unit}" in s:
                end = _ntp_to_ns(col(f"end_{unit}"), unit == "us")
        if start is None and "start_delta_us" in s:
            start = msg.export_ns - _i64(col("start_delta_us")) * 1000
        if end is None and "end_delta_us" in s:
            end = msg.export_ns - _i64(col("end_delta_us")) * 1000
        if (start is None or end is None) and ("first_up" in s or "last_up" in s):
            first = col("first_up") if "first_up" in s else col("last_up")
            last = col("last_up") if "last_up" in s else first
            if msg.uptime_ms is not None:  # v9: relative to the header's uptime
                up_start = _uptime_to_ns(msg.export_ns, msg.uptime_ms, first)
                up_end = _uptime_to_ns(msg.export_ns, msg.uptime_ms, last)
            else:
                init = self.sys_init_ms.get((msg.exporter, msg.domain))
                if init is not None:  # IPFIX: relative to systemInitTimeMilliseconds
                    up_start = init * MS + _i64(first) * MS
                    up_end = init * MS + _i64(last) * MS
                else:  # no anchor known: assume the flow ended at export time
                    self.counters.uptime_without_init_time += n
                    up_end = np.full(n, msg.export_ns, dtype=np.int64)
                    up_start = up_end - (_i64(last) - _i64(first)) * MS
            start = up_start if start is None else start
            end = up_end if end is None else end
        if end is not None and "rev_end_ms" in s:
            end = np.maximum(end, _i64(col("rev_end_ms")) * MS)
        if end is None and start is not None:
            if "dur_ms" in s:
                end = start + _i64(col("dur_ms")) * MS
            elif "dur_us" in s:
                end = start + _i64(col("dur_us")) * 1000
        if start is None:
            start = end if end is not None else np.full(n, msg.export_ns, dtype=np.int64)
        if end is None:
            end = start
        return start, np.maximum(end, start)

    def _add(self, msg: _Message, keep: np.ndarray | None = None, **cols: np.ndarray) -> None:
        n = cols["start_ns"].shape[0]
        ex = self._exporters.setdefault(msg.exporter, len(self._exporters))
        cols["exporter"] = np.full(n, ex, dtype=np.int64)
        if keep is not None and not keep.all():
            cols = {k: v[keep] for k, v in cols.items()}
        self._parts.append(cols)

    # -- output ---------------------------------------------------------------------------

    def pending(self) -> int:
        """Data sets waiting for their template."""
        return self._pending_n

    def take(self) -> FlowBatch | None:
        """The flows decoded since the last call (biflows paired), or None."""
        if not self._parts:
            return None
        parts, self._parts = self._parts, []
        cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        order = np.argsort(cols["start_ns"], kind="stable")
        cols = {k: v[order] for k, v in cols.items()}
        if self.pair_biflows:
            cols = self._pair(cols)
        _turn_lone_synack(cols)
        fb = self._flow_batch(cols)
        self.counters.flows += len(fb)
        self._exporters.clear()  # indices only name the exporters of this window
        return fb

    def close(self) -> None:
        """End of input: data sets still waiting for a template are counted as lost."""
        self.counters.pending_never_decoded += self.pending()
        self._pending.clear()
        self._pending_order.clear()
        self._pending_bytes = 0
        self._pending_n = 0

    def _pair(self, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Merge the two directions of a connection (records in start order) into one flow."""
        n = cols["start_ns"].shape[0]
        ex, proto = cols["exporter"].tolist(), cols["proto"].tolist()
        sh, sl = cols["src_hi"].tolist(), cols["src_lo"].tolist()
        dh, dl = cols["dst_hi"].tolist(), cols["dst_lo"].tolist()
        sp, dp = cols["sport"].tolist(), cols["dport"].tolist()
        vlan, bi = cols["vlan"].tolist(), cols["biflow"].tolist()
        start, end = cols["start_ns"].tolist(), cols["end_ns"].tolist()
        slack = self.pair_slack_ns
        waiting: dict[tuple[int, ...], list[int]] = {}
        partner = [-1] * n
        for i in range(n):
            if bi[i]:
                continue
            # ICMP ports are (type, counterpart type): a reply is its request reversed too.
            mine = (ex[i], proto[i], vlan[i], sh[i], sl[i], sp[i], dh[i], dl[i], dp[i])
            theirs = (ex[i], proto[i], vlan[i], dh[i], dl[i], dp[i], sh[i], sl[i], sp[i])
            cands = waiting.get(theirs)
            if cands:
                for k, j in enumerate(cands):
                    if start[i] <= end[j] + slack and start[j] <= end[i] + slack:
                        partner[i], partner[j] = j, i
                        del cands[k]
                        break
                if partner[i] >= 0:
                    continue
            waiting.setdefault(mine, []).append(i)
        idx = np.arange(n)
        p = np.asarray(partner, dtype=np.int64)
        paired = p >= 0
        if not paired.any():
            return cols
        # Originator of a pair: the earlier start; on a tie the side that sent a SYN its
        # partner did not, then the side talking to the lower (service) port.
        flags = cols["flags"]
        q = np.where(paired, p, idx)
        s_i, s_p = cols["start_ns"], cols["start_ns"][q]
        syn_i = (flags & 0x12) == 0x02
        syn_p = (flags[q] & 0x12) == 0x02
        first = (s_i < s_p) | (
            (s_i == s_p)
            & (
                (syn_i & ~syn_p)
                | (
                    (syn_i == syn_p)
                    & (
                        (cols["dport"] < cols["sport"])
                        | ((cols["dport"] == cols["sport"]) & (idx < q))
                    )
                )
            )
        )
        # ICMP: the request's sender is the originator.
        is_req = _ICMP_REQUEST_LUT[np.clip(cols["proto"], 0, 255), np.clip(cols["sport"], 0, 255)]
        first = np.where(is_req != is_req[q], is_req, first)
        orig = paired & first
        keep = ~paired | orig
        out = {k: v.copy() for k, v in cols.items()}
        r = p[orig]
        o = np.flatnonzero(orig)
        out["rev_pkts"][o] = cols["pkts"][r]
        out["rev_octets"][o] = cols["octets"][r]
        out["rev_flags"][o] = cols["flags"][r]
        out["start_ns"][o] = np.minimum(cols["start_ns"][o], cols["start_ns"][r])
        out["end_ns"][o] = np.maximum(cols["end_ns"][o], cols["end_ns"][r])
        self.counters.biflows_paired += int(o.shape[0])
        return {k: v[keep] for k, v in out.items()}

    def _flow_batch(self, cols: dict[str, np.ndarray]) -> FlowBatch:
        cache = self._addr_cache
        src = addr_text_array(cols["src_hi"], cols["src_lo"], cache)
        dst = addr_text_array(cols["dst_hi"], cols["dst_lo"], cache)
        names = list(self._exporters)
        proto = cols["proto"]
        v6 = cols["src_hi"] != 0
        # Payload estimate: IP header plus the fixed transport header, per packet.
        hdr = np.where(v6, 40, 20) + np.select(
            [proto == 6, proto == 17, np.isin(proto, (1, 58))], [20, 8, 8], 0
        )
        pk, rpk = cols["pkts"], cols["rev_pkts"]
        bits = [
            state_bits_from_flags(a, b) if pr == 6 else 0
            for a, b, pr in zip(
                cols["flags"].tolist(), cols["rev_flags"].tolist(), proto.tolist(), strict=True
            )
        ]
        uids = [
            f"nf|{names[e]}|{a}|{b}|{c}|{d}|{p}|{t}"
            for e, a, b, c, d, p, t in zip(
                cols["exporter"].tolist(),
                src,
                dst,
                cols["sport"].tolist(),
                cols["dport"].tolist(),
                proto.tolist(),
                cols["start_ns"].tolist(),
                strict=True,
            )
        ]
        columns: dict[str, Any] = dict(
            start_ns=cols["start_ns"],
            end_ns=cols["end_ns"],
            proto=proto,
            src_ip=src,
            dest_ip=dst,
            src_port=cols["sport"],
            dest_port=cols["dport"],
            pkts_toserver=pk,
            pkts_toclient=rpk,
            bytes_toserver=cols["octets"],
            bytes_toclient=cols["rev_octets"],
            payload_bytes_toserver=np.maximum(cols["octets"] - hdr * pk, 0),
            payload_bytes_toclient=np.maximum(cols["rev_octets"] - hdr * rpk, 0),
            state_bits=bits,
            uid=uids,
            vlan=cols["vlan"],
            community_id_seed=self.community_id_seed,
        )
        return flow_batch(**columns)


def _turn_lone_synack(cols: dict[str, np.ndarray]) -> None:
    """A one-direction record of a single SYN-ACK is the answer to a SYN not seen: its receiver
    is the originator (the meter's rule, Zeek's '^' history). Turned around in place."""
    t = (
        (cols["proto"] == 6)
        & (cols["pkts"] == 1)
        & (cols["rev_pkts"] == 0)
        & ((cols["flags"] & 0x12) == 0x12)
    )
    if not t.any():
        return
    for a, b in (
        ("src_hi", "dst_hi"),
        ("src_lo", "dst_lo"),
        ("sport", "dport"),
        ("pkts", "rev_pkts"),
        ("octets", "rev_octets"),
        ("flags", "rev_flags"),
    ):
        cols[a][t], cols[b][t] = cols[b][t], cols[a][t]


def _icmp_ports(
    proto: np.ndarray, sport: np.ndarray, dport: np.ndarray, itype: np.ndarray, code: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """ICMP records as the meter keys ICMP flows: source port = type, destination port = the
    counterpart type of a request/reply pair, else the code. `itype`/`code` come from the
    record's ICMP fields or, without them, Cisco's destination port = type << 8 | code."""
    icmp = (proto == 1) | (proto == 58)
    if not icmp.any():
        return sport, dport
    t = np.clip(itype, 0, 255)
    cp = _ICMP_COUNTERPART_LUT[np.clip(proto, 0, 255), t]
    return np.where(icmp, t, sport), np.where(icmp, np.where(cp >= 0, cp, code), dport)


class NetflowCaptureSource:
    """A `Source` over a capture of NetFlow/IPFIX export traffic (forensics, tests): the UDP
    payloads (to `ports`, or any UDP port when None) are decoded as export datagrams from the
    packet's source address. One RecordBatch per packet batch of the capture."""

    def __init__(self, path: str, *, ports: set[int] | None = None, **kw: Any) -> None:
        self.path = path
        self.ports = ports
        self.reader = CaptureReader(path)
        self.collector = NetflowCollector(path, **kw)
        self.format = ""
        self.counters: ReaderCounters = self.reader.counters
        self.total_bytes = self.reader.total_bytes
        self.skipped_packets = 0

    @property
    def warnings(self) -> list[InputWarning]:
        return self.reader.warnings + self.collector.warnings

    @property
    def progress_bytes(self) -> int:
        return self.reader.progress_bytes

    def __iter__(self) -> Iterator[RecordBatch]:
        for batch in self.reader:
            self.format = f"netflow in {self.reader.format or 'pcap'}"
            cols = batch.cols
            udp = (
                (cols[:, D.C_PROTO] == 17)
                & (cols[:, D.C_FRAG] == 0)
                & (cols[:, D.C_STATUS] == D.S_OK)
            )
            if self.ports is not None:
                udp &= np.isin(cols[:, D.C_DPORT], sorted(self.ports))
            idx = np.flatnonzero(udp)
            self.skipped_packets += batch.n - idx.shape[0]
            src = addr_text_array(
                batch.addr[idx, D.A_SRC_HI], batch.addr[idx, D.A_SRC_LO], self.collector._addr_cache
            )
            rows = cols[idx]
            for k in range(idx.shape[0]):
                off, cap = int(rows[k, D.C_PAYOFF]), int(rows[k, D.C_PAYCAP])
                fo = int(rows[k, D.C_FILEOFF])
                self.collector.feed(
                    batch.buf[off : off + cap].tobytes(),
                    src[k],
                    where=f"packet at file byte {fo}",
                    base=fo,
                )
            fb = self.collector.take()
            yield RecordBatch(flows=fb, records=int(idx.shape[0]))
        self.collector.close()
        self.counters.corrupt_records += self.collector.counters.malformed
        for kind, v in self.collector.counters.malformed_by_kind.items():
            key = f"netflow_{kind}"
            self.counters.warnings_by_kind[key] = self.counters.warnings_by_kind.get(key, 0) + v

    def close(self) -> None:
        self.reader.close()
