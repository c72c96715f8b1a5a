"""Zeek logs: a file or a folder of logs, TSV or JSON lines, plain or gzip, read or followed.

Mapped logs: conn -> flows (`flows.build.flow_batch`, keyed by the connection uid), dns -> DnsEvent,
ssl (+ x509 joined by `cert_chain_fuids` / `cert_chain_fps`) -> TlsEvent, http -> HttpEvent,
ssh -> SshEvent, notice -> Alert. Every other log type is counted as skipped by its type.
Events carry a FlowRef whose flow_id is the one the conn.log record with the same uid gets, so
detectors join them exactly as they join the meter's events and flows.

A folder is read as one stream merged by time: each file is read in its own order and the files
are merged on a key that is the record's time, except conn records, keyed by their *end*
(ts + duration, when Zeek writes them): a connection's DNS/TLS/HTTP/SSH records (ts <= its end)
reach the pipeline no later than the connection itself, as the pipeline expects. Logs are written
in completion order, so each file's records pass a bounded reordering heap (`REORDER_WINDOW`
records) first. Memory is bounded by REORDER_WINDOW records per file plus one batch
(`BATCH_RECORDS`), plus the x509 certificates read first for the join (at most `MAX_CERTS`,
oldest dropped and counted).

Bad input: a line that cannot be decoded, lacks a required field or holds a bad value is
reported with file:line, counted by kind and skipped; unknown fields are ignored and counted;
a last line cut short (no line break, not decodable) is counted as truncated.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import heapq
import os
import re
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

import msgspec

from tapetum.errors import CaptureFormatError, InputWarning
from tapetum.flows.build import _flow_id, addr_halves, flow_batch
from tapetum.flows.community import community_id_array
from tapetum.records import (
    Alert,
    AppEvent,
    DnsAnswer,
    DnsEvent,
    FlowRef,
    HttpEvent,
    SshEndpoint,
    SshEvent,
    TlsEvent,
)
from tapetum.sources._follow import LineFollower
from tapetum.sources.base import RecordBatch
from tapetum.sources.pcap import ReaderCounters

#: Records (flows + events + alerts) per RecordBatch.
BATCH_RECORDS = 8192
#: Records per file held to put a log's records in time order before the merge (a log is
#: written in completion order, not start order).
REORDER_WINDOW = 4096
#: x509 certificates kept for the ssl join (oldest dropped first, counted).
MAX_CERTS = 100_000
MAX_WARNINGS_PER_KIND = 20
_T = TypeVar("_T", bound=tuple[Any, ...])
MAPPED = ("conn", "dns", "ssl", "http", "ssh", "notice", "x509")
#: Log names a folder holds (rotated archives included when reading, not when following).
LOG_SUFFIXES = (".log", ".log.gz", ".json", ".json.gz")
PROTO_NUMBERS = {"tcp": 6, "udp": 17, "icmp": 1, "icmp6": 58, "sctp": 132}

_ID = ("id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p")
REQUIRED: dict[str, tuple[str, ...]] = {
    "conn": ("ts", "uid", *_ID, "proto"),
    "dns": ("ts", "uid", *_ID),
    "ssl": ("ts", "uid", *_ID),
    "http": ("ts", "uid", *_ID),
    "ssh": ("ts", "uid", *_ID),
    "notice": ("ts", "note"),
    "x509": ("ts",),
}
_COMMON = ("ts", "uid", *_ID, "_path", "_write_ts", "_node_name", "community_id")
#: Standard fields of each mapped log (Zeek 3..7 with common packages); others are counted.
KNOWN: dict[str, frozenset[str]] = {
    "conn": frozenset(
        (
            *_COMMON,
            "proto",
            "service",
            "duration",
            "orig_bytes",
            "resp_bytes",
            "conn_state",
            "local_orig",
            "local_resp",
            "missed_bytes",
            "history",
            "orig_pkts",
            "orig_ip_bytes",
            "resp_pkts",
            "resp_ip_bytes",
            "tunnel_parents",
            "ip_proto",
            "orig_l2_addr",
            "resp_l2_addr",
            "vlan",
            "inner_vlan",
            "speculative_service",
            "id.vlan",
            "id.inner_vlan",
            "app",
            "orig_cc",
            "resp_cc",
        )
    ),
    "dns": frozenset(
        (
            *_COMMON,
            "proto",
            "trans_id",
            "rtt",
            "query",
            "qclass",
            "qclass_name",
            "qtype",
            "qtype_name",
            "rcode",
            "rcode_name",
            "AA",
            "TC",
            "RD",
            "RA",
            "Z",
            "answers",
            "TTLs",
            "rejected",
            "auth",
            "addl",
            "original_query",
            "opcode",
            "opcode_name",
        )
    ),
    "ssl": frozenset(
        (
            *_COMMON,
            "version",
            "cipher",
            "curve",
            "server_name",
            "resumed",
            "last_alert",
            "next_protocol",
            "established",
            "ssl_history",
            "cert_chain_fps",
            "client_cert_chain_fps",
            "cert_chain_fuids",
            "client_cert_chain_fuids",
            "subject",
            "issuer",
            "client_subject",
            "client_issuer",
            "sni_matches_cert",
            "validation_status",
            "validation_code",
            "valid_ct_logs",
            "valid_ct_operators",
            "valid_ct_operators_list",
            "notary.first_seen",
            "notary.last_seen",
            "notary.times_seen",
            "notary.valid",
            "ja3",
            "ja3s",
            "ja4",
            "ja4s",
            "ocsp_status",
        )
    ),
    "http": frozenset(
        (
            *_COMMON,
            "trans_depth",
            "method",
            "host",
            "uri",
            "referrer",
            "version",
            "user_agent",
            "origin",
            "request_body_len",
            "response_body_len",
            "status_code",
            "status_msg",
            "info_code",
            "info_msg",
            "tags",
            "username",
            "password",
            "proxied",
            "orig_fuids",
            "orig_filenames",
            "orig_mime_types",
            "resp_fuids",
            "resp_filenames",
            "resp_mime_types",
            "client_header_names",
            "server_header_names",
            "cookie_vars",
            "uri_vars",
            "post_body",
            "host_header",
        )
    ),
    "ssh": frozenset(
        (
            *_COMMON,
            "version",
            "auth_success",
            "auth_attempts",
            "direction",
            "client",
            "server",
            "cipher_alg",
            "mac_alg",
            "compression_alg",
            "kex_alg",
            "host_key_alg",
            "host_key",
            "remote_location.country_code",
            "remote_location.region",
            "remote_location.city",
            "remote_location.latitude",
            "remote_location.longitude",
            "hasshVersion",
            "hassh",
            "hasshServer",
            "cshka",
            "hasshAlgorithms",
            "sshka",
            "hasshServerAlgorithms",
            "capabilities",
        )
    ),
    "notice": frozenset(
        (
            *_COMMON,
            "fuid",
            "file_mime_type",
            "file_desc",
            "proto",
            "note",
            "msg",
            "sub",
            "src",
            "dst",
            "p",
            "n",
            "peer_name",
            "peer_descr",
            "actions",
            "email_dest",
            "suppress_for",
            "dropped",
            "remote_location.country_code",
            "remote_location.region",
            "remote_location.city",
            "remote_location.latitude",
            "remote_location.longitude",
            "uid",
        )
    ),
    "x509": frozenset(
        (
            "ts",
            "id",
            "fingerprint",
            "_path",
            "_write_ts",
            "_node_name",
            "certificate.version",
            "certificate.serial",
            "certificate.subject",
            "certificate.issuer",
            "certificate.not_valid_before",
            "certificate.not_valid_after",
            "certificate.key_alg",
            "certificate.sig_alg",
            "certificate.key_type",
            "certificate.key_length",
            "certificate.exponent",
            "certificate.curve",
            "san.dns",
            "san.uri",
            "san.email",
            "san.ip",
            "basic_constraints.ca",
            "basic_constraints.path_len",
            "host_cert",
            "client_cert",
            "certificate.cn",
            "certificate.tbs_sig_alg",
        )
    ),
}
#: Zeek notice names that mean one of Tapetum's alert categories; others are "notice".
NOTICE_CATEGORIES = (
    ("Scan::", "scan"),
    ("ICMP::ICMPAddressScan", "scan"),
    ("SSH::Password_Guessing", "brute-force"),
    ("FTP::Bruteforcing", "brute-force"),
    ("Intel::", "intel"),
    ("SSL::", "protocol-anomaly"),
    ("Weird::", "protocol-anomaly"),
    ("DNS::External_Name", "protocol-anomaly"),
)
NOTICE_MITRE = {"scan": ("T1046", "discovery"), "brute-force": ("T1110", "credential-access")}
SID_NOTICE_BASE = 9_100_000


class BadLine(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(slots=True)
class LogCounters(ReaderCounters):
    """ReaderCounters plus what a log source counts. Skipped/unknown/bad records also appear in
    `warnings_by_kind` (the pipeline's per-file report shows those)."""

    records: int = 0
    flows: int = 0
    events: dict[str, int] = field(default_factory=dict)
    alerts: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    unknown_fields: dict[str, int] = field(default_factory=dict)
    certs_joined: int = 0
    certs_missing: int = 0
    certs_dropped: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "flows": self.flows,
            "events": dict(self.events),
            "alerts": self.alerts,
            "skipped": dict(self.skipped),
            "unknown_fields": dict(self.unknown_fields),
            "corrupt_records": self.corrupt_records,
            "truncated_records": self.truncated_records,
            "certs_joined": self.certs_joined,
            "certs_missing": self.certs_missing,
            "certs_dropped": self.certs_dropped,
            "warnings": dict(self.warnings_by_kind),
        }


