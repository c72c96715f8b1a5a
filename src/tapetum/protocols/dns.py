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
import socket
import struct
from functools import lru_cache

import msgspec

from tapetum.protocols._parser import BoundedCache, EventSink, MalformedError, Parser, printable
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
_RR_FROM = _RR.unpack_from
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
    name, end, budget.steps = _read_name(buf, off, budget.steps)
    return name, end


#: Names already decoded in one message: start offset -> (name, steps used, bytes counted).
#: The key `_READS_ID` is set when a compression pointer led into the message's ID.
_Names = dict[int, tuple[str, int, int]]
_READS_ID = -1


def _read_name(
    buf: bytes, off: int, steps: int, names: _Names | None = None
) -> tuple[str, int, int]:
    """`read_name` with the step budget passed as a number: (name, end, steps left).

    With `names`, a pointer to where an earlier name of the message started (an answer's
    owner pointing at the question, typically) reuses that name instead of decoding it again,
    when the budget and the 255-byte limit show decoding it again would end the same way.
    """
    start = off
    steps_before = steps
    n = len(buf)
    labels: list[bytes] = []
    end = -1
    # A pointer must point before the start of the run of labels it ends, so targets strictly
    # decrease and a loop is impossible.
    run_start = off
    total = 0
    while True:
        steps -= 1
        if steps < 0:
            raise MalformedError("names need too many labels and pointers to decode")
        if off >= n:
            raise MalformedError(f"name runs past the end of the message at offset {off}")
        length = buf[off]
        if length == 0:
            if end < 0:
                end = off + 1
            break
        if length >= 0x40:
            if length >= 0xC0:
                if off + 1 >= n:
                    raise MalformedError("truncated compression pointer")
                target = ((length & 0x3F) << 8) | buf[off + 1]
                if end < 0:
                    end = off + 2
                if target >= run_start:
                    raise MalformedError(
                        f"compression pointer to {target} does not point backwards"
                    )
                if names is not None:
                    if target < 2:
                        names[_READS_ID] = ("", 0, 0)
                    known = names.get(target)
                    # Decoding from `target` again would take the same steps over the same
                    # labels (the state after a jump is that of a fresh start there), so it
                    # fails exactly when these two sums overflow: then decode for the error.
                    if known is not None and known[1] <= steps and total + known[2] <= 255:
                        suffix, used, size = known
                        steps -= used
                        total += size
                        if labels:
                            prefix = _labels_text(labels)
                            suffix = f"{prefix}.{suffix}" if suffix else prefix
                        names[start] = (suffix, steps_before - steps, total)
                        return suffix, end, steps
                off = run_start = target
                continue
            raise MalformedError(f"reserved label type 0x{length:02x}")
        off += 1
        stop = off + length
        if stop > n:
            raise MalformedError("label runs past the end of the message")
        total += length + 1
        if total > 255:
            raise MalformedError("name longer than 255 bytes")
        labels.append(buf[off:stop])
        off = stop
    text = _labels_text(labels)
    if names is not None:
        names[start] = (text, steps_before - steps, total)
    return text, end, steps


def _labels_text(labels: list[bytes]) -> str:
    """Labels joined by ".", each as `printable` shows it."""
    # Printable ASCII (nearly every name) is its own text; "." cannot change how the labels
    # around it decode. Anything else is escaped label by label.
    raw = b".".join(labels)
    if raw.isascii():
        text = raw.decode("ascii")
        if text.isprintable():
            return text
    return ".".join([printable(label) for label in labels])


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


@lru_cache(maxsize=4096)
def _ipv6_text(raw: bytes) -> str:
    return ipaddress.IPv6Address(raw).compressed


_ipv4_text = socket.inet_ntoa  # "a.b.c.d" of 4 bytes


