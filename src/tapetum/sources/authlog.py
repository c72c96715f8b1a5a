"""Authentication logs as `AuthEvent`s: OpenSSH / Linux auth.log syslog lines and a generic JSON
lines format (docs/auth.md).

Syslog lines come in three shapes, each with or without a leading `<PRI>`:

- RFC 3164 (`Dec 10 06:55:46 host sshd[24200]: message`): no year and no zone. The year is the
  `year` option when given, else the file's modification year — or the year before when the first
  line's month lies after the modification month (a log is never written after its mtime). A
  month that goes back by more than six (Dec → Jan) starts the next year; smaller steps back are
  lines slightly out of order, not a new year. Times are in `tz` (UTC by default).
- ISO / RFC 3339 (`2024-12-10T06:55:46.123+01:00 host sshd[1]: message`, rsyslog's high
  precision format).
- RFC 5424 (`<38>1 2024-12-10T06:55:46Z host sshd 1 - - message`).

What each sshd message means (an *attempt* is a verdict of sshd on one authentication):

| message | outcome |
|---|---|
| Accepted password/publickey/keyboard-interactive… for U from IP port P | success |
| Failed password/publickey/none… for [invalid user] U from IP port P | failure |
| message repeated N times: [ M ] | M, N times (rsyslog's reduction undone) |
| Invalid user U from IP | other (the verdict follows as Failed …) |
| pam_unix(sshd:auth): authentication failure; … rhost= | other (sshd logs the verdict as Failed) |
| pam_unix(login:auth) … authentication failure (not sshd, su, sudo) | failure (only record) |
| PAM N more authentication failures; … rhost= | other (a summary of failures logged one by one) |
| Connection closed by / Disconnected from (authenticating|invalid) user U IP port P | other |
| Disconnecting: Too many authentication failures; maximum auth attempts exceeded | other |
| sudo and su lines | other (service sudo / su) |

Other sshd lines (reverse mapping checks, disconnects before authentication, sessions) carry no
authentication and are counted by kind only. Lines of other programs are skipped and counted.
"""

from __future__ import annotations

import calendar
import gzip
import ipaddress
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import IO, Any, cast
from zoneinfo import ZoneInfo

from tapetum.errors import CaptureFormatError, InputWarning
from tapetum.records import AuthEvent
from tapetum.sources.base import RecordBatch
from tapetum.sources.pcap import ReaderCounters

BATCH_LINES = 5000
#: Warnings kept with their text (all are counted by kind).
MAX_WARNINGS = 50
_MONTHS = {m: k for k, m in enumerate(calendar.month_abbr) if m}

_PRI = r"(?:<\d{1,3}>)?"
_PROG = r"(?P<prog>[^\s:\[]+)(?:\[(?P<pid>\d+)\])?:\s?(?P<msg>.*)"
RE_3164 = re.compile(
    _PRI + r"(?P<mon>[A-Z][a-z]{2}) {1,2}(?P<day>\d{1,2}) (?P<time>\d\d:\d\d:\d\d)(?:\.\d+)? "
    r"(?P<host>\S+) " + _PROG
)
RE_ISO = re.compile(
    _PRI + r"(?P<ts>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?) "
    r"(?P<host>\S+) " + _PROG
)
RE_5424 = re.compile(
    r"<\d{1,3}>1 (?P<ts>\S+) (?P<host>\S+) (?P<prog>\S+) (?P<pid>\S+) \S+ "
    r"(?:-|(?:\[.*?\])+)(?: (?:\ufeff)?(?P<msg>.*))?"
)

