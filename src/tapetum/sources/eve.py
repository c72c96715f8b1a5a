"""Suricata EVE JSON: a file (plain or gzip), a file followed as it grows, or a Redis list/channel.

Mapped event types: flow -> flows (`flows.build.flow_batch`, keyed by Suricata's flow_id, so the
events of a flow carry the same Tapetum flow_id), dns (v1 and v2 formats) -> DnsEvent,
tls -> TlsEvent, http -> HttpEvent, ssh -> SshEvent, alert -> Alert (Suricata's signature, sid,
severity, src/dest; entity = src_ip; ATT&CK ids from the rule metadata when present) so Suricata's
alerts join Tapetum's incidents. Every other event type (anomaly, fileinfo, stats, …) is counted as
skipped by type. Suricata writes a flow's events as they happen and the flow at its end, so file
order already gives events before their flow; each batch hands events to detectors first.

Redis (`RedisEve`): Suricata's redis output LPUSHes to a list (mode list) or PUBLISHes to a
channel. Lists are consumed reliably: each batch is moved atomically (MULTI of LMOVE) from the
list into a processing list `<key>:tapetum-processing`; it is removed from there (DEL) only by
`ack()`, called once the batch has been handed to the pipeline and the sinks flushed (the next
`poll()` acknowledges the previous batch too); the next batch is moved only after that. After a
reconnect or a restart the processing list is read first: nothing accepted is lost (an event may
be processed twice if Tapetum dies between the sinks' flush and the ack). Channels are pub/sub:
Redis keeps nothing for a subscriber that is away, so messages published while disconnected are
lost by Redis itself (at most once; use list mode when that matters). Disconnects are retried
with exponential backoff (0.1 s doubling to 5 s) and counted.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import time
import zlib
from collections.abc import Iterator
from typing import IO, Any

import msgspec

from tapetum.errors import CaptureFormatError, InputWarning
from tapetum.flows.build import addr_halves, state_bits_from_flags
from tapetum.records import (
    Alert,
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
from tapetum.sources.zeek import (
    BATCH_RECORDS,
    Batcher,
    FlowRow,
    Item,
    LogCounters,
    Reporter,
    flow_ref,
    ts_ns,
)

MAPPED = ("flow", "dns", "tls", "http", "ssh", "alert")
PROTO_NUMBERS = {"TCP": 6, "UDP": 17, "ICMP": 1, "IPV6-ICMP": 58, "SCTP": 132}
#: Suricata severity (1 high .. 3 low, sometimes 4) -> Tapetum alert score.
SEVERITY_SCORE = {1: 0.9, 2: 0.75, 3: 0.6}
#: Suricata classtype descriptions -> Tapetum alert categories; others keep "intel" when the rule
#: is a reputation list, else Suricata's own text.
CATEGORIES = {
    "Detection of a Network Scan": "scan",
    "Attempted Information Leak": "scan",
    "Network Scan": "scan",
    "A Network Trojan was detected": "c2-beacon",
    "Malware Command and Control Activity Detected": "c2-beacon",
    "Attempted Denial of Service": "dos",
    "Denial of Service": "dos",
    "Detection of a Denial of Service Attack": "dos",
    "Generic Protocol Command Decode": "protocol-anomaly",
    "Potentially Bad Traffic": "anomaly",
    "Misc Attack": "intel",
    "Attempted User Privilege Gain": "brute-force",
    "Unsuccessful User Privilege Gain": "brute-force",
}

_DECODER = msgspec.json.Decoder()


def _tactic(name: str) -> str:
    """ET metadata 'Credential_Access' -> ATT&CK tactic 'credential-access'."""
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def _s(v: Any) -> str | None:
    return None if v is None else str(v)


class EveMapper:
    def __init__(self, rep: Reporter, origin: str) -> None:
        self.rep = rep
        self.c = rep.counters
        self.origin = origin

    def map_line(
        self, raw: bytes, where: str, lineno: int | None, last: bool = False
    ) -> Item | None:
        """One EVE line -> an item (or None: skipped/bad, reported)."""
        line = raw.strip()
        if not line:
            return None
        self.c.records += 1
        try:
            obj = _DECODER.decode(line)
        except msgspec.DecodeError as exc:
            kind = "truncated_line" if last else "corrupt_line"
            if last:
                self.c.truncated_records += 1
            else:
                self.c.corrupt_records += 1
            self.rep.warn(where, lineno, kind, f"not valid JSON ({exc}): skipped")
            return None
        if not isinstance(obj, dict):
            self.c.corrupt_records += 1
            self.rep.warn(where, lineno, "corrupt_line", "JSON line is not an object: skipped")
            return None
        return self.map(obj, where, lineno, line)

    def map(self, ev: dict[str, Any], where: str, lineno: int | None, raw: bytes) -> Item | None:
        et = str(ev.get("event_type") or "")
        if et not in MAPPED:
            self.rep.skip(et or "(no event_type)")
            return None
        try:
            item: Item | None = getattr(self, "_" + et)(ev, raw, lineno)
        except (KeyError, ValueError, TypeError, OverflowError) as exc:
            self.c.corrupt_records += 1
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            self.rep.warn(where, lineno, "bad_record", f"{et} event: {what}: skipped")
            return None
        if item is not None:
            if item[0] == "flow":
                self.c.flows += 1
            elif item[0] == "event":
                self.c.events[et] = self.c.events.get(et, 0) + 1
            else:
                self.c.alerts += 1
        return item

    @staticmethod
    def _proto(ev: dict[str, Any]) -> int:
        p = ev.get("proto")
        if isinstance(p, int):
            return p
        name = str(p or "").upper()
        if name.isdigit():
            return int(name)
        if name not in PROTO_NUMBERS:
            raise ValueError(f"unknown protocol {p!r}")
        return PROTO_NUMBERS[name]

    def _key(self, ev: dict[str, Any]) -> str:
        return f"eve:{ev['flow_id']}"

    def _ref(self, ev: dict[str, Any]) -> FlowRef:
        return flow_ref(
            self._key(ev),
            self._proto(ev),
            str(ev["src_ip"]),
            int(ev.get("src_port") or 0),
            str(ev["dest_ip"]),
            int(ev.get("dest_port") or 0),
        )

    def _flow(self, ev: dict[str, Any], raw: bytes, lineno: int | None) -> Item:
        f = ev["flow"]
        src, dst = str(ev["src_ip"]), str(ev["dest_ip"])
        addr_halves(src)
        addr_halves(dst)
        start = ts_ns(f["start"])
        end = ts_ns(f["end"]) if f.get("end") else start
        tcp = ev.get("tcp") or {}
        bits = None
        if tcp:
            ts_flags = int(str(tcp.get("tcp_flags_ts") or "0"), 16)
            tc_flags = int(str(tcp.get("tcp_flags_tc") or "0"), 16)
            bits = state_bits_from_flags(ts_flags, tc_flags)
        pk_s, pk_c = int(f.get("pkts_toserver") or 0), int(f.get("pkts_toclient") or 0)
        by_s, by_c = int(f.get("bytes_toserver") or 0), int(f.get("bytes_toclient") or 0)
        row = FlowRow(
            start_ns=start,
            end_ns=max(end, start),
            proto=self._proto(ev),
            src_ip=src,
            dest_ip=dst,
            src_port=int(ev.get("src_port") or 0),
            dest_port=int(ev.get("dest_port") or 0),
            pkts_toserver=pk_s,
            pkts_toclient=pk_c,
            # EVE counts link-layer bytes; IP and payload bytes are not in the record: IP bytes
            # are taken as the link-layer bytes and payload estimated by flow_batch's default.
            ip_bytes_toserver=by_s,
            ip_bytes_toclient=by_c,
            payload_toserver=None,
            payload_toclient=None,
            conn_state="",
            history="",
            uid=self._key(ev),
            state_bits=bits if bits is not None else 0,
            bytes_toserver=by_s,
            bytes_toclient=by_c,
        )
        return ("flow", row)

    def _dns(self, ev: dict[str, Any], raw: bytes, lineno: int | None) -> Item | None:
        d = ev["dns"]
        ts = ts_ns(ev["timestamp"])
        typ = str(d.get("type") or "")
        if typ == "answer" or "answers" in d or "grouped" in d:
            answers: list[DnsAnswer] = []
            for a in d.get("answers") or []:
                answers.append(
                    DnsAnswer(
                        rrname=str(a.get("rrname") or ""),
                        rrtype=str(a.get("rrtype") or ""),
                        ttl=int(a.get("ttl") or 0),
                        rdata=str(a.get("rdata") or ""),
                    )
                )
            if not answers and isinstance(d.get("grouped"), dict):  # v2 "grouped" format
                for rrtype, values in d["grouped"].items():
                    for v in values:
                        answers.append(
                            DnsAnswer(
                                rrname=str(d.get("rrname") or ""),
                                rrtype=str(rrtype),
                                ttl=0,
                                rdata=str(v),
                            )
                        )
            queries = d.get("queries") or []
            rrname = d.get("rrname") or (queries[0].get("rrname") if queries else None)
            rrtype = d.get("rrtype") or (queries[0].get("rrtype") if queries else None)
            if rrname is None and answers:
                rrname = answers[0].rrname
            flags = tuple(k for k in ("aa", "tc", "rd", "ra") if d.get(k) is True)
            e = DnsEvent(
                ts_ns=ts,
                flow=self._ref(ev),
                id=int(d.get("id") or 0),
                rrname=str(rrname or ""),
                rrtype=str(rrtype or ""),
                type="answer",
                rcode=_s(d.get("rcode")),
                answers=tuple(answers),
                flags=flags,
            )
            return ("event", e)
        # a query record (v1 and v2 alike)
        e = DnsEvent(
            ts_ns=ts,
            flow=self._ref(ev),
            id=int(d.get("id") or 0),
            rrname=str(d.get("rrname") or ""),
            rrtype=str(d.get("rrtype") or ""),
            type="query",
        )
        return ("event", e)

    def _tls(self, ev: dict[str, Any], raw: bytes, lineno: int | None) -> Item:
        t = ev["tls"]
        ja3 = t.get("ja3") or {}
        ja3s = t.get("ja3s") or {}
        subject, issuer = _s(t.get("subject")), _s(t.get("issuerdn"))
        e = TlsEvent(
            ts_ns=ts_ns(ev["timestamp"]),
            flow=self._ref(ev),
            sni=_s(t.get("sni")),
            version=_s(t.get("version")),
            ja3_hash=_s(ja3.get("hash")),
            ja3_string=_s(ja3.get("string")),
            ja3s_hash=_s(ja3s.get("hash")),
            ja3s_string=_s(ja3s.get("string")),
            ja4=_s(t.get("ja4")),
            subject=subject,
            issuerdn=issuer,
            serial=_s(t.get("serial")),
            fingerprint=_s(t.get("fingerprint")),
            notbefore=_s(t.get("notbefore")),
            notafter=_s(t.get("notafter")),
            self_signed=(subject == issuer) if subject and issuer else None,
            client_alpns=tuple(str(x) for x in t.get("client_alpns") or ()),
            server_alpns=tuple(str(x) for x in t.get("server_alpns") or ()),
        )
        return ("event", e)

    def _http(self, ev: dict[str, Any], raw: bytes, lineno: int | None) -> Item:
        h = ev["http"]
        e = HttpEvent(
            ts_ns=ts_ns(ev["timestamp"]),
            flow=self._ref(ev),
            http_method=str(h.get("http_method") or ""),
            hostname=_s(h.get("hostname")),
            url=str(h.get("url") or ""),
            protocol=_s(h.get("protocol")),
            http_user_agent=_s(h.get("http_user_agent")),
            status=int(h["status"]) if h.get("status") is not None else None,
            length=int(h["length"]) if h.get("length") is not None else None,
            http_content_type=_s(h.get("http_content_type")),
            http_refer=_s(h.get("http_refer")),
        )
        return ("event", e)

    def _ssh(self, ev: dict[str, Any], raw: bytes, lineno: int | None) -> Item:
        s = ev["ssh"]

        def ep(d: Any) -> SshEndpoint | None:
            if not isinstance(d, dict):
                return None
            return SshEndpoint(
                proto_version=str(d.get("proto_version") or ""),
                software_version=str(d.get("software_version") or ""),
                comments=_s(d.get("comments")),
            )

        e = SshEvent(
            ts_ns=ts_ns(ev["timestamp"]),
            flow=self._ref(ev),
            client=ep(s.get("client")),
            server=ep(s.get("server")),
        )
        return ("event", e)

    def _alert(self, ev: dict[str, Any], raw: bytes, lineno: int | None) -> Item:
        a = ev["alert"]
        ts = ts_ns(ev["timestamp"])
        sev = int(a.get("severity") or 3)
        meta = a.get("metadata") or {}
        techniques = tuple(str(x) for x in meta.get("mitre_technique_id") or ())
        tactics = tuple(_tactic(str(x)) for x in meta.get("mitre_tactic_name") or ())
        cat_text = str(a.get("category") or "")
        category = CATEGORIES.get(cat_text, cat_text or "intel")
        src, dst = _s(ev.get("src_ip")), _s(ev.get("dest_ip"))
        sig = str(a.get("signature") or f"suricata sid {a.get('signature_id')}")
        flow = ev.get("flow") or {}
        first = ts_ns(flow["start"]) if flow.get("start") else ts
        fid = ev.get("flow_id")
        from tapetum.flows.build import _flow_id

        alert = Alert(
            alert_id=hashlib.sha1(b"eve|" + self.origin.encode() + b"|" + raw).hexdigest()[:16],
            ts_ns=ts,
            signature=sig,
            signature_id=int(a.get("signature_id") or 0),
            category=category,
            severity=min(max(sev, 1), 3),
            score=SEVERITY_SCORE.get(sev, 0.5),
            explanation=f"Suricata alert: {sig} (sid {a.get('signature_id')}, "
            f"{cat_text or 'no category'}, severity {sev}) from {src}:{ev.get('src_port')} "
            f"to {dst}:{ev.get('dest_port')} {ev.get('proto', '')}".rstrip(),
            entity=src or dst or "unknown",
            mitre_technique_id=techniques,
            mitre_tactic=tactics,
            src_ip=src,
            src_port=int(ev["src_port"]) if ev.get("src_port") is not None else None,
            dest_ip=dst,
            dest_port=int(ev["dest_port"]) if ev.get("dest_port") is not None else None,
            proto=_s(ev.get("proto")),
            flow_id=_flow_id(self._key(ev)) if fid is not None else None,
            community_id=_s(ev.get("community_id")),
            first_ts_ns=min(first, ts),
            last_ts_ns=ts,
        )
        return ("alert", alert)


def _open(path: str) -> IO[bytes]:
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        gz: IO[bytes] = gzip.open(path, "rb")  # type: ignore[assignment]  # noqa: SIM115
        return gz
    return open(path, "rb")


class EveSource:
    """An EVE JSON file read to its end."""

    def __init__(self, path: str) -> None:
        if not os.path.isfile(path):
            raise CaptureFormatError(path, None, "no such file")
        self.path = path
        self.format = "suricata-eve"
        self.counters = LogCounters()
        self.warnings: list[InputWarning] = []
        self.rep = Reporter(self.counters, self.warnings)
        self.mapper = EveMapper(self.rep, os.path.abspath(path))
        self.total_bytes = os.path.getsize(path)
        self._done = 0

    @property
    def progress_bytes(self) -> int:
        return min(self._done, self.total_bytes)

    def __iter__(self) -> Iterator[RecordBatch]:
        batch = Batcher()
        try:
            fh = _open(self.path)
        except OSError as exc:
            raise CaptureFormatError(self.path, None, exc.strerror or str(exc)) from None
        with fh:
            it = iter(fh)
            lineno = 0
            nxt = self._next(it, lineno)
            while nxt is not None:
                line = nxt
                lineno += 1
                self._done += len(line)
                nxt = self._next(it, lineno)
                last = nxt is None and not line.endswith(b"\n")
                item = self.mapper.map_line(line, self.path, lineno, last)
                batch.add(item, 1 if line.strip() else 0)
                if batch.size() >= BATCH_RECORDS:
                    rb = batch.take()
                    if rb is not None:
                        yield rb
        rb = batch.take()
        if rb is not None:
            yield rb

    def _next(self, it: Iterator[bytes], lineno: int) -> bytes | None:
        try:
            return next(it)
        except StopIteration:
            return None
        except (OSError, EOFError, zlib.error) as exc:
            self.counters.truncated_records += 1
            self.rep.warn(
                self.path,
                lineno + 1,
                "truncated_gzip",
                f"compressed stream damaged after line {lineno} ({exc}): rest skipped",
            )
            return None

    def close(self) -> None:
        pass


class EveFollower(LineFollower):
    """Follow an EVE file as it grows (and as Suricata rotates it): see `sources._follow`."""

    def __init__(self, path: str, *, from_start: bool = True, linger_s: float = 5.0) -> None:
        from tapetum.sources._follow import Tailer

        self.path = path
        self.format = "suricata-eve"
        self.counters = LogCounters()
        self.warnings: list[InputWarning] = []
        self.rep = Reporter(self.counters, self.warnings)
        self.mapper = EveMapper(self.rep, os.path.abspath(path))
        self.tailer = Tailer([path], from_start=from_start, linger_s=linger_s)

    def close(self) -> None:
        self.tailer.close()
        self.warnings.extend(self.tailer.warnings)
        self.tailer.warnings.clear()

    def _batch(self, lines: list[tuple[Any, bool]]) -> RecordBatch | None:
        if not lines:
            return None
        batch = Batcher()
        for ln, last in lines:
            item = self.mapper.map_line(ln.data, ln.path, ln.lineno, last)
            batch.add(item, 1 if ln.data.strip() else 0)
        return batch.take()


class RedisEve:
    """EVE events from Redis (Suricata's redis output): `poll()` -> RecordBatch | None.

    mode "list": reliable consumption through a processing list (see the module docstring);
    call `ack()` after the batch was handed on and the sinks flushed. mode "channel": SUBSCRIBE.
    """

    def __init__(
        self,
        url: str,
        key: str,
        mode: str = "list",
        *,
        batch: int = 500,
        backoff_max_s: float = 5.0,
    ) -> None:
        if mode not in ("list", "channel"):
            raise ValueError(f"unknown redis mode {mode!r} (list or channel)")
        self.url = url
        self.key = key
        self.mode = mode
        self.path = f"{url}#{key}"
        self.format = "suricata-eve-redis"
        self.processing = f"{key}:tapetum-processing"
        self.batch_size = batch
        self.backoff_max_s = backoff_max_s
        self.counters = LogCounters()
        self.warnings: list[InputWarning] = []
        self.rep = Reporter(self.counters, self.warnings)
        self.mapper = EveMapper(self.rep, self.path)
        #: connects, disconnects (errors), reconnects (after an error), recovered (from the
        #: processing list after a reconnect), acked, ack_failures.
        self.stats: dict[str, int] = dict(
            connects=0, disconnects=0, reconnects=0, recovered=0, accepted=0, acked=0
        )
        self._client: Any = None
        self._pubsub: Any = None
        self._backoff = 0.1
        self._next_try = 0.0
        self._pending_ack = 0  # items handed on, not yet removed from the processing list
        self._seq = 0
        self._had_error = False
        self._recover = True

    # -- connection ---------------------------------------------------------------------------

    def _connect(self) -> bool:
        import redis

        if self._client is not None:
            return True
        if time.monotonic() < self._next_try:
            return False
        try:
            client = redis.Redis.from_url(self.url, socket_timeout=2.0, socket_connect_timeout=1.0)
            client.ping()
            if self.mode == "channel":
                ps = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                ps.subscribe(self.key)
                self._pubsub = ps
        except redis.RedisError as exc:
            self._failed(exc)
            return False
        self._client = client
        self.stats["connects"] += 1
        if self._had_error:
            self.stats["reconnects"] += 1
            self._had_error = False
        self._backoff = 0.1
        self._recover = True
        return True

    def _failed(self, exc: Exception) -> None:
        self.stats["disconnects"] += 1
        self._had_error = True
        self.rep.warn(
            self.path,
            None,
            "redis_unavailable",
            f"redis error ({exc}); retrying in {self._backoff:.1f} s",
        )
        self._next_try = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.backoff_max_s)
        for obj in (self._pubsub, self._client):
            try:
                if obj is not None:
                    obj.close()
            except Exception:  # closing a broken connection may fail again
                pass
        self._client = None
        self._pubsub = None

    # -- reading ------------------------------------------------------------------------------

    def poll(self, timeout_s: float = 0.2) -> RecordBatch | None:
        import redis

        if not self._connect():
            return None
        try:
            if self.mode == "channel":
                raw = self._read_channel(timeout_s)
            else:
                if self._pending_ack:  # an ack lost to a disconnect: complete it first
                    self._ack_now()
                raw = self._read_list(timeout_s)
        except redis.RedisError as exc:
            self._failed(exc)
            return None
        if not raw:
            return None
        self.stats["accepted"] += len(raw)
        batch = Batcher()
        for data in raw:
            self._seq += 1
            item = self.mapper.map_line(data, self.path, self._seq)
            batch.add(item, 1)
        return batch.take()

    def _read_channel(self, timeout_s: float) -> list[bytes]:
        out: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < self.batch_size:
            left = deadline - time.monotonic()
            msg = self._pubsub.get_message(timeout=max(left, 0.0) if not out else 0.0)
            if msg is None:
                if out or left <= 0:
                    break
                continue
            if msg.get("type") == "message":
                d = msg["data"]
                out.append(d if isinstance(d, bytes) else str(d).encode())
        return out

    def _read_list(self, timeout_s: float) -> list[bytes]:
        c = self._client
        if self._recover:
            # items moved by an earlier run or before a disconnect, never acknowledged
            items = c.lrange(self.processing, 0, -1)
            self._recover = False
            if items:
                self.stats["recovered"] += len(items)
                self._pending_ack = len(items)
                return [bytes(x) for x in reversed(items)]  # oldest first
        pipe = c.pipeline(transaction=True)
        for _ in range(self.batch_size):
            pipe.lmove(self.key, self.processing, "RIGHT", "LEFT")
        got = [x for x in pipe.execute() if x is not None]
        if not got:
            # block briefly for the next event (a live feed idles here, not in a busy loop)
            x = c.blmove(self.key, self.processing, timeout_s, "RIGHT", "LEFT")
            got = [x] if x is not None else []
        self._pending_ack = len(got)
        return [bytes(x) for x in got]

    def ack(self) -> None:
        """The last batch is safely handed on: drop it from the processing list."""
        import redis

        if self.mode != "list" or not self._pending_ack or self._client is None:
            return
        try:
            self._ack_now()
        except redis.RedisError as exc:
            self._failed(exc)  # kept pending: retried after the reconnect

    def _ack_now(self) -> None:
        # The processing list holds exactly the batch handed on (the next batch is moved only
        # after this ack), so DEL acknowledges it; DEL is idempotent, so an ack whose reply was
        # lost to a disconnect can be repeated after the reconnect without touching new events.
        self._client.delete(self.processing)
        self.stats["acked"] += self._pending_ack
        self._pending_ack = 0

    def close(self) -> None:
        for obj in (self._pubsub, self._client):
            try:
                if obj is not None:
                    obj.close()
            except Exception:  # best effort at shutdown
                pass
        self._client = None
        self._pubsub = None


def probe(path: str, head: bytes) -> bool:
    """EVE by content: JSON lines with an `event_type` key."""
    first = head.lstrip()
    if not first.startswith(b"{"):
        return False
    line = first.split(b"\n", 1)[0]
    return b'"event_type"' in line and b'"timestamp"' in line


def open_source(path: str) -> EveSource:
    return EveSource(path)