class Reporter:
    """Counts problems by kind and keeps the first few messages of each kind."""

    def __init__(self, counters: LogCounters, warnings: list[InputWarning]) -> None:
        self.counters = counters
        self.warnings = warnings

    def warn(self, path: str, lineno: int | None, kind: str, message: str) -> None:
        wk = self.counters.warnings_by_kind
        wk[kind] = wk.get(kind, 0) + 1
        if wk[kind] <= MAX_WARNINGS_PER_KIND:
            where = f"line {lineno}: " if lineno is not None else ""
            self.warnings.append(InputWarning(path, None, kind, f"{where}{message}"))

    def bad(self, path: str, lineno: int | None, exc: BadLine, last: bool = False) -> None:
        if last and exc.kind == "corrupt_line":
            self.counters.truncated_records += 1
            self.warn(
                path, lineno, "truncated_line", f"last line cut short ({exc.message}): skipped"
            )
            return
        self.counters.corrupt_records += 1
        self.warn(path, lineno, exc.kind, exc.message + ": skipped")

    def skip(self, log: str, n: int = 1) -> None:
        sk = self.counters.skipped
        sk[log] = sk.get(log, 0) + n
        wk = self.counters.warnings_by_kind
        wk[f"skipped_log.{log}"] = wk.get(f"skipped_log.{log}", 0) + n


# -- values -------------------------------------------------------------------------------------

_ESC = re.compile(rb"\\(x[0-9a-fA-F]{2}|\\)")
_DECIMAL = re.compile(r"^(-?)(\d+)(?:\.(\d*))?$")


def _unescape(b: bytes) -> bytes:
    if b"\\" not in b:
        return b
    return _ESC.sub(lambda m: b"\\" if m.group(1) == b"\\" else bytes([int(m.group(1)[1:], 16)]), b)