def _rdata(
    buf: bytes, off: int, end: int, rrtype: int, steps: int, names: _Names
) -> tuple[str, int]:
    """The text of one record's data and the name-step budget left."""
    rdlen = end - off
    if rrtype == 1 and rdlen == 4:
        return _ipv4_text(buf[off:end]), steps
    if rrtype == 28 and rdlen == 16:
        return _ipv6_text(buf[off:end]), steps
    if rrtype in (2, 5, 12, 39):  # NS, CNAME, PTR, DNAME: one name
        name, _, steps = _read_name(buf, off, steps, names)
        return name, steps
    if rrtype == 15 and rdlen >= 3:  # MX: preference and exchange
        name, _, steps = _read_name(buf, off + 2, steps, names)
        return f"{_H.unpack_from(buf, off)[0]} {name}", steps
    if rrtype in (16, 99):  # TXT, SPF: strings concatenated, as SPF and DKIM read them
        return "".join(_character_strings(buf, off, end)), steps
    if rrtype == 33 and rdlen >= 7:  # SRV: dig's "priority weight port target"
        prio, weight, port = struct.unpack_from("!HHH", buf, off)
        name, _, steps = _read_name(buf, off + 6, steps, names)
        return f"{prio} {weight} {port} {name}", steps
    if rrtype == 6:  # SOA: dig's "mname rname serial refresh retry expire minimum"
        mname, pos, steps = _read_name(buf, off, steps, names)
        rname, pos, steps = _read_name(buf, pos, steps, names)
        if pos + 20 > end:
            raise MalformedError("SOA record too short")
        numbers = struct.unpack_from("!IIIII", buf, pos)
        return " ".join((mname, rname, *(str(x) for x in numbers))), steps
    # Anything else (and the types above with an impossible length): hex, bounded.
    return buf[off : min(end, off + MAX_RDATA_HEX_BYTES)].hex(), steps


class DnsMessage(msgspec.Struct, gc=False):
    """The parts of one DNS message that a `DnsEvent` needs.

    (A Struct: one is made per message. Its fields cannot lead back to it, so the garbage
    collector need not track it.)
    """

    ident: int
    flags: int
    qname: str | None
    qtype: int | None
    answers: tuple[DnsAnswer, ...]
    #: Set when the answer section was cut short: what was read before is kept.
    error: str | None

    @property
    def is_response(self) -> bool:
        return bool(self.flags & 0x8000)


def parse_message(buf: bytes) -> DnsMessage:
    """Parse header, first question and answer section. Raises `MalformedError`."""
    return _parse_message(buf, {})


def _parse_message(buf: bytes, names: _Names) -> DnsMessage:
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
    steps = NAME_STEPS_PER_MESSAGE
    for i in range(qdcount):
        name, off, steps = _read_name(buf, off, steps, names)
        if off + 4 > n:
            raise MalformedError("question runs past the end of the message")
        if i == 0:
            qname = name
            qtype = (buf[off] << 8) | buf[off + 1]
        off += 4
    answers: list[DnsAnswer] = []
    error: str | None = None
    if ancount:
        try:
            for _ in range(min(ancount, MAX_ANSWERS)):
                name, off, steps = _read_name(buf, off, steps, names)
                if off + 10 > n:
                    raise MalformedError("resource record header runs past the end of the message")
                rrtype, _rrclass, ttl, rdlen = _RR_FROM(buf, off)
                off += 10
                end = off + rdlen
                if end > n:
                    raise MalformedError("rdata runs past the end of the message")
                rdata, steps = _rdata(buf, off, end, rrtype, steps, names)
                answers.append(
                    DnsAnswer(
                        rrname=name,
                        rrtype=RRTYPE_NAMES.get(rrtype) or f"TYPE{rrtype}",
                        ttl=ttl,
                        rdata=rdata,
                    )
                )
                off = end
        except MalformedError as exc:
            error = f"answer section: {exc}"
    return DnsMessage(ident, flags, qname, qtype, tuple(answers), error)


#: Distinct messages (ID aside) remembered per analyzer, and the rough bytes they may hold.
MEMO_ENTRIES = 4096
MEMO_BYTES = 16 * 2**20

#: What `parse_message` makes of a message whatever its ID: (qname, qtype, answers, error),
#: or the message of the `MalformedError` it raised.
_Parsed = tuple[str | None, int | None, tuple[DnsAnswer, ...], str | None] | str