_USER_AT = r"(?P<user>.*?) from (?P<ip>\S+) port (?P<port>\d+)"
# (kind, pattern, outcome or None when the line is not an authentication event)
_SSHD: list[tuple[str, re.Pattern[str], str | None]] = [
    ("accepted", re.compile(r"Accepted (?P<method>\S+) for " + _USER_AT), "success"),
    ("failed", re.compile(r"Failed (?P<method>\S+) for (?P<invalid>invalid user )?" + _USER_AT),
     "failure"),
    ("invalid_user", re.compile(r"[Ii]nvalid user (?P<user>.*?) from (?P<ip>\S+)"
                                r"(?: port (?P<port>\d+))?\s*$"), "other"),
    ("invalid_user_request", re.compile(r"input_userauth_request: invalid user "), None),
    ("pam_auth_failure", re.compile(
        r"pam_unix\((?P<svc>[^:)]+):auth\): authentication failure;.*?rhost=(?P<rhost>\S*)"
        r"(?:\s+user=(?P<user>\S+))?"), "other"),
    ("pam_more_failures", re.compile(
        r"PAM (?P<n>\d+) more authentication failures?;.*?rhost=(?P<rhost>\S*)"
        r"(?:\s+user=(?P<user>\S+))?"), "other"),
    ("pam_check_pass", re.compile(r"pam_unix\([^)]*\): check pass; user unknown"), None),
    ("pam_ignoring_max_retries", re.compile(r"PAM service\(\S+\) ignoring max retries"), None),
    ("closed_authenticating", re.compile(
        r"Connection closed by (?:authenticating|invalid) user (?P<user>\S*) (?P<ip>\S+) "
        r"port (?P<port>\d+)"), "other"),
    ("disconnected_user", re.compile(
        r"Disconnected from (?:authenticating |invalid )?user (?P<user>\S*) (?P<ip>\S+) "
        r"port (?P<port>\d+)"), "other"),
    ("too_many_failures", re.compile(
        r"(?:Disconnecting(?: \S+ user \S+ \S+ port \d+)?: Too many authentication failures"
        r"(?: for (?:invalid user )?(?P<user>\S*))?)|(?:error: maximum authentication attempts "
        r"exceeded for (?:invalid user )?(?P<user2>\S*) from (?P<ip>\S+) port (?P<port>\d+))"),
     "other"),
    ("session_opened", re.compile(r"pam_unix\([^)]*:session\): session opened for user"), None),
    ("session_closed", re.compile(r"pam_unix\([^)]*:session\): session closed for user"), None),
    ("closed_preauth", re.compile(r"Connection closed by \S+(?: port \d+)? \[preauth\]"), None),
    ("no_identification", re.compile(r"Did not receive identification string from"), None),
    ("reverse_mapping", re.compile(r"reverse mapping checking getaddrinfo|"
                                   r"Address \S+ maps to \S+, but this does not map back"), None),
    ("disconnect_error", re.compile(r"error: Received disconnect from"), None),
    ("received_disconnect", re.compile(r"Received disconnect from"), None),
    ("disconnected", re.compile(r"Disconnected from"), None),
    ("fatal", re.compile(r"fatal: "), None),
]  # fmt: skip
RE_REPEATED = re.compile(r"message repeated (?P<n>\d+) times: \[\s*(?P<inner>.*?)\s*\]\s*$")
RE_SUDO = re.compile(r"\s*(?P<user>\S+) : (?:(?P<why>.*?) ; )?TTY=.*?USER=(?P<to>\S+) ;")
RE_SU = re.compile(
    r"(?:(?:Successful|FAILED) su for (?P<to>\S+) by (?P<user>\S+))|"
    r"(?:(?:FAILED SU )?\(to (?P<to2>\S+)\) (?P<user2>\S+) on)"
)
RE_PAM_ANY = re.compile(
    r"pam_unix\((?P<svc>[^:)]+):auth\): authentication failure;.*?rhost=(?P<rhost>\S*)"
    r"(?:\s+user=(?P<user>\S+))?"
)


def _ip(text: str | None) -> str | None:
    """An address, or None for a host name / empty (PAM's rhost may be either)."""
    if not text:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


@dataclass(slots=True)
class Classified:
    """What one message says: its kind, and the event fields when it is an authentication."""

    kind: str
    outcome: str | None = None
    user: str | None = None
    src_ip: str | None = None
    src_port: int | None = None
    method: str | None = None
    reason: str | None = None
    service: str = "ssh"
    repeat: int = 1


def classify(prog: str, msg: str) -> Classified | None:
    """The meaning of a message of program `prog` (None: not an authentication program)."""
    prog = prog.lower()
    if prog in ("sshd", "sshd-session", "sshd-auth"):
        return classify_sshd(msg)
    if prog == "sudo":
        m = RE_SUDO.match(msg)
        user = m.group("user") if m else None
        p = RE_PAM_ANY.search(msg)
        if p and not user:
            user = p.group("user")
        reason = f"sudo to {m.group('to')}" if m else msg[:120]
        return Classified("sudo", "other", user=user, reason=reason, service="sudo")
    if prog == "su":
        m = RE_SU.search(msg)
        user = (m.group("user") or m.group("user2")) if m else None
        to = (m.group("to") or m.group("to2")) if m else None
        return Classified("su", "other", user=user, reason=f"su to {to}" if to else msg[:120],
                          service="su")  # fmt: skip
    p = RE_PAM_ANY.search(msg)
    if p:  # login, gdm, vsftpd …: PAM's failure is the only record of the attempt
        return Classified("pam_auth_failure", "failure", user=p.group("user"),
                          src_ip=_ip(p.group("rhost")), method="password",
                          reason="pam authentication failure", service=p.group("svc"))  # fmt: skip
    return None