def ts_ns(v: Any) -> int:
    """Seconds since the epoch (number, decimal text or ISO 8601 text) as integer ns.
    Decimal text is converted exactly; JSON numbers are rounded to the microsecond Zeek
    writes (a double cannot hold ns since 1970 exactly). ValueError when not a time."""
    if isinstance(v, bool):
        raise ValueError("not a time")
    if isinstance(v, int):
        return v * 1_000_000_000
    if isinstance(v, float):
        if v != v or abs(v) > 1e11:
            raise ValueError("time out of range")
        return round(v * 1e6) * 1000
    if isinstance(v, str):
        m = _DECIMAL.match(v)
        if m:
            frac = (m.group(3) or "")[:9].ljust(9, "0")
            ns = int(m.group(2)) * 1_000_000_000 + int(frac)
            return -ns if m.group(1) else ns
        t = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.UTC)
        delta = t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    raise ValueError(f"not a time: {v!r}")


def _interval_ns(v: Any) -> int:
    if v is None:
        return 0
    if isinstance(v, str):
        return ts_ns(v)
    return round(float(v) * 1e9)


def _int(v: Any, default: int = 0) -> int:
    if v is None:
        return default
    if isinstance(v, bool):
        raise ValueError("not a number")
    return int(v)


def _opt_int(v: Any) -> int | None:
    return None if v is None else _int(v)


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def _list(v: Any) -> list[Any]:
    if v is None:
        return []
    if isinstance(v, list):
        return v
    return [v]


def _time_text(v: Any) -> str | None:
    """A Zeek time as `protocols.tls` writes certificate validity (UTC, seconds)."""
    if v is None:
        return None
    ns = ts_ns(v)
    t = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=ns // 1000)
    return t.strftime("%Y-%m-%dT%H:%M:%S")


# -- lines -> records -----------------------------------------------------------------------------

_DECODER = msgspec.json.Decoder()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


#: Fields that only one mapped log has: the log type of a file whose name does not say it.
_SIGNATURE_FIELDS = (
    ("conn", ("conn_state", "orig_pkts", "orig_ip_bytes")),
    ("dns", ("qtype_name", "query", "trans_id")),
    ("x509", ("certificate.subject", "certificate.serial")),
    ("ssl", ("server_name", "cipher", "cert_chain_fuids", "cert_chain_fps", "validation_status")),
    ("http", ("method", "uri", "status_code", "user_agent")),
    ("ssh", ("auth_success", "auth_attempts", "client", "hassh")),
    ("notice", ("note",)),
)


def guess_log_type(rec: dict[str, Any]) -> str | None:
    for log, names in _SIGNATURE_FIELDS:
        if any(n in rec for n in names):
            return log
    return None


def log_type_from_name(path: str) -> str:
    """conn.log, conn.2024-05-01-10-00-00.log.gz, conn_20240501.log -> conn."""
    name = os.path.basename(path)
    stem = name.split(".", 1)[0]
    return re.sub(r"[_-]\d[\d_:-]*$", "", stem) or stem