class DnsMemo:
    """Messages that differ only in their ID, parsed once per analyzer.

    Many clients ask for the same names, and a resolver's answers repeat while their TTLs do;
    such messages differ in their first two bytes only. Parsing reads those for nothing but
    the ID, unless a compression pointer leads into them: a message where one did is not
    remembered. Otherwise two messages equal after the ID are read alike byte for byte, so a
    hit is exactly what parsing gives.
    """

    __slots__ = ("parsed",)

    def __init__(self) -> None:
        self.parsed: BoundedCache[bytes, _Parsed] = BoundedCache(MEMO_ENTRIES, MEMO_BYTES)

    @staticmethod
    def of(sink: EventSink) -> DnsMemo:
        """The memo of the analyzer that owns `sink`."""
        return sink.memo(DnsMemo)

    def parse(self, buf: bytes) -> DnsMessage:
        """`parse_message(buf)`, remembered."""
        if len(buf) < 12:
            return parse_message(buf)
        key = buf[2:]
        known = self.parsed.get(key)
        if known is None:
            names: _Names = {}
            try:
                msg = _parse_message(buf, names)
            except MalformedError as exc:
                if _READS_ID not in names:
                    text = str(exc)
                    self.parsed.put(key, text, 256 + len(key) + len(text))
                raise
            if _READS_ID not in names:
                # What is kept, roughly in bytes (compression lets a small message name the
                # same long name many times, so the text is counted, not the message).
                weight = 512 + len(key) + len(msg.qname or "") + len(msg.error or "")
                for answer in msg.answers:
                    weight += 256 + len(answer.rrname) + len(answer.rdata)
                self.parsed.put(key, (msg.qname, msg.qtype, msg.answers, msg.error), weight)
            return msg
        if isinstance(known, str):
            raise MalformedError(known)
        return DnsMessage((buf[0] << 8) | buf[1], (buf[2] << 8) | buf[3], *known)


class _Pending(msgspec.Struct, gc=False):
    ts_ns: int
    msg: DnsMessage


class DnsParser(Parser):
    """Pairs queries with responses within one flow (UDP datagrams or TCP length-framed)."""

    name = "dns"
    __slots__ = ("_buf_ts", "_bufs", "_memo", "_pending")

    def __init__(self, sink: EventSink, flow: FlowRef, flow_uid: int, max_bytes: int) -> None:
        super().__init__(sink, flow, flow_uid, max_bytes)
        self._memo = DnsMemo.of(sink)
        self._pending: dict[tuple[int, str], _Pending] = {}
        # DNS over TCP only (made on first use).
        self._bufs: dict[bool, bytearray] | None = None
        self._buf_ts: dict[bool, int] = {}

    def tcp_data(self, from_orig: bool, data: bytes, ts_ns: int) -> None:
        # DNS over TCP: each message has a 2-byte length prefix; a segment may hold several
        # messages or part of one.
        bufs = self._bufs
        if bufs is None:
            bufs = self._bufs = {}
        buf = bufs.get(from_orig)
        if buf is None:
            buf = bufs[from_orig] = bytearray()
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
            self.datagram(from_orig, message, msg_ts)
        if len(buf) > self.max_bytes:
            self.malformed("DNS-over-TCP message longer than the per-direction byte limit")
            buf.clear()

    def tcp_gap(self, from_orig: bool) -> None:
        buf = self._bufs.get(from_orig) if self._bufs is not None else None
        if buf is not None:
            buf.clear()

    def end(self) -> None:
        pending = self._pending
        if not pending:
            return
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

    def datagram(self, from_orig: bool, data: bytes, ts_ns: int) -> None:
        """One DNS message: a UDP datagram, or one length-framed message over TCP."""
        try:
            msg = self._memo.parse(data)
        except MalformedError as exc:
            self.malformed(str(exc))
            return
        if msg.error is not None:
            self.malformed(msg.error)
        pending = self._pending
        if not msg.flags & 0x8000:  # a query
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
            rrtype = RRTYPE_NAMES.get(qtype or 0) or f"TYPE{qtype or 0}"
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
