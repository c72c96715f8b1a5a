"""DNS (and mDNS, LLMNR) message parsing and query/response pairing into `DnsEvent`s.

Hand-written rather than `dpkt.dns`: it is several times faster (no object per record), and the
bounds are ours to state. Every read is bounds-checked; compression pointers must point strictly
backwards from where the current run of labels began, so a pointer loop cannot exist and the
number of jumps is bounded by the message length; names stop at 255 bytes as RFC 1035 says.

A transaction is keyed by (DNS id, lower-cased qname) within a flow, as Zeek does. An unanswered
query is emitted with type "query" when the flow ends, when the same key is queried again (a
retransmission: Zeek logs both), or when more than `MAX_PENDING` queries wait in one flow.
"""

from __future__ import annotations

import ipaddress
import struct

from tapetum.protocols._parser import EventSink, MalformedError, Parser, printable
from tapetum.records import DnsAnswer, DnsEvent, FlowRef

#: UDP/TCP ports that carry DNS: DNS, mDNS, LLMNR.
DNS_PORTS = frozenset((53, 5353, 5355))
#: Unanswered queries kept per flow before the oldest is emitted as unanswered.
MAX_PENDING = 1000
#: Answers kept per response; more are counted but not stored.
MAX_ANSWERS = 64
#: Bytes of unknown-type rdata rendered as hex.
MAX_RDATA_HEX_BYTES = 512
#: Labels plus pointers followed while decoding all the names of one message. Real messages
#: need a few hundred; a crafted one (long backwards pointer chains reached from many
#: questions) is cut off here, so a message costs bounded time whatever it holds.
NAME_STEPS_PER_MESSAGE = 4096

_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_H = struct.Struct("!H")

RRTYPE_NAMES: dict[int, str] = {
    1: "A",
    2: "NS",
    3: "MD",
    4: "MF",
    5: "CNAME",
    6: "SOA",
    7: "MB",
    8: "MG",
    9: "MR",
    10: "NULL",
    11: "WKS",
    12: "PTR",
    13: "HINFO",
    14: "MINFO",
    15: "MX",
    16: "TXT",
    17: "RP",
    18: "AFSDB",
    24: "SIG",
    25: "KEY",
    28: "AAAA",
    29: "LOC",
    30: "NXT",
    32: "NIMLOC",
    33: "SRV",
    35: "NAPTR",
    36: "KX",
    37: "CERT",
    38: "A6",
    39: "DNAME",
    41: "OPT",
    42: "APL",
    43: "DS",
    44: "SSHFP",
    45: "IPSECKEY",
    46: "RRSIG",
    47: "NSEC",
    48: "DNSKEY",
    49: "DHCID",
    50: "NSEC3",
    51: "NSEC3PARAM",
    52: "TLSA",
    53: "SMIMEA",
    55: "HIP",
    59: "CDS",
    60: "CDNSKEY",
    61: "OPENPGPKEY",
    62: "CSYNC",
    63: "ZONEMD",
    64: "SVCB",
    65: "HTTPS",
    99: "SPF",
    249: "TKEY",
    250: "TSIG",
    251: "IXFR",
    252: "AXFR",
    253: "MAILB",
    254: "MAILA",
    255: "ANY",
    256: "URI",
    257: "CAA",
    32769: "DLV",
}

RCODE_NAMES: dict[int, str] = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
    6: "YXDOMAIN",
    7: "YXRRSET",
    8: "NXRRSET",
    9: "NOTAUTH",
    10: "NOTZONE",
}

_FLAG_BITS = (
    (0x8000, "qr"),
    (0x0400, "aa"),
    (0x0200, "tc"),
    (0x0100, "rd"),
    (0x0080, "ra"),
    (0x0040, "z"),
    (0x0020, "ad"),
    (0x0010, "cd"),
)
_FLAG_MASK = 0x87F0
_flags_cache: dict[int, tuple[str, ...]] = {}


def rrtype_name(rrtype: int) -> str:
    return RRTYPE_NAMES.get(rrtype) or f"TYPE{rrtype}"


def rcode_name(rcode: int) -> str:
    return RCODE_NAMES.get(rcode) or f"RCODE{rcode}"


def flag_names(flags: int) -> tuple[str, ...]:
    """Names of the set header flags, memoised: only 2**8 combinations exist."""
    key = flags & _FLAG_MASK
    names = _flags_cache.get(key)
    if names is None:
        names = tuple(name for bit, name in _FLAG_BITS if key & bit)
        _flags_cache[key] = names
    return names


class _Budget:
    __slots__ = ("steps",)

    def __init__(self, steps: int = NAME_STEPS_PER_MESSAGE) -> None:
        self.steps = steps