class LineParser:
    """Per-file parser state: TSV headers (#separator, #fields, #types …) and the log type.
    A file may switch between TSV and JSON lines; each JSON line stands alone."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.default_log = log_type_from_name(path)
        self.log = self.default_log
        self.sep = b"\t"
        self.set_sep = b","
        self.empty = b"(empty)"
        self.unset = b"-"
        self.fields: list[str] = []
        self.convs: list[Callable[[bytes], Any]] = []

    def parse(self, raw: bytes) -> tuple[str, dict[str, Any]] | None:
        """(log type, record) for a data line, None for a header/blank line. BadLine if bad."""
        line = raw.rstrip(b"\r\n")
        head = line.lstrip()
        if not head:
            return None
        if head[:1] == b"{":
            try:
                obj = _DECODER.decode(head)
            except msgspec.DecodeError as exc:
                raise BadLine("corrupt_line", f"not valid JSON ({exc})") from None
            if not isinstance(obj, dict):
                raise BadLine("corrupt_line", "JSON line is not an object")
            if any(isinstance(v, dict) for v in obj.values()):
                obj = _flatten(obj)
            log = obj.get("_path")
            if log:
                return str(log), obj
            if self.default_log not in MAPPED:  # a file named otherwise (eve-like dumps, c.log)
                self.default_log = guess_log_type(obj) or self.default_log
            return self.default_log, obj
        if head[:1] == b"#":
            self._header(head)
            return None
        if not self.fields:
            raise BadLine("no_header", "TSV line before any #fields header")
        parts = line.split(self.sep)
        if len(parts) != len(self.fields):
            raise BadLine(
                "corrupt_line", f"{len(parts)} fields, the #fields header names {len(self.fields)}"
            )
        rec: dict[str, Any] = {}
        unset = self.unset
        for name, conv, value in zip(self.fields, self.convs, parts, strict=True):
            if value == unset:
                continue  # unset: absent, like JSON logs leave it out
            try:
                rec[name] = conv(value)
            except (ValueError, UnicodeDecodeError) as exc:
                raise BadLine("bad_value", f"field {name}: {exc}") from None
        return self.log, rec

    def _header(self, head: bytes) -> None:
        if head.startswith(b"#separator"):
            val = head[len(b"#separator") :].strip()
            self.sep = _unescape(val) or b"\t"
            return
        key, _, rest = head.partition(self.sep)
        name = key[1:].decode("ascii", "replace")
        values = rest.split(self.sep) if rest else []
        if name == "set_separator" and values:
            self.set_sep = _unescape(values[0])
        elif name == "empty_field" and values:
            self.empty = _unescape(values[0])
        elif name == "unset_field" and values:
            self.unset = _unescape(values[0])
        elif name == "path" and values:
            self.log = values[0].decode("utf-8", "replace")
        elif name == "fields":
            self.fields = [v.decode("utf-8", "replace") for v in values]
            self.convs = [_text] * len(self.fields)
        elif name == "types":
            types = [v.decode("ascii", "replace") for v in values]
            if len(types) == len(self.fields):
                self.convs = [self._conv(t) for t in types]
        # #open, #close, comments: nothing to do

    def _conv(self, t: str) -> Callable[[bytes], Any]:
        m = re.match(r"^(set|vector|table)\[(.+)\]$", t)
        if m:
            inner = self._conv(m.group(2))
            empty, set_sep = self.empty, self.set_sep

            def container(b: bytes) -> list[Any]:
                if b == empty:
                    return []
                return [inner(x) for x in b.split(set_sep)]

            return container
        if t in ("count", "int", "port"):
            return _tsv_int
        if t in ("interval", "double"):
            return _tsv_float
        if t == "bool":
            return _tsv_bool
        # time stays decimal text: converted to ns exactly by ts_ns
        return _text


def _text(b: bytes) -> str:
    return _unescape(b).decode("utf-8", "replace")


def _tsv_int(b: bytes) -> int:
    return int(b)


def _tsv_float(b: bytes) -> float:
    return float(b)


def _tsv_bool(b: bytes) -> bool:
    if b == b"T":
        return True
    if b == b"F":
        return False
    raise ValueError(f"not a bool: {b!r}")


# -- records -> flows, events, alerts --------------------------------------------------------------


@dataclass(slots=True)
class FlowRow:
    start_ns: int
    end_ns: int
    proto: int
    src_ip: str
    dest_ip: str
    src_port: int
    dest_port: int
    pkts_toserver: int
    pkts_toclient: int
    ip_bytes_toserver: int
    ip_bytes_toclient: int
    payload_toserver: int | None
    payload_toclient: int | None
    conn_state: str
    history: str
    uid: str
    state_bits: int | None = None
    bytes_toserver: int | None = None
    bytes_toclient: int | None = None


def rows_to_batch(rows: list[FlowRow]) -> Any:
    """A FlowBatch from flow rows (addresses already validated). IP bytes stand in for wire
    bytes where a log has no link-layer size."""
    pay_s = [r.payload_toserver for r in rows]
    pay_c = [r.payload_toclient for r in rows]
    have_pay = all(v is not None for v in pay_s) and all(v is not None for v in pay_c)
    bits = [r.state_bits for r in rows]
    have_bits = all(b is not None for b in bits)
    return flow_batch(
        start_ns=[r.start_ns for r in rows],
        end_ns=[r.end_ns for r in rows],
        proto=[r.proto for r in rows],
        src_ip=[r.src_ip for r in rows],
        dest_ip=[r.dest_ip for r in rows],
        src_port=[r.src_port for r in rows],
        dest_port=[r.dest_port for r in rows],
        pkts_toserver=[r.pkts_toserver for r in rows],
        pkts_toclient=[r.pkts_toclient for r in rows],
        bytes_toserver=[
            r.bytes_toserver if r.bytes_toserver is not None else r.ip_bytes_toserver for r in rows
        ],
        bytes_toclient=[
            r.bytes_toclient if r.bytes_toclient is not None else r.ip_bytes_toclient for r in rows
        ],
        ip_bytes_toserver=[r.ip_bytes_toserver for r in rows],
        ip_bytes_toclient=[r.ip_bytes_toclient for r in rows],
        payload_bytes_toserver=[int(v or 0) for v in pay_s] if have_pay else None,
        payload_bytes_toclient=[int(v or 0) for v in pay_c] if have_pay else None,
        conn_state=[r.conn_state for r in rows],
        history=[r.history for r in rows],
        state_bits=[int(b or 0) for b in bits] if have_bits and rows else None,
        uid=[r.uid for r in rows],
    )


def flow_ref(key: str, proto: int, src: str, sport: int, dst: str, dport: int) -> FlowRef:
    """The FlowRef of an event whose flow record has uid `key` (same flow_id as its flow)."""
    sh, sl = addr_halves(src)
    dh, dl = addr_halves(dst)
    import numpy as np

    cid = community_id_array(
        np.array([sh], np.uint64),
        np.array([sl], np.uint64),
        np.array([dh], np.uint64),
        np.array([dl], np.uint64),
        np.array([proto]),
        np.array([sport]),
        np.array([dport]),
    )[0]
    return FlowRef(
        flow_id=_flow_id(key),
        community_id=cid,
        src_ip=src,
        src_port=sport,
        dest_ip=dst,
        dest_port=dport,
        proto=_PROTO_NAMES.get(proto, str(proto)),
    )


_PROTO_NAMES = {6: "TCP", 17: "UDP", 1: "ICMP", 58: "IPv6-ICMP", 132: "SCTP"}
_TLS_VERSION = re.compile(r"^(D?TLS)v1(\d)$")


def tls_version(v: str | None) -> str | None:
    if v is None:
        return None
    m = _TLS_VERSION.match(v)
    if m:
        return f"{m.group(1)} 1.{m.group(2)}"
    return {"SSLv3": "SSLv3", "SSLv2": "SSLv2"}.get(v, v)


def ssh_endpoint(banner: str | None) -> SshEndpoint | None:
    """'SSH-2.0-OpenSSH_8.9p1 Ubuntu-3' -> proto 2.0, software OpenSSH_8.9p1, comments."""
    if not banner:
        return None
    text = banner.strip()
    if text.startswith("SSH-"):
        rest = text[4:]
        proto, _, soft = rest.partition("-")
    else:  # Zeek < 2.x logged the software only
        proto, soft = "", text
    software, _, comments = soft.partition(" ")
    return SshEndpoint(proto_version=proto, software_version=software, comments=comments or None)


Item = tuple[str, Any]  # ("flow", FlowRow) | ("event", AppEvent) | ("alert", Alert)


@dataclass(slots=True)
class _Cert:
    subject: str | None
    issuer: str | None
    serial: str | None
    fingerprint: str | None
    notbefore: str | None
    notafter: str | None
    san: tuple[str, ...]


class ZeekMapper:
    """Zeek records -> Tapetum records, with the x509 join and the counts."""

    def __init__(self, rep: Reporter) -> None:
        self.rep = rep
        self.c = rep.counters
        self.certs: OrderedDict[str, _Cert] = OrderedDict()
        self._unknown_seen: dict[tuple[str, str], set[str]] = {}

    def map(self, log: str, rec: dict[str, Any], path: str, lineno: int | None) -> Item | None:
        self.c.records += 1
        if log not in MAPPED:
            self.rep.skip(log)
            return None
        known = KNOWN[log]
        for k in rec:
            if k not in known:
                uk = self.c.unknown_fields
                name = f"{log}.{k}"
                uk[name] = uk.get(name, 0) + 1
                seen = self._unknown_seen.setdefault((path, log), set())
                if k not in seen and len(seen) < 50:
                    seen.add(k)
                    self.rep.warn(
                        path, lineno, "unknown_field", f"{log} field {k!r} unknown: ignored"
                    )
        missing = [f for f in REQUIRED[log] if rec.get(f) is None]
        if log == "x509" and rec.get("id") is None and rec.get("fingerprint") is None:
            missing.append("id/fingerprint")
        if missing:
            self.c.corrupt_records += 1
            self.rep.warn(
                path, lineno, "missing_field", f"{log} record without {', '.join(missing)}: skipped"
            )
            return None
        try:
            item: Item | None = getattr(self, "_" + log)(rec, path, lineno)
        except (ValueError, TypeError, OverflowError) as exc:
            self.c.corrupt_records += 1
            self.rep.warn(path, lineno, "bad_value", f"{log} record: {exc}: skipped")
            return None
        if item is not None:
            kind = item[0]
            if kind == "flow":
                self.c.flows += 1
            elif kind == "event":
                ev = self.c.events
                ev[log] = ev.get(log, 0) + 1
            elif kind == "alert":
                self.c.alerts += 1
        return item

    # each returns an Item or None (x509 feeds the join)

    def _ref(self, rec: dict[str, Any], proto: int | None = None) -> FlowRef:
        src, dst = str(rec["id.orig_h"]), str(rec["id.resp_h"])
        sport, dport = _int(rec["id.orig_p"]), _int(rec["id.resp_p"])
        p = proto if proto is not None else _proto(rec, src)
        return flow_ref(str(rec["uid"]), p, src, sport, dst, dport)

    def _conn(self, rec: dict[str, Any], path: str, lineno: int | None) -> Item:
        src, dst = str(rec["id.orig_h"]), str(rec["id.resp_h"])
        addr_halves(src)
        addr_halves(dst)
        start = ts_ns(rec["ts"])
        pk_s, pk_c = _int(rec.get("orig_pkts")), _int(rec.get("resp_pkts"))
        pay_s, pay_c = _opt_int(rec.get("orig_bytes")), _opt_int(rec.get("resp_bytes"))
        ip_s = _opt_int(rec.get("orig_ip_bytes"))
        ip_c = _opt_int(rec.get("resp_ip_bytes"))
        # Without IP byte counts (old Zeek), estimate 40 header bytes per packet.
        ip_s = ip_s if ip_s is not None else (pay_s or 0) + 40 * pk_s
        ip_c = ip_c if ip_c is not None else (pay_c or 0) + 40 * pk_c
        row = FlowRow(
            start_ns=start,
            end_ns=start + _interval_ns(rec.get("duration")),
            proto=_proto(rec, src),
            src_ip=src,
            dest_ip=dst,
            src_port=_int(rec["id.orig_p"]),
            dest_port=_int(rec["id.resp_p"]),
            pkts_toserver=pk_s,
            pkts_toclient=pk_c,
            ip_bytes_toserver=ip_s,
            ip_bytes_toclient=ip_c,
            # Zeek's orig_bytes is payload from sequence numbers; unset (no payload seen) is 0.
            payload_toserver=pay_s or 0,
            payload_toclient=pay_c or 0,
            conn_state=str(rec.get("conn_state") or ""),
            history=str(rec.get("history") or ""),
            uid=str(rec["uid"]),
        )
        return ("flow", row)

    def _dns(self, rec: dict[str, Any], path: str, lineno: int | None) -> Item:
        query = str(rec.get("query") or "")
        qtype = str(rec.get("qtype_name") or (f"TYPE{rec['qtype']}" if rec.get("qtype") else ""))
        rcode = _str(rec.get("rcode_name"))
        if rcode is None and rec.get("rcode") is not None:
            rcode = f"RCODE{rec['rcode']}"
        answers = [str(a) for a in _list(rec.get("answers"))]
        ttls = _list(rec.get("TTLs"))
        ans = tuple(
            DnsAnswer(
                rrname=query,
                rrtype=_answer_type(a, qtype),
                rdata=a,
                ttl=int(float(ttls[k])) if k < len(ttls) and ttls[k] is not None else 0,
            )
            for k, a in enumerate(answers)
        )
        flags = tuple(f.lower() for f in ("AA", "TC", "RD", "RA") if rec.get(f) is True)
        rtt = rec.get("rtt")
        ev = DnsEvent(
            ts_ns=ts_ns(rec["ts"]),
            flow=self._ref(rec),
            id=_int(rec.get("trans_id")),
            rrname=query,
            rrtype=qtype,
            type="answer" if rcode is not None or answers else "query",
            rcode=rcode,
            answers=ans,
            rtt_ms=None if rtt is None else float(rtt) * 1000.0,
            flags=flags,
        )
        return ("event", ev)

    def _x509(self, rec: dict[str, Any], path: str, lineno: int | None) -> None:
        cert = _Cert(
            subject=_str(rec.get("certificate.subject")),
            issuer=_str(rec.get("certificate.issuer")),
            serial=_str(rec.get("certificate.serial")),
            fingerprint=_str(rec.get("fingerprint")),
            notbefore=_time_text(rec.get("certificate.not_valid_before")),
            notafter=_time_text(rec.get("certificate.not_valid_after")),
            san=tuple(str(s) for s in _list(rec.get("san.dns"))),
        )
        for key in (rec.get("id"), rec.get("fingerprint")):
            if key is not None:
                self.certs[str(key)] = cert
                self.certs.move_to_end(str(key))
        while len(self.certs) > MAX_CERTS:
            self.certs.popitem(last=False)
            self.c.certs_dropped += 1
        return None

    def _ssl(self, rec: dict[str, Any], path: str, lineno: int | None) -> Item:
        chain = _list(rec.get("cert_chain_fuids")) or _list(rec.get("cert_chain_fps"))
        cert = self.certs.get(str(chain[0])) if chain else None
        if chain:
            if cert is not None:
                self.c.certs_joined += 1
            else:
                self.c.certs_missing += 1
        subject = _str(rec.get("subject")) or (cert.subject if cert else None)
        issuer = _str(rec.get("issuer")) or (cert.issuer if cert else None)
        status = _str(rec.get("validation_status"))
        self_signed: bool | None = None
        if status == "self signed certificate" or (subject and subject == issuer):
            self_signed = True
        elif subject and issuer:
            self_signed = False
        ja3 = rec.get("ja3")
        ja3s = rec.get("ja3s")
        alpn = _str(rec.get("next_protocol"))
        ev = TlsEvent(
            ts_ns=ts_ns(rec["ts"]),
            flow=self._ref(rec, 6),
            sni=_str(rec.get("server_name")),
            version=tls_version(_str(rec.get("version"))),
            cipher_suite=_str(rec.get("cipher")),
            server_alpns=(alpn,) if alpn else (),
            ja3_hash=_str(ja3),
            ja3s_hash=_str(ja3s),
            ja4=_str(rec.get("ja4")),
            subject=subject,
            issuerdn=issuer,
            serial=cert.serial if cert else None,
            fingerprint=cert.fingerprint if cert else None,
            notbefore=cert.notbefore if cert else None,
            notafter=cert.notafter if cert else None,
            self_signed=self_signed,
            san=cert.san if cert else (),
        )
        return ("event", ev)

    def _http(self, rec: dict[str, Any], path: str, lineno: int | None) -> Item:
        version = _str(rec.get("version"))
        mimes = _list(rec.get("resp_mime_types"))
        ev = HttpEvent(
            ts_ns=ts_ns(rec["ts"]),
            flow=self._ref(rec, 6),
            http_method=str(rec.get("method") or ""),
            hostname=_str(rec.get("host")),
            url=str(rec.get("uri") or ""),
            protocol=f"HTTP/{version}" if version else None,
            http_user_agent=_str(rec.get("user_agent")),
            status=_opt_int(rec.get("status_code")),
            length=_opt_int(rec.get("response_body_len")),
            http_content_type=str(mimes[0]) if mimes else None,
            http_refer=_str(rec.get("referrer")),
            authorization_basic=rec.get("username") is not None,
        )
        return ("event", ev)

    def _ssh(self, rec: dict[str, Any], path: str, lineno: int | None) -> Item:
        ev = SshEvent(
            ts_ns=ts_ns(rec["ts"]),
            flow=self._ref(rec, 6),
            client=ssh_endpoint(_str(rec.get("client"))),
            server=ssh_endpoint(_str(rec.get("server"))),
        )
        return ("event", ev)

    def _notice(self, rec: dict[str, Any], path: str, lineno: int | None) -> Item:
        note = str(rec["note"])
        ts = ts_ns(rec["ts"])
        src = _str(rec.get("src")) or _str(rec.get("id.orig_h"))
        dst = _str(rec.get("dst")) or _str(rec.get("id.resp_h"))
        category = next((c for prefix, c in NOTICE_CATEGORIES if note.startswith(prefix)), "notice")
        technique, tactic = NOTICE_MITRE.get(category, ("", ""))
        msg = str(rec.get("msg") or note)
        sub = _str(rec.get("sub"))
        port = rec.get("p") if rec.get("p") is not None else rec.get("id.resp_p")
        key = f"zeek|{note}|{ts}|{src}|{dst}|{msg}"
        alert = Alert(
            alert_id=hashlib.sha1(key.encode()).hexdigest()[:16],
            ts_ns=ts,
            signature=f"zeek.{note}",
            signature_id=SID_NOTICE_BASE + zlib.crc32(note.encode()) % 100_000,
            category=category,
            severity=2,
            score=0.8,
            explanation=f"Zeek notice {note}: {msg}" + (f" ({sub})" if sub else ""),
            entity=src or dst or "unknown",
            mitre_technique_id=(technique,) if technique else (),
            mitre_tactic=(tactic,) if tactic else (),
            src_ip=src,
            dest_ip=dst,
            dest_port=_opt_int(port),
            first_ts_ns=ts,
            last_ts_ns=ts,
        )
        return ("alert", alert)


def _proto(rec: dict[str, Any], src: str) -> int:
    ip_proto = rec.get("ip_proto")
    if ip_proto is not None:
        return _int(ip_proto)
    name = str(rec.get("proto") or "").lower()
    p = PROTO_NUMBERS.get(name)
    if p is None:
        raise ValueError(f"unknown transport protocol {name!r}")
    if p == 1 and ":" in src:
        return 58
    return p


def _answer_type(answer: str, qtype: str) -> str:
    if ":" in answer and answer.count(":") >= 2:
        return "AAAA"
    if re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", answer):
        return "A"
    if answer.startswith("TXT "):
        return "TXT"
    return qtype if qtype not in ("A", "AAAA") else "CNAME"


# -- batches ------------------------------------------------------------------------------------


class Batcher:
    """Collects mapped items into RecordBatches (events first in the pipeline's order)."""

    def __init__(self) -> None:
        self.rows: list[FlowRow] = []
        self.events: list[AppEvent] = []
        self.alerts: list[Alert] = []
        self.records = 0

    def add(self, item: Item | None, records: int = 1) -> None:
        self.records += records
        if item is None:
            return
        kind, obj = item
        if kind == "flow":
            self.rows.append(obj)
        elif kind == "event":
            self.events.append(obj)
        else:
            self.alerts.append(obj)

    def size(self) -> int:
        return len(self.rows) + len(self.events) + len(self.alerts)

    def take(self) -> RecordBatch | None:
        if not self.records and not self.size():
            return None
        self.events.sort(key=lambda e: e.ts_ns)
        self.alerts.sort(key=lambda a: (a.ts_ns, a.alert_id))
        rb = RecordBatch(
            flows=rows_to_batch(self.rows) if self.rows else None,
            events=self.events,
            alerts=self.alerts,
            records=self.records,
        )
        self.rows, self.events, self.alerts, self.records = [], [], [], 0
        return rb


# -- files ----------------------------------------------------------------------------------------


def _open_lines(path: str) -> IO[bytes]:
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        gz: IO[bytes] = gzip.open(path, "rb")  # type: ignore[assignment]  # noqa: SIM115
        return gz
    return open(path, "rb")


def is_log_name(name: str) -> bool:
    return name.endswith(LOG_SUFFIXES) and not name.startswith(".")


def peek_log_type(path: str) -> str:
    """The log type of a file from its first records (#path, _path), else its name; "*" when
    JSON lines name their own _path (one stream holding many logs)."""
    try:
        with _open_lines(path) as fh:
            for _ in range(20):
                line = fh.readline(1 << 16)
                if not line:
                    break
                head = line.lstrip()
                if head.startswith(b"#path"):
                    parts = head.split(None, 1)
                    return parts[1].strip().decode("utf-8", "replace") if len(parts) > 1 else ""
                if head.startswith(b"{"):
                    if b'"_path"' in head:
                        return "*"
                    name = log_type_from_name(path)
                    if name in MAPPED:
                        return name
                    try:
                        obj = _DECODER.decode(head)
                    except msgspec.DecodeError:
                        return name
                    return (guess_log_type(obj) if isinstance(obj, dict) else None) or name
                if head and not head.startswith(b"#"):
                    break
    except (OSError, EOFError, zlib.error):
        pass
    return log_type_from_name(path)


class ZeekSource:
    """A Zeek log file or folder of logs, read to its end (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.format = "zeek"
        self.counters = LogCounters()
        self.warnings: list[InputWarning] = []
        self.rep = Reporter(self.counters, self.warnings)
        self.mapper = ZeekMapper(self.rep)
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if is_log_name(n))
            self.files = [
                os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n))
            ]
            if not self.files:
                raise CaptureFormatError(path, None, "folder holds no Zeek logs (*.log, *.json)")
        elif os.path.isfile(path):
            self.files = [path]
        else:
            raise CaptureFormatError(path, None, "no such file or folder")
        self.total_bytes = sum(os.path.getsize(f) for f in self.files)
        self._done_bytes = 0
        self._open: list[IO[bytes]] = []

    @property
    def progress_bytes(self) -> int:
        return min(self._done_bytes, self.total_bytes)

    def __iter__(self) -> Iterator[RecordBatch]:
        types = {f: peek_log_type(f) for f in self.files}
        # x509 first: the ssl records of a folder join their certificates (bounded, see
        # MAX_CERTS); the second pass over those files skips their x509 lines.
        for f in self.files:
            if types[f] in ("x509", "*"):
                for _ in self._records(f, 0, x509=True):
                    pass
        streams: list[Iterable[tuple[int, int, int, Item | None, int]]] = []
        for k, f in enumerate(self.files):
            t = types[f]
            if t not in ("*", "x509") and t not in MAPPED:
                n = self._count_lines(f)
                self.counters.records += n
                self.rep.skip(t, n)
                continue
            streams.append(_reorder(self._records(f, k, x509=False), REORDER_WINDOW))
        batch = Batcher()
        for _key, _k, _seq, item, records in heapq.merge(*streams):
            batch.add(item, records)
            if batch.size() >= BATCH_RECORDS:
                rb = batch.take()
                if rb is not None:
                    yield rb
        rb = batch.take()
        if rb is not None:
            yield rb

    def close(self) -> None:
        """Files are opened and closed per pass; nothing stays open between batches."""

    def _count_lines(self, path: str) -> int:
        n = 0
        try:
            with _open_lines(path) as fh:
                for line in fh:
                    self._done_bytes += len(line)
                    s = line.strip()
                    if s and not s.startswith(b"#"):
                        n += 1
        except (OSError, EOFError, zlib.error) as exc:
            self.rep.warn(path, None, "read_error", f"cannot read to the end: {exc}")
        return n

    def _records(
        self, path: str, k: int, *, x509: bool
    ) -> Iterator[tuple[int, int, int, Item | None, int]]:
        """(merge key ns, file index, sequence, item, records) for each data line of a file.
        With x509=True only certificates are read (for the join) and nothing is yielded or
        reported; with x509=False certificate lines are passed over."""
        parser = LineParser(path)
        seq = 0
        lineno = 0
        try:
            fh = _open_lines(path)
        except OSError as exc:
            if not x509:
                self.rep.warn(path, None, "read_error", f"cannot open: {exc.strerror}")
            return
        last_key = 0
        with fh:
            it = iter(fh)
            nxt = _next_line(it, self, path, lineno, quiet=x509)
            while nxt is not None:
                line = nxt
                lineno += 1
                if not x509:
                    self._done_bytes += len(line)
                nxt = _next_line(it, self, path, lineno, quiet=x509)
                is_last = nxt is None and not line.endswith(b"\n")
                try:
                    parsed = parser.parse(line)
                except BadLine as exc:
                    if not x509:
                        self.counters.records += 1
                        self.rep.bad(path, lineno, exc, last=is_last)
                    continue
                if parsed is None or (parsed[0] == "x509") != x509:
                    continue
                log, rec = parsed
                item = self.mapper.map(log, rec, path, lineno)
                if x509:
                    continue
                key = _merge_key(item, last_key)
                last_key = key
                seq += 1
                yield key, k, seq, item, 1


def _next_line(
    it: Iterator[bytes], src: ZeekSource, path: str, lineno: int, *, quiet: bool = False
) -> bytes | None:
    try:
        return next(it)
    except StopIteration:
        return None
    except (OSError, EOFError, zlib.error) as exc:
        if quiet:
            return None
        src.counters.truncated_records += 1
        src.rep.warn(
            path,
            lineno + 1,
            "truncated_gzip",
            f"compressed stream damaged after line {lineno} ({exc}): rest skipped",
        )
        return None


def _reorder(stream: Iterable[_T], window: int) -> Iterator[_T]:
    """Sort a nearly sorted stream with a bounded heap: a log is written when a record completes
    (an HTTP transaction, a connection), so its keys are out of order by a little."""
    heap: list[_T] = []
    for rec in stream:
        if len(heap) >= window:
            yield heapq.heappushpop(heap, rec)
        else:
            heapq.heappush(heap, rec)
    while heap:
        yield heapq.heappop(heap)


def _merge_key(item: Item | None, last: int) -> int:
    if item is None:
        return last  # skipped records keep their file's place
    kind, obj = item
    if kind == "flow":
        return int(obj.end_ns)  # written when it ends: after its events
    return int(obj.ts_ns)


# -- follow -------------------------------------------------------------------------------------


_CURRENT = re.compile(r"^[A-Za-z0-9_-]+\.(log|json)$")


def is_current_log(name: str) -> bool:
    """Names Zeek writes to (conn.log, dns.json); rotated archives (conn.2024-….log.gz) are not
    followed as new files: they hold what was already read under the current name."""
    return bool(_CURRENT.match(name))


class ZeekFollower(LineFollower):
    """Follow a Zeek log folder (or one log file) as it grows and rotates.

    `poll()` returns a RecordBatch of the complete lines written since the last call (None when
    nothing new), with each poll's x509 records mapped before its ssl records. `finish()`
    hands out a last line still without its line break (as a truncated record if it does not
    decode) and closes the files. Offsets are kept by inode (see `sources._follow.Tailer`).
    """

    def __init__(self, path: str, *, from_start: bool = True, linger_s: float = 5.0) -> None:
        from tapetum.sources._follow import Tailer

        self.path = path
        self.format = "zeek"
        self.counters = LogCounters()
        self.warnings: list[InputWarning] = []
        self.rep = Reporter(self.counters, self.warnings)
        self.mapper = ZeekMapper(self.rep)
        self.tailer = Tailer(
            [path], accept=is_current_log, from_start=from_start, linger_s=linger_s
        )
        self._parsers: dict[tuple[int, int], LineParser] = {}

    def close(self) -> None:
        self.tailer.close()
        self.warnings[:0] = [w for w in self.tailer.warnings if w not in self.warnings]
        self.tailer.warnings.clear()

    def _batch(self, lines: list[tuple[Any, bool]]) -> RecordBatch | None:
        """Lines (with "is a last line without its line break") -> one RecordBatch."""
        if not lines:
            return None
        parsed: list[tuple[str, dict[str, Any], str, int]] = []
        for ln, last in lines:
            p = self._parsers.get(ln.key)
            if p is None:
                # the parser keeps the file's TSV header; a new inode is a new file
                p = self._parsers[ln.key] = LineParser(ln.path)
                if len(self._parsers) > 4096:
                    self._parsers.pop(next(iter(self._parsers)))
            try:
                got = p.parse(ln.data)
            except BadLine as exc:
                self.counters.records += 1
                self.rep.bad(ln.path, ln.lineno, exc, last=last)
                continue
            if got is not None:
                parsed.append((got[0], got[1], ln.path, ln.lineno))
        batch = Batcher()
        for log, rec, path, lineno in parsed:  # certificates before the ssl records
            if log == "x509":
                batch.add(self.mapper.map(log, rec, path, lineno))
        for log, rec, path, lineno in parsed:
            if log != "x509":
                batch.add(self.mapper.map(log, rec, path, lineno))
        return batch.take()


# -- probe --------------------------------------------------------------------------------------


def probe(path: str, head: bytes) -> bool:
    """Zeek logs by content: a TSV header (#separator), JSON lines with `_path` or a uid with
    id.orig_h; a folder holding conn/dns/ssl/http logs."""
    if not head:
        if not os.path.isdir(path):
            return False
        try:
            names = os.listdir(path)
        except OSError:
            return False
        return any(log_type_from_name(n) in MAPPED and is_log_name(n) for n in names)
    first = head.lstrip()[:4096]
    if first.startswith(b"#separator") or b"\n#separator " in first:
        return True  # (a comment line may come first, as in Zeek's own test baselines)
    if first.startswith(b"{"):
        line = first.split(b"\n", 1)[0]
        if b'"event_type"' in line:
            return False  # Suricata EVE
        return (
            b'"_path"' in line
            or (b'"uid"' in line and b'"id.orig_h"' in line)
            or (b'"id.orig_h"' in line and b'"ts"' in line)
        )
    return False


def open_source(path: str) -> ZeekSource:
    return ZeekSource(path)