def classify_sshd(msg: str) -> Classified:
    m = RE_REPEATED.match(msg)
    if m:
        inner = classify_sshd(m.group("inner"))
        inner.repeat = int(m.group("n"))
        inner.kind = "repeated"
        return inner
    for kind, rx, outcome in _SSHD:
        m = rx.match(msg)
        if m is None:
            continue
        if outcome is None:
            return Classified(kind)
        g = m.groupdict()
        c = Classified(kind, outcome, user=g.get("user") or g.get("user2"),
                       src_ip=_ip(g.get("ip") or g.get("rhost")))  # fmt: skip
        if g.get("port"):
            c.src_port = int(g["port"])
        if kind in ("accepted", "failed"):
            c.method = g["method"]
            if g.get("invalid"):
                c.reason = "invalid user"
        elif kind == "invalid_user":
            c.reason = "invalid user"
        elif kind == "pam_auth_failure":
            c.reason = "pam authentication failure (sshd logs the attempt as Failed)"
        elif kind == "pam_more_failures":
            c.reason = f"PAM {g['n']} more authentication failures"
        else:
            c.reason = kind.replace("_", " ")
        if c.user == "":
            c.user = None
        return c
    return Classified("unrecognised")


@dataclass(slots=True)
class LogCounters(ReaderCounters):
    """The reader counters plus per-line accounting of a log."""

    lines: int = 0
    events: int = 0
    #: Lines per message kind (sshd kinds, "sudo", "su", "other_program", "malformed" …).
    kinds: dict[str, int] = field(default_factory=dict)


