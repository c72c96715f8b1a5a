"""Windows Security events: the record mapping (EVTX XML as python-evtx renders it, and JSON
exports), and EVTX reading with damaged chunks and records.

No real EVTX sample ships with any installed package, so the EVTX files here are written by
`write_evtx` below (file header, chunks and checksums of the format, records in binary XML with
resident templates) and read back with python-evtx, then damaged to test chunk/record skipping.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest

from tapetum.registry import open_source
from tapetum.sources.winauth import event_from_json, event_from_xml

NS = "http://schemas.microsoft.com/win/2004/08/events/event"


def record_xml(event_id: int, when: str, computer: str, data: dict[str, str]) -> str:
    """An event as python-evtx's `record.xml()` renders it."""
    fields = "".join(f'<Data Name="{k}">{v}</Data>' for k, v in data.items())
    return (
        f'<Event xmlns="{NS}"><System><Provider Name="Microsoft-Windows-Security-Auditing" '
        'Guid="{54849625-5478-4994-a5ba-3e3b0328c30d}"></Provider>'
        f'<EventID Qualifiers="">{event_id}</EventID><Version>2</Version><Level>0</Level>'
        f'<TimeCreated SystemTime="{when}"></TimeCreated><EventRecordID>1</EventRecordID>'
        f"<Channel>Security</Channel><Computer>{computer}</Computer></System>"
        f"<EventData>{fields}</EventData></Event>"
    )


def test_logon_success_and_failure_from_xml() -> None:
    ok = event_from_xml(record_xml(4624, "2024-03-04 09:15:02.123456", "DC1.corp.example", {
        "SubjectUserName": "DC1$", "TargetUserName": "alice", "TargetDomainName": "CORP",
        "LogonType": "10", "LogonProcessName": "User32 ", "AuthenticationPackageName":
        "Negotiate", "WorkstationName": "LAPTOP-7", "IpAddress": "::ffff:10.1.2.3",
        "IpPort": "50123"}))  # fmt: skip
    assert ok is not None
    assert (ok.outcome, ok.service, ok.user, ok.src_ip, ok.src_port, ok.host, ok.logon_type) == (
        "success", "rdp", "alice", "10.1.2.3", 50123, "DC1.corp.example", 10)  # fmt: skip
    assert ok.ts_ns == 1709543702_123456000 and ok.event_id == "4624"
    assert ok.method == "Negotiate" and ok.reason == "from workstation LAPTOP-7"
    bad = event_from_xml(record_xml(4625, "2024-03-04T09:15:03Z", "DC1", {
        "TargetUserName": "admin", "Status": "0xc000006d", "SubStatus": "0xc0000064",
        "LogonType": "3", "IpAddress": "203.0.113.50", "IpPort": "0"}))  # fmt: skip
    assert bad is not None and bad.outcome == "failure" and bad.service == "network"
    assert bad.reason == "no such user (0xC0000064)" and bad.src_port is None


def test_kerberos_ntlm_explicit_and_other_ids() -> None:
    tgt = event_from_xml(record_xml(4768, "2024-03-04T10:00:00Z", "DC1", {
        "TargetUserName": "bob", "Status": "0x18", "IpAddress": "::ffff:10.0.0.9",
        "IpPort": "49822"}))  # fmt: skip
    assert tgt is not None and (tgt.outcome, tgt.service, tgt.method) == (
        "failure", "kerberos", "kerberos-tgt")  # fmt: skip
    assert tgt.reason is not None and "wrong password" in tgt.reason and tgt.src_ip == "10.0.0.9"
    tgs = event_from_xml(record_xml(4769, "2024-03-04T10:00:01Z", "DC1", {
        "TargetUserName": "bob@CORP", "ServiceName": "cifs/fs1", "Status": "0x0",
        "IpAddress": "10.0.0.9"}))  # fmt: skip
    assert tgs is not None and tgs.outcome == "success" and tgs.reason == "service cifs/fs1"
    ntlm = event_from_xml(record_xml(4776, "2024-03-04T10:00:02Z", "DC1", {
        "TargetUserName": "carol", "Workstation": "WS12", "Status": "0xc000006a"}))  # fmt: skip
    assert ntlm is not None and ntlm.outcome == "failure" and ntlm.service == "ntlm"
    assert ntlm.reason == "workstation WS12; wrong password (0xC000006A)"
    explicit = event_from_xml(record_xml(4648, "2024-03-04T10:00:03Z", "WS12", {
        "SubjectUserName": "carol", "TargetUserName": "administrator",
        "TargetServerName": "fs1", "IpAddress": "-"}))  # fmt: skip
    assert explicit is not None and explicit.outcome == "other" and explicit.src_ip is None
    assert event_from_xml(record_xml(4688, "2024-03-04T10:00:04Z", "WS12", {})) is None
    with pytest.raises(ValueError, match="TimeCreated"):
        event_from_xml(record_xml(4624, "not a time", "WS12", {}))
    with pytest.raises(ValueError, match="does not parse"):
        event_from_xml("<Event><System>")