def read_name(buf: bytes, off: int, budget: _Budget | None = None) -> tuple[str, int]:
    """Decode the possibly compressed name at `off`; return it and the offset just after it."""
    if budget is None:
        budget = _Budget()
    n = len(buf)
    labels: list[str] = []
    end = -1
    # A pointer must point before the start of the run of labels it ends, so targets strictly
    # decrease and a loop is impossible.
    run_start = off
    total = 0
    while True:
        budget.steps -= 1
        if budget.steps < 0:
            raise MalformedError("names need too many labels and pointers to decode")
        if off >= n:
            raise MalformedError(f"name runs past the end of the message at offset {off}")
        length = buf[off]
        if length == 0:
            if end < 0:
                end = off + 1
            break
        kind = length & 0xC0
        if kind == 0xC0:
            if off + 1 >= n:
                raise MalformedError("truncated compression pointer")
            target = ((length & 0x3F) << 8) | buf[off + 1]
            if end < 0:
                end = off + 2
            if target >= run_start:
                raise MalformedError(f"compression pointer to {target} does not point backwards")
            off = run_start = target
            continue
        if kind:
            raise MalformedError(f"reserved label type 0x{length:02x}")
        off += 1
        stop = off + length
        if stop > n:
            raise MalformedError("label runs past the end of the message")
        total += length + 1
        if total > 255:
            raise MalformedError("name longer than 255 bytes")
        labels.append(printable(buf[off:stop]))
        off = stop
    return ".".join(labels), end


#: Character-strings read from one TXT record (real ones have a handful).
MAX_CHARACTER_STRINGS = 256


def _character_strings(buf: bytes, off: int, end: int) -> list[str]:
    out: list[str] = []
    while off < end:
        if len(out) >= MAX_CHARACTER_STRINGS:
            raise MalformedError("TXT record with too many character-strings")
        length = buf[off]
        off += 1
        if off + length > end:
            raise MalformedError("character-string runs past its record")
        out.append(printable(buf[off : off + length]))
        off += length
    return out


def _rdata(buf: bytes, off: int, end: int, rrtype: int, budget: _Budget) -> str:
    rdlen = end - off
    if rrtype == 1 and rdlen == 4:
        return f"{buf[off]}.{buf[off + 1]}.{buf[off + 2]}.{buf[off + 3]}"
    if rrtype == 28 and rdlen == 16:
        return ipaddress.IPv6Address(buf[off:end]).compressed
    if rrtype in (2, 5, 12, 39):  # NS, CNAME, PTR, DNAME: one name
        return read_name(buf, off, budget)[0]
    if rrtype == 15 and rdlen >= 3:  # MX: preference and exchange
        return f"{_H.unpack_from(buf, off)[0]} {read_name(buf, off + 2, budget)[0]}"
    if rrtype in (16, 99):  # TXT, SPF: strings concatenated, as SPF and DKIM read them
        return "".join(_character_strings(buf, off, end))
    if rrtype == 33 and rdlen >= 7:  # SRV: dig's "priority weight port target"
        prio, weight, port = struct.unpack_from("!HHH", buf, off)
        return f"{prio} {weight} {port} {read_name(buf, off + 6, budget)[0]}"
    if rrtype == 6:  # SOA: dig's "mname rname serial refresh retry expire minimum"
        mname, pos = read_name(buf, off, budget)
        rname, pos = read_name(buf, pos, budget)
        if pos + 20 > end:
            raise MalformedError("SOA record too short")
        numbers = struct.unpack_from("!IIIII", buf, pos)
        return " ".join((mname, rname, *(str(x) for x in numbers)))
    # Anything else (and the types above with an impossible length): hex, bounded.
    return buf[off : min(end, off + MAX_RDATA_HEX_BYTES)].hex()


class DnsMessage:
    """The parts of one DNS message that a `DnsEvent` needs."""

    __slots__ = ("answers", "error", "flags", "ident", "qname", "qtype")

    def __init__(
        self,
        ident: int,
        flags: int,
        qname: str | None,
        qtype: int | None,
        answers: tuple[DnsAnswer, ...],
        error: str | None,
    ) -> None:
        self.ident = ident
        self.flags = flags
        self.qname = qname
        self.qtype = qtype
        self.answers = answers
        #: Set when the answer section was cut short: what was read before is kept.
        self.error = error

    @property
    def is_response(self) -> bool:
        return bool(self.flags & 0x8000)


def parse_message(buf: bytes) -> DnsMessage:
    """Parse header, first question and answer section. Raises `MalformedError`."""
    n = len(buf)
    if n < 12:
        raise MalformedError(f"DNS message of {n} bytes is shorter than its header")
    ident, flags, qdcount, ancount, _nscount, _arcount = _HEADER.unpack_from(buf)
    opcode = (flags >> 11) & 0xF
    if opcode > 6:  # unassigned: most likely not DNS at all
        raise MalformedError(f"unassigned DNS opcode {opcode}")
    off = 12
    qname: str | None = None
    qtype: int | None = None
    budget = _Budget()
    for i in range(qdcount):
        name, off = read_name(buf, off, budget)
        if off + 4 > n:
            raise MalformedError("question runs past the end of the message")
        if i == 0:
            qname = name
            qtype = _H.unpack_from(buf, off)[0]
        off += 4
    answers: list[DnsAnswer] = []
    error: str | None = None
    try:
        for _ in range(min(ancount, MAX_ANSWERS)):
            name, off = read_name(buf, off, budget)
            if off + 10 > n:
                raise MalformedError("resource record header runs past the end of the message")
            rrtype, _rrclass, ttl, rdlen = _RR.unpack_from(buf, off)
            off += 10
            end = off + rdlen
            if end > n:
                raise MalformedError("rdata runs past the end of the message")
            answers.append(
                DnsAnswer(
                    rrname=name,
                    rrtype=rrtype_name(rrtype),
                    ttl=ttl,
                    rdata=_rdata(buf, off, end, rrtype, budget),
                )
            )
            off = end
    except MalformedError as exc:
        error = f"answer section: {exc}"
    return DnsMessage(ident, flags, qname, qtype, tuple(answers), error)