class _Lines:
    """Lines of a plain or gzip file with their 1-based number and byte offset (decompressed)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.raw: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed by close()
        magic = self.raw.read(2)
        self.raw.seek(0)
        gz = magic == b"\x1f\x8b"
        self.fh: IO[bytes] = cast(IO[bytes], gzip.GzipFile(fileobj=self.raw)) if gz else self.raw

    def __iter__(self) -> Iterator[tuple[int, int, bytes]]:
        offset = 0
        for n, line in enumerate(self.fh, 1):
            yield n, offset, line
            offset += len(line)

    def close(self) -> None:
        if self.fh is not self.raw:
            self.fh.close()
        self.raw.close()


class _LineSource:
    """What both line formats share: the Source protocol, warnings with file and line."""

    format = "log"

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.total_bytes = os.path.getsize(path)
            self._lines = _Lines(path)
        except OSError as exc:
            raise CaptureFormatError(path, None, exc.strerror or str(exc)) from None
        self.log = LogCounters()
        #: The reader counters the pipeline reports (the same object as `log`).
        self.counters: ReaderCounters = self.log
        self.warnings: list[InputWarning] = []

    @property
    def progress_bytes(self) -> int:
        try:
            return self._lines.raw.tell()
        except (OSError, ValueError):
            return self.total_bytes

    def warn(self, kind: str, line: int, offset: int, message: str) -> None:
        c = self.log
        c.warnings_by_kind[kind] = c.warnings_by_kind.get(kind, 0) + 1
        c.corrupt_records += 1
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(InputWarning(self.path, offset, kind, f"line {line}: {message}"))

    def count(self, kind: str) -> None:
        self.log.kinds[kind] = self.log.kinds.get(kind, 0) + 1

    def close(self) -> None:
        self._lines.close()

    def _batches(self, parse: Any) -> Iterator[RecordBatch]:
        batch: list[AuthEvent] = []
        lines = 0
        try:
            for n, offset, raw in self._lines:
                lines += 1
                self.log.lines += 1
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                if text.strip():
                    batch.extend(parse(text, n, offset))
                if lines >= BATCH_LINES:
                    self.log.events += len(batch)
                    yield RecordBatch(auth=batch, records=lines)
                    batch, lines = [], 0
        except (OSError, EOFError) as exc:  # a truncated gzip: keep what was read
            self.warn("truncated", self.log.lines, 0, f"input ends early ({exc})")
            self.log.truncated_records += 1
        if lines or batch:
            self.log.events += len(batch)
            yield RecordBatch(auth=batch, records=lines)


class AuthLogSource(_LineSource):
    """OpenSSH / Linux auth.log syslog lines as `AuthEvent`s (see the module doc)."""

    format = "auth.log"

    def __init__(self, path: str, *, year: int | None = None, tz: str = "UTC") -> None:
        super().__init__(path)
        self.tz = ZoneInfo(tz)
        if year is None:
            year = _env_year()
        self._year_given = year is not None
        mtime = datetime.fromtimestamp(os.path.getmtime(path), self.tz)
        self._mtime = mtime
        self._year = year if year is not None else mtime.year
        self._last_month: int | None = None
        self._base = os.path.basename(path)

    def __iter__(self) -> Iterator[RecordBatch]:
        return self._batches(self._parse)

    def _stamp_3164(self, mon: str, day: str, hms: str) -> int | None:
        month = _MONTHS.get(mon)
        if month is None:
            return None
        if self._last_month is None:
            if not self._year_given and month > self._mtime.month:
                self._year -= 1  # the log cannot have been written after its mtime
        elif month < self._last_month - 6:
            self._year += 1  # Dec → Jan: a new year
        elif month > self._last_month + 6:
            self._year -= 1  # a late line from December after January started
        self._last_month = month
        try:
            h, mi, s = (int(x) for x in hms.split(":"))
            dt = datetime(self._year, month, int(day), h, mi, s, tzinfo=self.tz)
        except ValueError:
            return None
        return int(dt.timestamp()) * 1_000_000_000

    def _parse(self, text: str, n: int, offset: int) -> list[AuthEvent]:
        ts_ns: int | None
        m = RE_3164.match(text)
        if m is not None:
            ts_ns = self._stamp_3164(m.group("mon"), m.group("day"), m.group("time"))
        else:
            m = RE_5424.match(text) or RE_ISO.match(text)
            ts_ns = parse_time(m.group("ts"), self.tz) if m is not None else None
        if m is None or ts_ns is None:
            self.count("malformed")
            self.warn("malformed_line", n, offset, f"not a syslog line: {text[:80]!r}")
            return []
        c = classify(m.group("prog"), m.group("msg") or "")
        if c is None:
            self.count("other_program")
            return []
        self.count(c.kind)
        if c.outcome is None:
            return []
        ev = AuthEvent(
            ts_ns=ts_ns, outcome=c.outcome, service=c.service, source="syslog", user=c.user,
            src_ip=c.src_ip, src_port=c.src_port, host=m.group("host"), method=c.method,
            reason=c.reason,
        )  # fmt: skip
        return [ev] * c.repeat


def _env_year() -> int | None:
    """TAPETUM_SYSLOG_YEAR: the year of RFC 3164 lines when the file's mtime would be wrong
    (a copied or restored log)."""
    v = os.environ.get("TAPETUM_SYSLOG_YEAR")
    return int(v) if v and v.isdigit() else None


def parse_time(value: str | float | int, tz: Any = None) -> int | None:
    """ns since the epoch from ISO 8601 text (naive = `tz`, default UTC) or epoch seconds (a
    number or numeric text; values from 1e11 on are taken as ms, from 1e14 µs, from 1e17 ns)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        s = value.strip()
        try:
            num = Decimal(s)
        except InvalidOperation:
            try:
                dt = datetime.fromisoformat(s)
            except ValueError:
                return None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=tz or ZoneInfo("UTC"))
            return calendar.timegm(dt.utctimetuple()) * 1_000_000_000 + dt.microsecond * 1000
        if not num.is_finite():
            return None
    else:
        if value != value or value in (float("inf"), float("-inf")):
            return None
        num = Decimal(value) if isinstance(value, int) else Decimal(repr(value))
    if num < 0:
        return None
    for limit, scale in ((Decimal(10**17), 1), (Decimal(10**14), 1000), (Decimal(10**11), 10**6)):
        if num >= limit:
            return int(num * scale)
    return int(num * 1_000_000_000)


# -- the generic JSON lines format and Windows JSON exports ----------------------------------