def test_json_exports_winlogbeat_and_flat(tmp_path: Path) -> None:
    beat = {"@timestamp": "2024-03-04T09:15:02.000Z", "event": {"code": "4625"},
            "winlog": {"event_id": 4625, "computer_name": "DC1", "event_data": {
                "TargetUserName": "svc_sql", "Status": "0xc000006d", "SubStatus": "0xc000006a",
                "LogonType": "3", "IpAddress": "198.51.100.7", "IpPort": "445"}}}  # fmt: skip
    flat = {"EventID": 4624, "TimeCreated": {"SystemTime": "2024-03-04T09:16:00Z"},
            "Computer": "DC1", "EventData": {"TargetUserName": "alice", "LogonType": "2",
                                             "IpAddress": "127.0.0.1"}}  # fmt: skip
    flat_top = {"EventID": "4776", "timestamp": 1709543800, "Computer": "DC1",
                "TargetUserName": "dave", "Workstation": "WS3", "Status": "0x0"}  # fmt: skip
    other = {"EventID": 4634, "TimeCreated": "2024-03-04T09:17:00Z"}
    a = event_from_json(beat)
    assert a is not None and (a.user, a.outcome, a.reason, a.src_port) == (
        "svc_sql", "failure", "wrong password (0xC000006A)", 445)  # fmt: skip
    b = event_from_json(flat)
    assert b is not None and (b.user, b.service, b.src_ip) == ("alice", "interactive", "127.0.0.1")
    c = event_from_json(flat_top)
    assert c is not None and (c.user, c.outcome, c.ts_ns) == ("dave", "success", 1709543800 * 10**9)
    assert event_from_json(other) is None
    p = tmp_path / "security.json"
    p.write_text("\n".join(json.dumps(x) for x in (beat, flat, flat_top, other)) + "\n"
                 + json.dumps({"EventID": 4624}) + "\n")  # fmt: skip
    src = open_source(str(p))
    events = [e for batch in src for e in batch.auth]
    src.close()
    assert [e.user for e in events] == ["svc_sql", "alice", "dave"]
    assert src.counters.warnings_by_kind == {"invalid_event": 1}
    assert "line 5: Windows event 4624 without a readable time" in str(src.warnings[0])


# -- EVTX files ---------------------------------------------------------------------------------
# No EVTX sample ships with python-evtx or any installed package, so this writes the format:
# file header, 64 KiB chunks with CRC32 checksums, records whose binary XML is a resident
# template (Event/System/EventData elements with substitutions) plus UTF-16 substitution values.


