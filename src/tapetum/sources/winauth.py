"""Windows Security authentication events as `AuthEvent`s, from EVTX files or JSON exports.

Events read (others are counted and skipped):

| EventID | meaning | outcome | service |
|---|---|---|---|
| 4624 | an account logged on | success | by LogonType: 10 rdp, 3 network, 2 interactive, … |
| 4625 | an account failed to log on | failure (Status/SubStatus explained in `reason`) | as 4624 |
| 4648 | a logon with explicit credentials (runas, mapped drives) | other | explicit-credentials |
| 4768 | a Kerberos TGT was requested | success when Status is 0x0, else failure | kerberos |
| 4769 | a Kerberos service ticket was requested | likewise | kerberos |
| 4771 | Kerberos pre-authentication failed | failure | kerberos |
| 4776 | the DC validated NTLM credentials | success when Status is 0x0, else failure | ntlm |

EVTX needs python-evtx (the optional extra `evtx`). Each record is rendered to XML and mapped by
`event_from_xml`. A chunk whose header is damaged (magic or checksum) or a record that does not
parse is skipped with a warning naming the file and the chunk's or record's byte offset; the
other chunks are read.

JSON exports (one event per line) may be Winlogbeat/ECS-shaped (`winlog.event_id`,
`winlog.event_data`, `winlog.computer_name`, `@timestamp`) or flat (`EventID`, `TimeCreated` or
`SystemTime` or `@timestamp` or `timestamp`, `Computer`, and the EventData fields either at the top
level or in an `EventData` object). See `event_from_json`.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from typing import Any

from tapetum.errors import CaptureFormatError, InputError, InputWarning
from tapetum.records import AuthEvent
from tapetum.sources.authlog import MAX_WARNINGS, LogCounters, _ip, parse_time
from tapetum.sources.base import RecordBatch
from tapetum.sources.pcap import ReaderCounters

AUTH_EVENT_IDS = frozenset({4624, 4625, 4648, 4768, 4769, 4771, 4776})
BATCH_RECORDS = 2000
EVTX_MAGIC = b"ElfFile\x00"
_NS = "{http://schemas.microsoft.com/win/2004/08/events/event}"

#: LogonType -> service name (what the logon was for).
LOGON_SERVICES = {
    2: "interactive", 3: "network", 4: "batch", 5: "service", 7: "unlock",
    8: "network-cleartext", 9: "new-credentials", 10: "rdp", 11: "cached-interactive",
}  # fmt: skip
#: NTSTATUS codes of 4625 / 4776 (Status, SubStatus).
NT_STATUS = {
    0xC0000064: "no such user",
    0xC000006A: "wrong password",
    0xC000006D: "bad user name or authentication information",
    0xC000006E: "account restriction",
    0xC000006F: "logon outside allowed hours",
    0xC0000070: "workstation restriction",
    0xC0000071: "password expired",
    0xC0000072: "account disabled",
    0xC00000DC: "server in the wrong state",
    0xC0000133: "clock out of sync with the domain controller",
    0xC000015B: "logon type not granted",
    0xC000018C: "trust relationship failed",
    0xC0000192: "Netlogon service not started",
    0xC0000193: "account expired",
    0xC0000224: "password must change at next logon",
    0xC0000225: "Windows bug (not a risk)",
    0xC0000234: "account locked out",
    0xC0000413: "authentication firewall",
}
#: Kerberos result codes of 4768 / 4769 / 4771.
KERBEROS_STATUS = {
    0x6: "unknown user (KDC_ERR_C_PRINCIPAL_UNKNOWN)",
    0x7: "unknown service (KDC_ERR_S_PRINCIPAL_UNKNOWN)",
    0xC: "policy restriction (KDC_ERR_POLICY)",
    0x12: "account disabled, expired or locked out (KDC_ERR_CLIENT_REVOKED)",
    0x17: "password expired (KDC_ERR_KEY_EXPIRED)",
    0x18: "wrong password (KDC_ERR_PREAUTH_FAILED)",
    0x1B: "user-to-user only (KDC_ERR_MUST_USE_USER2USER)",
    0x1F: "integrity check failed (KRB_AP_ERR_BAD_INTEGRITY)",
    0x20: "ticket expired (KRB_AP_ERR_TKT_EXPIRED)",
    0x25: "clock skew too great (KRB_AP_ERR_SKEW)",
}


def _int(text: Any) -> int | None:
    if text is None:
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    s = str(text).strip()
    try:
        return int(s, 16) if s.lower().startswith("0x") else int(s)
    except ValueError:
        return None


def _addr(text: str | None) -> str | None:
    """IpAddress as Windows writes it: "-" or empty for none, "::ffff:a.b.c.d" for IPv4."""
    if not text or text == "-":
        return None
    if text.lower().startswith("::ffff:"):
        text = text[7:]
    return _ip(text)


def _name(text: str | None) -> str | None:
    if not text or text in ("-", "NULL SID"):
        return None
    return text


def _status_text(code: int | None, table: Mapping[int, str]) -> str:
    if code is None:
        return "unknown status"
    return f"{table.get(code, 'status')} (0x{code:X})"


def event_from_fields(
    event_id: int, ts_ns: int, computer: str | None, data: Mapping[str, Any]
) -> AuthEvent | None:
    """The AuthEvent of one Security event (None for event ids not read here)."""
    if event_id not in AUTH_EVENT_IDS:
        return None

    def get(key: str) -> str | None:
        v = data.get(key)
        return None if v is None else str(v)

    user = _name(get("TargetUserName"))
    src_ip = _addr(get("IpAddress"))
    port = _int(get("IpPort"))
    port = port if port and 0 < port <= 65535 else None
    common: dict[str, Any] = {"ts_ns": ts_ns, "source": "windows", "host": _name(computer),
                              "event_id": str(event_id), "user": user, "src_ip": src_ip,
                              "src_port": port}  # fmt: skip
    if event_id in (4624, 4625):
        logon_type = _int(get("LogonType"))
        service = LOGON_SERVICES.get(logon_type or -1, "logon")
        method = _name(get("AuthenticationPackageName")) or _name(get("LogonProcessName"))
        reason = None
        outcome = "success"
        if event_id == 4625:
            outcome = "failure"
            status, sub = _int(get("Status")), _int(get("SubStatus"))
            # SubStatus is the precise one when Status is the generic 0xC000006D.
            code = sub if sub not in (None, 0) else status
            reason = _status_text(code, NT_STATUS)
        workstation = _name(get("WorkstationName"))
        if workstation:
            seen = f"from workstation {workstation}"
            reason = f"{reason}; {seen}" if reason else seen
        return AuthEvent(outcome=outcome, service=service, method=method and method.strip(),
                         logon_type=logon_type, reason=reason, **common)  # fmt: skip
    if event_id == 4648:
        who = _name(get("SubjectUserName"))
        target = _name(get("TargetServerName"))
        reason = f"explicit credentials used by {who or 'unknown'} for {target or 'unknown'}"
        return AuthEvent(outcome="other", service="explicit-credentials", reason=reason, **common)
    if event_id in (4768, 4769, 4771):
        status = _int(get("Status"))
        ok = status == 0 and event_id != 4771
        reason = None if ok else _status_text(status, KERBEROS_STATUS)
        svc = _name(get("ServiceName"))
        if svc and event_id == 4769:
            reason = f"service {svc}" + (f"; {reason}" if reason else "")
        methods = {4768: "kerberos-tgt", 4769: "kerberos-service-ticket", 4771: "kerberos-preauth"}
        return AuthEvent(outcome="success" if ok else "failure", service="kerberos",
                         method=methods[event_id], reason=reason, **common)  # fmt: skip
    # 4776: NTLM credential validation on a DC; the client is named by Workstation, not address.
    status = _int(get("Status"))
    ok = status == 0
    workstation = _name(get("Workstation"))
    reason = None if ok else _status_text(status, NT_STATUS)
    if workstation:
        reason = f"workstation {workstation}" + (f"; {reason}" if reason else "")
    return AuthEvent(outcome="success" if ok else "failure", service="ntlm", method="ntlm",
                     reason=reason, **common)  # fmt: skip


def event_from_xml(xml: str) -> AuthEvent | None:
    """One EVTX record rendered as XML (python-evtx's `record.xml()`) as an AuthEvent.
    Raises ValueError when the XML or its time is unreadable."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ValueError(f"record XML does not parse: {exc}") from None

    def find(node: ET.Element, tag: str) -> ET.Element | None:
        hit = node.find(_NS + tag)
        return hit if hit is not None else node.find(tag)

    system = find(root, "System")
    if system is None:
        raise ValueError("record has no System element")
    eid_node = find(system, "EventID")
    event_id = _int(eid_node.text if eid_node is not None else None)
    if event_id is None:
        raise ValueError("record has no EventID")
    if event_id not in AUTH_EVENT_IDS:
        return None
    tc = find(system, "TimeCreated")
    ts_ns = parse_time(tc.get("SystemTime", "")) if tc is not None else None
    if ts_ns is None:
        raise ValueError("record has no readable TimeCreated")
    comp = find(system, "Computer")
    data: dict[str, str] = {}
    ed = find(root, "EventData")
    if ed is not None:
        for d in list(ed):
            name = d.get("Name")
            if name:
                data[name] = (d.text or "").strip()
    return event_from_fields(event_id, ts_ns, comp.text if comp is not None else None, data)


def _winlog(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    w = obj.get("winlog")
    return w if isinstance(w, Mapping) else None


def is_windows_json(obj: Mapping[str, Any]) -> bool:
    """A Windows event exported as JSON (Winlogbeat/ECS or flat)."""
    w = _winlog(obj)
    if w is not None and "event_id" in w:
        return True
    return "EventID" in obj or "EventId" in obj


def event_from_json(obj: Mapping[str, Any]) -> AuthEvent | None:
    """One JSON-exported Windows event as an AuthEvent (None for other event ids); ValueError
    names a missing or unreadable time or event id."""
    w = _winlog(obj)
    if w is not None and "event_id" in w:
        event_id = _int(w.get("event_id"))
        data = w.get("event_data") or {}
        computer = w.get("computer_name") or (obj.get("host") or {}).get("name")
        when = obj.get("@timestamp")
    else:
        eid = obj.get("EventID", obj.get("EventId"))
        if isinstance(eid, Mapping):  # {"EventID": {"#text": "4624", "Qualifiers": ""}}
            eid = eid.get("#text", eid.get("value"))
        event_id = _int(eid)
        inner = obj.get("EventData")
        data = inner if isinstance(inner, Mapping) else obj
        computer = obj.get("Computer") or obj.get("computer_name") or obj.get("Hostname")
        when = next((obj[k] for k in ("TimeCreated", "SystemTime", "@timestamp", "timestamp",
                                      "UtcTime", "ts") if k in obj), None)  # fmt: skip
        if isinstance(when, Mapping):  # {"TimeCreated": {"SystemTime": "…"}}
            when = when.get("SystemTime")
    if event_id is None:
        raise ValueError("Windows event without a readable EventID")
    if event_id not in AUTH_EVENT_IDS:
        return None
    if not isinstance(data, Mapping):
        raise ValueError("Windows event whose event data is not an object")
    ts_ns = parse_time(when) if isinstance(when, (str, int, float)) else None
    if ts_ns is None:
        raise ValueError(f"Windows event {event_id} without a readable time: {when!r}")
    return event_from_fields(event_id, ts_ns, str(computer) if computer else None, data)


class EvtxSource:
    """Windows Security events from an EVTX file (python-evtx)."""

    format = "evtx"

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.total_bytes = os.path.getsize(path)
        except OSError as exc:
            raise CaptureFormatError(path, None, exc.strerror or str(exc)) from None
        self.log = LogCounters()
        #: The reader counters the pipeline reports (the same object as `log`).
        self.counters: ReaderCounters = self.log
        self.warnings: list[InputWarning] = []
        self._done = 0

    @property
    def progress_bytes(self) -> int:
        return self._done

    def warn(self, kind: str, offset: int | None, message: str) -> None:
        c = self.log
        c.warnings_by_kind[kind] = c.warnings_by_kind.get(kind, 0) + 1
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(InputWarning(self.path, offset, kind, message))

    def __iter__(self) -> Iterator[RecordBatch]:
        try:
            from Evtx.Evtx import Evtx
        except ImportError:
            raise InputError(
                self.path, None, "reading EVTX needs python-evtx: pip install 'tapetum[evtx]'"
            ) from None
        batch: list[AuthEvent] = []
        records = 0
        try:
            with Evtx(self.path) as log:
                header = log.get_file_header()
                if not header.check_magic():
                    raise InputError(self.path, 0, "not an EVTX file (bad file header magic)")
                # Chunks beyond the header's count may hold records too (a log not closed
                # cleanly); a damaged chunk is skipped, as is every damaged record.
                for chunk in header.chunks(include_inactive=True):
                    off = chunk.offset()
                    self._done = off
                    if not chunk.check_magic():
                        if any(chunk.unpack_binary(0, 8)):  # not free space at the end
                            self.log.skipped_blocks += 1
                            self.warn("corrupt_chunk", off, f"chunk at byte {off}: bad magic, "
                                      "skipped")  # fmt: skip
                        continue
                    if chunk.calculate_header_checksum() != chunk.header_checksum():
                        self.log.skipped_blocks += 1
                        self.warn(
                            "corrupt_chunk",
                            off,
                            f"chunk at byte {off}: header checksum mismatch, skipped",
                        )
                        continue
                    if chunk.calculate_data_checksum() != chunk.data_checksum():
                        # The records may still be fine: read them, each checked on its own.
                        self.warn("chunk_checksum", off,
                                  f"chunk at byte {off}: data checksum mismatch, records read "
                                  "one by one")  # fmt: skip
                    for ev in self._chunk_events(chunk):
                        records += 1
                        if ev is not None:
                            batch.append(ev)
                        if records >= BATCH_RECORDS:
                            self.log.events += len(batch)
                            yield RecordBatch(auth=batch, records=records)
                            batch, records = [], 0
        except InputError:
            raise
        except (OSError, ValueError) as exc:
            raise InputError(self.path, None, f"cannot read EVTX: {exc}") from None
        self._done = self.total_bytes
        if records or batch:
            self.log.events += len(batch)
            yield RecordBatch(auth=batch, records=records)

    def _chunk_events(self, chunk: Any) -> Iterator[AuthEvent | None]:
        it = iter(chunk.records())
        while True:
            try:
                rec = next(it)
            except StopIteration:
                return
            except Exception as exc:
                self.log.corrupt_records += 1
                self.warn(
                    "corrupt_record",
                    chunk.offset(),
                    f"chunk at byte {chunk.offset()}: record walk stopped ({exc!r})",
                )
                return
            roff = rec.offset()
            try:
                if rec.magic() != 0x2A2A or not rec.verify():
                    raise ValueError("bad record magic or size")
                ev = event_from_xml(rec.xml())
            except Exception as exc:
                self.log.corrupt_records += 1
                self.warn("corrupt_record", roff, f"record at byte {roff}: {exc}")
                yield None
                continue
            self.log.lines += 1
            yield ev

    def close(self) -> None:
        pass


def probe_evtx(path: str, head: bytes) -> bool:
    return head[:8] == EVTX_MAGIC
