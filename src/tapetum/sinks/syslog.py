"""Alerts and incidents to a syslog collector: RFC 5424 messages, optionally carrying CEF.

Transports: UDP (RFC 5426, one message per datagram) and TCP (RFC 6587 octet counting:
`LEN SP MSG`). Targets are URLs: `udp://HOST:PORT` or `tcp://HOST:PORT` (IPv6 hosts in brackets).

Plain mode: the MSG is the explanation (UTF-8, with the BOM RFC 5424 asks for) and the facts are
structured data `[tapetum@32473 …]` (32473 is the private enterprise number RFC 5612 reserves
for documentation; a site with its own number can set `sd_id`). CEF mode (`syslog+cef:`): the
MSG is an ArcSight CEF:0 line. Flows and application events are not sent (a collector would
drown); they are counted in `skipped`.
"""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any
from urllib.parse import urlsplit

from tapetum import __version__
from tapetum.errors import ConfigError
from tapetum.flows.meter import FlowBatch
from tapetum.records import Alert, Incident
from tapetum.sinks.base import Record

#: syslog facility local0 (RFC 5424 table 1: 16).
FACILITY_LOCAL0 = 16
#: Tapetum severity (1 high .. 3 low) -> syslog severity (2 critical, 4 warning, 5 notice).
SYSLOG_SEVERITY = {1: 2, 2: 4, 3: 5}
#: Tapetum severity -> CEF severity 0..10.
CEF_SEVERITY = {1: 8, 2: 5, 3: 3}
BOM = "\ufeff"
#: Datagrams above this are truncated (RFC 5426 receivers must take 480, should take 2048;
#: common collectors take 8 KiB and more).
MAX_UDP_BYTES = 8192
SD_ID = "tapetum@32473"