#: Field names of the generic format (docs/auth.md).
GENERIC_FIELDS = ("ts", "outcome", "user", "src_ip", "src_port", "service", "host", "dest_ip",
                  "method", "reason")  # fmt: skip
OUTCOMES = {"success": "success", "failure": "failure", "other": "other", "succeeded": "success",
            "failed": "failure", "fail": "failure", "ok": "success"}  # fmt: skip


def generic_event(obj: dict[str, Any]) -> AuthEvent:
    """One generic JSON object as an AuthEvent (ValueError names what is wrong)."""
    if "ts" not in obj:
        raise ValueError("no 'ts' field")
    ts = parse_time(obj["ts"])
    if ts is None:
        raise ValueError(f"'ts' is not ISO 8601 or epoch seconds: {obj['ts']!r}")
    outcome = OUTCOMES.get(str(obj.get("outcome", "")).lower())
    if outcome is None:
        raise ValueError(f"'outcome' must be success, failure or other: {obj.get('outcome')!r}")

    def text(key: str) -> str | None:
        v = obj.get(key)
        return None if v is None or v == "" else str(v)

    src_ip = text("src_ip")
    if src_ip is not None and _ip(src_ip) is None:
        raise ValueError(f"'src_ip' is not an address: {src_ip!r}")
    port = obj.get("src_port")
    if port is not None and not (isinstance(port, int) and 0 <= port <= 65535):
        raise ValueError(f"'src_port' is not a port number: {port!r}")
    return AuthEvent(
        ts_ns=ts, outcome=outcome, service=text("service") or "unknown", source="json",
        user=text("user"), src_ip=_ip(src_ip), src_port=port, host=text("host"),
        dest_ip=_ip(text("dest_ip")), method=text("method"), reason=text("reason"),
    )  # fmt: skip


class JsonAuthSource(_LineSource):
    """JSON lines of authentication events: the generic format, or Windows Security events
    exported as JSON (Winlogbeat/ECS or flat EventData; see `tapetum.sources.winauth`)."""

    format = "auth-json"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.windows_ignored = 0

    def __iter__(self) -> Iterator[RecordBatch]:
        return self._batches(self._parse)

    def _parse(self, text: str, n: int, offset: int) -> list[AuthEvent]:
        from tapetum.sources.winauth import event_from_json, is_windows_json

        try:
            obj = json.loads(text)
        except ValueError as exc:
            self.count("malformed")
            self.warn("malformed_json", n, offset, f"not JSON ({exc}): {text[:80]!r}")
            return []
        if not isinstance(obj, dict):
            self.count("malformed")
            self.warn("malformed_json", n, offset, "a JSON value that is not an object")
            return []
        try:
            if is_windows_json(obj):
                ev = event_from_json(obj)
                if ev is None:
                    self.count("windows_other_event")
                    return []
                self.count("windows")
                return [ev]
            ev = generic_event(obj)
        except ValueError as exc:
            self.count("invalid")
            self.warn("invalid_event", n, offset, str(exc))
            return []
        self.count("generic")
        return [ev]


def probe_syslog(path: str, head: bytes) -> bool:
    """A syslog file with authentication lines (sshd, sudo, su, PAM) in its first lines."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("utf-8", "replace")
        if text.count("\ufffd") > 4:
            return False
    lines = [ln for ln in text.splitlines()[:40] if ln.strip()]
    if not lines:
        return False
    syslog = auth = 0
    for ln in lines:
        m = RE_3164.match(ln) or RE_5424.match(ln) or RE_ISO.match(ln)
        if m is None:
            continue
        syslog += 1
        prog = m.group("prog").lower()
        if prog in ("sshd", "sshd-session", "sshd-auth", "sudo", "su") or "pam_unix" in ln:
            auth += 1
    return auth > 0 and syslog >= max(1, (len(lines) - 1) // 2)


def probe_json(path: str, head: bytes) -> bool:
    """JSON lines whose first object has the generic fields (ts + outcome) or a Windows
    event id."""
    from tapetum.sources.winauth import is_windows_json

    first = head.lstrip().split(b"\n", 1)[0]
    if not first.startswith(b"{"):
        return False
    try:
        obj = json.loads(first)
    except ValueError:
        return False
    if not isinstance(obj, dict):
        return False
    return ("ts" in obj and "outcome" in obj) or is_windows_json(obj)