class _Pending:
    __slots__ = ("msg", "ts_ns")

    def __init__(self, ts_ns: int, msg: DnsMessage) -> None:
        self.ts_ns = ts_ns
        self.msg = msg


class DnsParser(Parser):
    """Pairs queries with responses within one flow (UDP datagrams or TCP length-framed)."""

    name = "dns"
    __slots__ = ("_buf_ts", "_bufs", "_pending")

    def __init__(self, sink: EventSink, flow: FlowRef, flow_uid: int, max_bytes: int) -> None:
        super().__init__(sink, flow, flow_uid, max_bytes)
        self._pending: dict[tuple[int, str], _Pending] = {}
        self._bufs: dict[bool, bytearray] = {}
        self._buf_ts: dict[bool, int] = {}

    def datagram(self, from_orig: bool, data: bytes, ts_ns: int) -> None:
        self._message(data, ts_ns)

    def tcp_data(self, from_orig: bool, data: bytes, ts_ns: int) -> None:
        # DNS over TCP: each message has a 2-byte length prefix; a segment may hold several
        # messages or part of one.
        buf = self._bufs.get(from_orig)
        if buf is None:
            buf = self._bufs[from_orig] = bytearray()
        if not buf:
            self._buf_ts[from_orig] = ts_ns
        buf += data
        while len(buf) >= 2:
            length = (buf[0] << 8) | buf[1]
            if len(buf) < 2 + length:
                break
            msg_ts = self._buf_ts[from_orig]
            message = bytes(buf[2 : 2 + length])
            del buf[: 2 + length]
            self._buf_ts[from_orig] = ts_ns
            self._message(message, msg_ts)
        if len(buf) > self.max_bytes:
            self.malformed("DNS-over-TCP message longer than the per-direction byte limit")
            buf.clear()

    def tcp_gap(self, from_orig: bool) -> None:
        buf = self._bufs.get(from_orig)
        if buf is not None:
            buf.clear()

    def end(self) -> None:
        pending = self._pending
        self._pending = {}
        for item in pending.values():
            self._emit_query(item)

    def _emit_query(self, item: _Pending) -> None:
        msg = item.msg
        assert msg.qname is not None
        self.sink.emit(
            "dns",
            DnsEvent(
                ts_ns=item.ts_ns,
                flow=self.flow,
                id=msg.ident,
                rrname=msg.qname,
                rrtype=rrtype_name(msg.qtype or 0),
                type="query",
                flags=flag_names(msg.flags),
            ),
        )

    def _message(self, data: bytes, ts_ns: int) -> None:
        try:
            msg = parse_message(data)
        except MalformedError as exc:
            self.malformed(str(exc))
            return
        if msg.error is not None:
            self.malformed(msg.error)
        pending = self._pending
        if not msg.is_response:
            if msg.qname is None:
                self.malformed("query without a question")
                return
            key = (msg.ident, msg.qname.lower())
            old = pending.pop(key, None)
            if old is not None:  # retransmitted query: the first one stays unanswered
                self._emit_query(old)
            pending[key] = _Pending(ts_ns, msg)
            if len(pending) > MAX_PENDING:
                oldest = next(iter(pending))
                self._emit_query(pending.pop(oldest))
                self.sink.bump("dns_pending_overflow")
            return
        qname = msg.qname
        qtype = msg.qtype
        if qname is None:
            # mDNS announcements and answers carry no question: name the first answer.
            if not msg.answers:
                self.sink.bump("dns_response_without_question")
                return
            qname = msg.answers[0].rrname
            rrtype = msg.answers[0].rrtype
        else:
            rrtype = rrtype_name(qtype or 0)
        query = pending.pop((msg.ident, qname.lower()), None) if pending else None
        self.sink.emit(
            "dns",
            DnsEvent(
                ts_ns=query.ts_ns if query is not None else ts_ns,
                flow=self.flow,
                id=msg.ident,
                rrname=qname,
                rrtype=rrtype,
                type="answer",
                rcode=rcode_name(msg.flags & 0xF),
                answers=msg.answers,
                rtt_ms=(ts_ns - query.ts_ns) / 1e6 if query is not None else None,
                flags=flag_names(msg.flags),
            ),
        )