class _BinXml:
    """Binary XML at a known chunk-relative offset (names are inline NameStrings)."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.buf = bytearray()

    def pos(self) -> int:
        return self.base + len(self.buf)

    def _name(self, name: str) -> None:
        self.buf += struct.pack("<IHH", 0, 0, len(name)) + name.encode("utf-16-le") + b"\0\0"

    def open(self, name: str, attrs: dict[str, int | str] | None = None) -> None:
        """An element; an attribute value is a substitution index or literal text."""
        flagged = bool(attrs)
        at = self.pos()
        header = 15 if flagged else 11
        self.buf += struct.pack("<BHII", 0x41 if flagged else 0x01, 0xFFFF, 0, at + header)
        if flagged:
            self.buf += struct.pack("<I", 0)
        self._name(name)
        for k, (attr, sub) in enumerate((attrs or {}).items()):
            last = k == len(attrs or {}) - 1
            self.buf += struct.pack("<BI", 0x06 if last else 0x46, self.pos() + 5)
            self._name(attr)
            if isinstance(sub, str):
                self.text(sub)
            else:
                self.buf += struct.pack("<BHB", 0x0D, sub, 0x01)
        self.buf += b"\x02"

    def text(self, value: str) -> None:
        self.buf += struct.pack("<BBH", 0x05, 0x01, len(value)) + value.encode("utf-16-le")

    def sub(self, index: int) -> None:
        self.buf += struct.pack("<BHB", 0x0D, index, 0x01)

    def close(self) -> None:
        self.buf += b"\x04"


def _record(at: int, num: int, event_id: int, when: str, computer: str,
            data: dict[str, str]) -> bytes:  # fmt: skip
    """One record at chunk-relative offset `at`."""
    subs = [str(event_id), when, computer, *data.values()]
    body_at = at + 0x18 + 4 + 10 + 0x18  # record header, stream start, instance, template header
    x = _BinXml(body_at)
    x.buf += b"\x0f\x01\x01\x00"
    x.open("Event", {"xmlns": NS})
    x.open("System")
    x.open("EventID")
    x.sub(0)
    x.close()
    x.open("TimeCreated", {"SystemTime": 1})
    x.close()
    x.open("Computer")
    x.sub(2)
    x.close()
    x.close()
    x.open("EventData")
    for k, name in enumerate(data):
        x.open("Data", {"Name": name})
        x.sub(3 + k)
        x.close()
    x.close()
    x.close()
    x.buf += b"\x00"
    template = struct.pack("<I", 0) + struct.pack("<I", 1000 + num) + b"\0" * 12
    template += struct.pack("<I", len(x.buf)) + bytes(x.buf)
    values = [s.encode("utf-16-le") for s in subs]
    root = b"\x0f\x01\x01\x00" + struct.pack("<BBII", 0x0C, 0x01, 1000 + num, at + 0x18 + 14)
    root += template + struct.pack("<I", len(values))
    root += b"".join(struct.pack("<HBB", len(v), 0x01, 0) for v in values) + b"".join(values)
    size = 0x18 + len(root) + 4
    return struct.pack("<IIQQ", 0x2A2A, size, num, 0) + root + struct.pack("<I", size)


def _chunk(first: int, events: list[tuple[int, str, str, dict[str, str]]]) -> bytes:
    recs = bytearray()
    last_at = 0x200
    for k, (eid, when, comp, data) in enumerate(events):
        last_at = 0x200 + len(recs)
        recs += _record(last_at, first + k, eid, when, comp, data)
    nxt = 0x200 + len(recs)
    head = bytearray(0x200)
    head[0:8] = b"ElfChnk\x00"
    n = first + len(events) - 1
    struct.pack_into("<QQQQIII", head, 8, first, n, first, n, 0x80, last_at, nxt)
    body = bytes(recs) + b"\0" * (0x10000 - 0x200 - len(recs))
    struct.pack_into("<I", head, 0x34, zlib.crc32(body[: nxt - 0x200]))
    struct.pack_into("<I", head, 0x7C, zlib.crc32(bytes(head[:0x78]) + bytes(head[0x80:0x200])))
    return bytes(head) + body


def write_evtx(path: Path, chunks: list[list[tuple[int, str, str, dict[str, str]]]]) -> None:
    out = bytearray(0x1000)
    total = sum(len(c) for c in chunks)
    struct.pack_into("<8sQQQIHHHH", out, 0, b"ElfFile\x00", 0, len(chunks) - 1, total + 1, 0x80,
                     1, 3, 0x1000, len(chunks))  # fmt: skip
    struct.pack_into("<I", out, 0x7C, zlib.crc32(bytes(out[:0x78])))
    first = 1
    for c in chunks:
        out += _chunk(first, c)
        first += len(c)
    path.write_bytes(bytes(out))


def _logons(n: int, user: str) -> list[tuple[int, str, str, dict[str, str]]]:
    return [(4625, f"2024-03-04 09:15:{k:02d}.000000", "DC1", {
        "TargetUserName": user, "Status": "0xc000006d", "SubStatus": "0xc000006a",
        "LogonType": "10", "IpAddress": "203.0.113.50", "IpPort": str(50000 + k)})
        for k in range(n)]  # fmt: skip


def test_evtx_file_read_with_python_evtx(tmp_path: Path) -> None:
    pytest.importorskip("Evtx")
    p = tmp_path / "Security.evtx"
    logoff = (4634, "2024-03-04 09:16:00.000000", "DC1", {})  # not an authentication: skipped
    write_evtx(p, [[*_logons(3, "admin"), logoff], _logons(2, "svc")])
    src = open_source(str(p))
    assert src.format == "evtx"
    events = [e for b in src for e in b.auth]
    src.close()
    assert [e.user for e in events] == ["admin"] * 3 + ["svc"] * 2
    e = events[0]
    assert (e.outcome, e.service, e.src_ip, e.src_port, e.host, e.event_id) == (
        "failure", "rdp", "203.0.113.50", 50000, "DC1", "4625")  # fmt: skip
    assert e.reason == "wrong password (0xC000006A)" and not src.warnings


def test_evtx_corrupt_chunk_and_record_are_skipped(tmp_path: Path) -> None:
    pytest.importorskip("Evtx")
    p = tmp_path / "Security.evtx"
    write_evtx(p, [_logons(2, "a"), _logons(2, "b"), _logons(3, "c")])
    raw = bytearray(p.read_bytes())
    raw[0x1000 + 0x10000 + 0x40] ^= 0xFF  # chunk 2's header: its checksum no longer matches
    third = 0x1000 + 2 * 0x10000
    raw[third + 0x200 + 0x18 + 40 : third + 0x200 + 0x18 + 44] = b"\xff\xff\xff\xff"  # record 1
    p.write_bytes(bytes(raw))
    src = open_source(str(p))
    events = [e for b in src for e in b.auth]
    src.close()
    # Chunk 1 whole, chunk 2 skipped, chunk 3 without its damaged first record.
    assert [e.user for e in events] == ["a", "a", "c", "c"]
    kinds = src.counters.warnings_by_kind
    assert kinds["corrupt_chunk"] == 1 and kinds["corrupt_record"] == 1
    msgs = [str(w) for w in src.warnings]
    assert f"{p} at byte {0x1000 + 0x10000}: chunk at byte {0x1000 + 0x10000}: header checksum" in (
        msgs[0])  # fmt: skip
    assert any(f"record at byte {third + 0x200}" in m for m in msgs)