def sd_escape(value: str) -> str:
    """PARAM-VALUE escaping (RFC 5424 §6.3.3): `"`, `\\` and `]` get a backslash."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_field(value: str, max_len: int) -> str:
    """HOSTNAME/APP-NAME/MSGID: printable US-ASCII without spaces, '-' when empty."""
    clean = "".join(c for c in value if 33 <= ord(c) <= 126)[:max_len]
    return clean or "-"


def cef_header_escape(value: str) -> str:
    """CEF header fields: `\\` and `|` escaped; newlines are not allowed (become spaces)."""
    out = value.replace("\\", "\\\\").replace("|", "\\|")
    return out.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def cef_ext_escape(value: str) -> str:
    """CEF extension values: `\\` and `=` escaped, line breaks as \\n / \\r."""
    out = value.replace("\\", "\\\\").replace("=", "\\=")
    return out.replace("\r", "\\r").replace("\n", "\\n")


def rfc3339(ns: int) -> str:
    t = dt.datetime.fromtimestamp(ns // 1_000_000_000, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{(ns // 1000) % 1_000_000:06d}Z"


def _facts(r: Alert | Incident) -> tuple[str, str, int, dict[str, Any]]:
    """(msgid, text, severity, structured facts) of an alert or an incident."""
    if isinstance(r, Alert):
        facts: dict[str, Any] = {
            "id": r.alert_id,
            "signature": r.signature,
            "sid": r.signature_id,
            "category": r.category,
            "entity": r.entity,
            "score": round(r.score, 4),
            "src": r.src_ip,
            "spt": r.src_port,
            "dst": r.dest_ip,
            "dpt": r.dest_port,
            "proto": r.proto,
            "technique": ",".join(r.mitre_technique_id) or None,
            "tactic": ",".join(r.mitre_tactic) or None,
        }
        return "alert", r.explanation, r.severity, facts
    facts = {
        "id": r.incident_id,
        "title": r.title,
        "entity": r.entity,
        "stage": r.stage,
        "confidence": round(r.confidence, 4),
        "alerts": r.alert_count,
        "src": r.src_ip,
        "dst": ",".join(r.dest_ips) or None,
        "technique": ",".join(r.mitre_technique_id) or None,
        "tactic": ",".join(r.mitre_tactic) or None,
        "users": ",".join(r.users) or None,
    }
    return "incident", r.summary, r.severity, facts


def rfc5424(
    r: Alert | Incident,
    *,
    hostname: str,
    app_name: str = "tapetum",
    facility: int = FACILITY_LOCAL0,
    sd_id: str = SD_ID,
    cef: bool = False,
) -> bytes:
    """One RFC 5424 message (no framing) for an alert or an incident."""
    msgid, text, sev, facts = _facts(r)
    pri = facility * 8 + SYSLOG_SEVERITY.get(sev, 5)
    head = (
        f"<{pri}>1 {rfc3339(r.ts_ns)} {_header_field(hostname, 255)} "
        f"{_header_field(app_name, 48)} - {_header_field(msgid, 32)}"
    )
    if cef:
        return f"{head} - {cef_line(r)}".encode()
    params = " ".join(
        f'{k}="{sd_escape(str(v))}"' for k, v in facts.items() if v is not None and v != ""
    )
    return f"{head} [{sd_id} {params}] {BOM}{text}".encode()


def cef_line(r: Alert | Incident) -> str:
    """CEF:0|Vendor|Product|Version|SignatureID|Name|Severity|Extension."""
    _, text, sev, facts = _facts(r)
    if isinstance(r, Alert):
        sig_id, name = str(r.signature_id), r.signature
        ext: dict[str, Any] = {
            "rt": r.ts_ns // 1_000_000,
            "src": r.src_ip,
            "spt": r.src_port,
            "dst": r.dest_ip,
            "dpt": r.dest_port,
            "proto": r.proto,
            "cat": r.category,
            "msg": text,
            "externalId": r.alert_id,
            "cs1Label": "entity",
            "cs1": r.entity,
            "cs2Label": "mitreTechnique",
            "cs2": facts["technique"],
            "cs3Label": "mitreTactic",
            "cs3": facts["tactic"],
            "cfp1Label": "score",
            "cfp1": round(r.score, 4),
        }
    else:
        sig_id, name = "incident", r.title
        ext = {
            "rt": r.ts_ns // 1_000_000,
            "start": r.first_ts_ns // 1_000_000,
            "end": r.last_ts_ns // 1_000_000,
            "src": r.src_ip,
            "cat": ",".join(r.categories),
            "msg": text,
            "externalId": r.incident_id,
            "cnt": r.alert_count,
            "cs1Label": "entity",
            "cs1": r.entity,
            "cs2Label": "mitreTechnique",
            "cs2": facts["technique"],
            "cs3Label": "mitreTactic",
            "cs3": facts["tactic"],
            "cs4Label": "stage",
            "cs4": r.stage,
            "suser": facts["users"],
        }
    # A label without its value says nothing: drop both.
    for i in range(1, 5):
        if ext.get(f"cs{i}") is None:
            ext.pop(f"cs{i}Label", None)
    header = "|".join(
        cef_header_escape(x)
        for x in ("Tapetum", "Tapetum", __version__, sig_id, name, str(CEF_SEVERITY.get(sev, 3)))
    )
    body = " ".join(f"{k}={cef_ext_escape(str(v))}" for k, v in ext.items() if v is not None)
    return f"CEF:0|{header}|{body}"


def parse_target(url: str) -> tuple[str, str, int]:
    """`udp://host:port` / `tcp://[::1]:port` -> (transport, host, port)."""
    parts = urlsplit(url)
    if parts.scheme not in ("udp", "tcp") or not parts.hostname:
        raise ConfigError(f"syslog target {url!r}: expected udp://HOST:PORT or tcp://HOST:PORT")
    try:
        port = parts.port or 514
    except ValueError:
        raise ConfigError(f"syslog target {url!r}: bad port") from None
    return parts.scheme, parts.hostname, port


class SyslogSink:
    """Sends alerts and incidents; a broken TCP connection is reopened once per message."""

    def __init__(
        self,
        url: str,
        *,
        cef: bool = False,
        hostname: str | None = None,
        facility: int = FACILITY_LOCAL0,
        timeout_s: float = 5.0,
    ) -> None:
        self.transport, self.host, self.port = parse_target(url)
        self.cef = cef
        self.hostname = hostname or socket.gethostname()
        self.facility = facility
        self.timeout_s = timeout_s
        self.sent = 0
        self.failed = 0
        self.truncated = 0
        self.skipped = 0
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        if self._sock is None:
            family = socket.getaddrinfo(self.host, self.port)[0][0]
            kind = socket.SOCK_DGRAM if self.transport == "udp" else socket.SOCK_STREAM
            s = socket.socket(family, kind)
            s.settimeout(self.timeout_s)
            try:
                s.connect((self.host, self.port))
            except OSError:
                s.close()
                raise
            self._sock = s
        return self._sock

    def _send(self, msg: bytes) -> None:
        if self.transport == "udp":
            if len(msg) > MAX_UDP_BYTES:
                # Cut at a character boundary: a collector must still decode the UTF-8.
                msg = msg[:MAX_UDP_BYTES].decode("utf-8", "ignore").encode()
                self.truncated += 1
            frame = msg
        else:
            frame = str(len(msg)).encode() + b" " + msg
        for attempt in (0, 1):
            try:
                sock = self._connect()
                if self.transport == "udp":
                    sock.send(frame)
                else:
                    sock.sendall(frame)
                self.sent += 1
                return
            except OSError:
                self._close_socket()
                if attempt:
                    self.failed += 1

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def write_flows(self, flows: FlowBatch, services: list[str]) -> None:
        pass  # flows are not sent to syslog (see the module docstring)

    def write(self, records: list[Record]) -> None:
        for r in records:
            if isinstance(r, Alert | Incident):
                self._send(rfc5424(r, hostname=self.hostname, facility=self.facility, cef=self.cef))
            else:
                self.skipped += 1

    def flush(self) -> None:
        pass  # every message is sent when written

    def warnings(self) -> list[str]:
        out = []
        if self.failed:
            out.append(f"syslog {self.transport}://{self.host}:{self.port}: "
                       f"{self.failed} of {self.failed + self.sent} messages not sent")  # fmt: skip
        if self.truncated:
            out.append(f"syslog: {self.truncated} messages cut to {MAX_UDP_BYTES} bytes (UDP)")
        return out

    def close(self) -> None:
        self._close_socket()
