"""Syslog export: RFC 5424 and CEF messages of the demo capture's alerts received by real UDP and
TCP listeners on loopback (and by rsyslogd when it is installed), parsed back and compared."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapetum.cli import demo_capture
from tapetum.config import Config
from tapetum.errors import ConfigError
from tapetum.pipeline import Pipeline, Summary
from tapetum.records import Alert, Incident
from tapetum.sinks.syslog import SyslogSink, cef_line, parse_target, rfc5424

HEADER = re.compile(
    r"^<(?P<pri>\d{1,3})>1 (?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (?P<host>\S+) "
    r"(?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+) (?P<rest>.*)$",
    re.S,
)
SD_PARAM = re.compile(r'\s*([^\s=\]"]+)="((?:[^"\\\]]|\\.)*)"')


def parse_rfc5424(raw: bytes) -> tuple[dict[str, str], str, dict[str, str], str]:
    """(header, sd-id, params, msg): a strict parser of the subset the sink writes."""
    m = HEADER.match(raw.decode("utf-8"))
    assert m, raw
    head = m.groupdict()
    rest = head.pop("rest")
    if rest.startswith("- "):
        return head, "-", {}, rest[2:]
    assert rest.startswith("["), rest
    sd_id, _, body = rest[1:].partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while True:
        pm = SD_PARAM.match(body, pos)
        if not pm:
            break
        params[pm.group(1)] = re.sub(r"\\(.)", r"\1", pm.group(2))
        pos = pm.end()
    assert body[pos : pos + 2] == "] ", body[pos:]
    return head, sd_id, params, body[pos + 2 :]


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """CEF:0|…|…|…|…|…|…|ext: header fields split on unescaped pipes, extension keys found
    before unescaped '=', values unescaped."""
    assert line.startswith("CEF:0|")
    fields, cur, i = [], "", 6
    while len(fields) < 6:
        c = line[i]
        if c == "\\":
            cur += line[i + 1]
            i += 2
            continue
        if c == "|":
            fields.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    ext_text = line[i:]
    keys = list(re.finditer(r"(?:^| )([A-Za-z0-9_]+)=", ext_text))
    ext: dict[str, str] = {}
    for k, m in enumerate(keys):
        end = keys[k + 1].start() if k + 1 < len(keys) else len(ext_text)
        raw = ext_text[m.end() : end]
        ext[m.group(1)] = re.sub(
            r"\\(.)", lambda x: {"n": "\n", "r": "\r"}.get(x.group(1), x.group(1)), raw
        )
    return fields, ext


class Udp:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2.0)
        self.port = self.sock.getsockname()[1]

    def receive(self, n: int) -> list[bytes]:
        return [self.sock.recv(65535) for _ in range(n)]


class Tcp:
    """A collector that reads RFC 6587 octet-counted frames."""

    def __init__(self) -> None:
        self.srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(4)
        self.port = self.srv.getsockname()[1]
        self.data = b""
        self.connections = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                while chunk := conn.recv(65536):
                    self.data += chunk

    def frames(self) -> list[bytes]:
        out, buf = [], self.data
        while buf:
            length, _, rest = buf.partition(b" ")
            assert length.isdigit(), buf[:40]
            n = int(length)
            out.append(rest[:n])
            buf = rest[n:]
        return out

    def close(self) -> None:
        self.srv.close()


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[Summary, list[bytes], list[bytes]]]:
    udp, tcp = Udp(), Tcp()
    plain = SyslogSink(f"udp://127.0.0.1:{udp.port}", hostname="sensor-1")
    cef = SyslogSink(f"tcp://127.0.0.1:{tcp.port}", cef=True, hostname="sensor-1")
    summary = Pipeline(Config(), [plain, cef]).run([str(demo_capture())])
    plain.close()
    cef.close()
    n = len(summary.alerts) + len(summary.incidents)
    got_udp = udp.receive(n)
    deadline = time.monotonic() + 5
    while len(tcp.frames()) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    yield summary, got_udp, tcp.frames()
    tcp.close()
    udp.sock.close()
    assert (plain.sent, cef.sent, plain.failed, cef.failed) == (n, n, 0, 0)


def test_rfc5424_over_udp(demo: tuple[Summary, list[bytes], list[bytes]]) -> None:
    summary, got, _ = demo
    alerts = {a.alert_id: a for a in summary.alerts}
    incidents = {i.incident_id: i for i in summary.incidents}
    assert len(got) == len(alerts) + len(incidents) == 8
    for raw in got:
        head, sd_id, params, msg = parse_rfc5424(raw)
        assert (head["host"], head["app"], sd_id) == ("sensor-1", "tapetum", "tapetum@32473")
        assert msg.startswith("\ufeff")
        pri = int(head["pri"])
        assert pri // 8 == 16  # local0
        if head["msgid"] == "alert":
            a = alerts[params["id"]]
            assert msg[1:] == a.explanation
            assert params["signature"] == a.signature and params["sid"] == str(a.signature_id)
            assert params["src"] == a.src_ip and params["entity"] == a.entity
            assert params["technique"] == ",".join(a.mitre_technique_id)
            assert pri % 8 == {1: 2, 2: 4, 3: 5}[a.severity]
        else:
            i = incidents[params["id"]]
            assert msg[1:] == i.summary and params["title"] == i.title
            assert params["alerts"] == str(i.alert_count)


def test_cef_over_tcp_octet_counting(demo: tuple[Summary, list[bytes], list[bytes]]) -> None:
    summary, _, frames = demo
    alerts = {a.alert_id: a for a in summary.alerts}
    assert len(frames) == len(summary.alerts) + len(summary.incidents)
    seen = 0
    for raw in frames:
        head, sd_id, _, msg = parse_rfc5424(raw)
        assert sd_id == "-"
        fields, ext = parse_cef(msg)
        assert fields[:2] == ["Tapetum", "Tapetum"]
        if head["msgid"] == "alert":
            a = alerts[ext["externalId"]]
            assert fields[3:6] == [
                str(a.signature_id),
                a.signature,
                str({1: 8, 2: 5, 3: 3}[a.severity]),
            ]
            assert ext["msg"] == a.explanation and ext["src"] == a.src_ip
            assert ext["rt"] == str(a.ts_ns // 1_000_000)
            assert ext["cs1Label"] == "entity" and ext["cs1"] == a.entity
            seen += 1
    assert seen == len(alerts)


NASTY = 'quote " backslash \\ bracket ] pipe | equals = line\nbreak\r'


def nasty_alert() -> Alert:
    return Alert(
        alert_id="a1", ts_ns=1_772_442_940_123_456_789, signature="test.x|y", signature_id=1,
        category="anomaly", severity=1, score=0.9, explanation=NASTY, entity='h"]\\',
        src_ip="10.0.0.1", dest_ip="10.0.0.2", dest_port=22, proto="TCP",
        mitre_technique_id=("T1046",), mitre_tactic=("discovery",),
    )  # fmt: skip


def test_rfc5424_escaping() -> None:
    raw = rfc5424(nasty_alert(), hostname="bad host\n名")
    head, _, params, msg = parse_rfc5424(raw)
    assert head["host"] == "badhost"  # printable US-ASCII only, no spaces
    assert head["ts"] == "2026-03-02T09:15:40.123456Z"
    assert params["entity"] == 'h"]\\' and params["signature"] == "test.x|y"
    assert msg == "\ufeff" + NASTY


def test_cef_escaping() -> None:
    line = cef_line(nasty_alert())
    assert "\n" not in line and "\r" not in line
    fields, ext = parse_cef(line)
    assert fields[4] == "test.x|y"
    assert ext["msg"] == NASTY
    assert ext["cs1"] == 'h"]\\'
    inc = Incident(
        incident_id="i1", ts_ns=1, first_ts_ns=1, last_ts_ns=2, entity="10.0.0.1",
        title="a | b\nc", summary="x=y", severity=2, confidence=0.7, alert_count=1,
        alert_ids=("a1",), signatures=("test.x",), categories=("anomaly",), users=("bob",),
    )  # fmt: skip
    fields, ext = parse_cef(cef_line(inc))
    assert fields[4] == "a | b c" and ext["msg"] == "x=y" and ext["suser"] == "bob"


def test_tcp_reconnects_after_the_collector_drops_the_connection() -> None:
    """The collector closes the connection: the sink notices on a later send and reconnects.
    (A message written into a connection the peer already closed can be lost without an error:
    plain TCP syslog has no acknowledgements, RFC 6587 §4.)"""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(2)
    srv.settimeout(5)
    sink = SyslogSink(f"tcp://127.0.0.1:{srv.getsockname()[1]}", hostname="h")
    try:
        sink.write([nasty_alert()])
        first, _ = srv.accept()
        first.settimeout(2)
        assert first.recv(65536).split(b" ", 1)[0].isdigit()
        first.close()  # the collector restarts its side
        time.sleep(0.1)
        for _ in range(3):
            sink.write([nasty_alert()])
            time.sleep(0.05)
        second, _ = srv.accept()
        second.settimeout(2)
        data = second.recv(65536)
        second.close()
    finally:
        sink.close()
        srv.close()
    length, _, msg = data.partition(b" ")
    assert int(length) <= len(msg)  # one or more octet-counted frames on the new connection
    assert parse_rfc5424(msg[: int(length)])[2]["id"] == "a1"
    assert sink.sent == 4 and sink.failed == 0


def test_targets() -> None:
    assert parse_target("udp://[::1]:5514") == ("udp", "::1", 5514)
    assert parse_target("tcp://collector.example") == ("tcp", "collector.example", 514)
    for bad in ("http://x:1", "udp://", "x"):
        with pytest.raises(ConfigError):
            parse_target(bad)
    dead = SyslogSink("tcp://127.0.0.1:1", hostname="h", timeout_s=0.5)
    dead.write([nasty_alert()])
    assert (dead.sent, dead.failed) == (0, 1) and dead.warnings()


@pytest.mark.skipif(shutil.which("rsyslogd") is None, reason="rsyslog not installed")
def test_real_rsyslog_receives_both_transports(tmp_path: Path) -> None:
    """rsyslogd's own RFC 5424 parser: it must split our header and structured data."""
    udp_port, tcp_port = _free_port(socket.SOCK_DGRAM), _free_port(socket.SOCK_STREAM)
    out = tmp_path / "out.log"
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(
        f'global(workDirectory="{tmp_path}")\n'
        'module(load="imudp")\nmodule(load="imtcp")\n'
        f'input(type="imudp" address="127.0.0.1" port="{udp_port}")\n'
        f'input(type="imtcp" address="127.0.0.1" port="{tcp_port}")\n'
        'template(name="t" type="string" string="%hostname%#~#%app-name%#~#%msgid%#~#'
        '%structured-data%#~#%msg%\\n")\n'
        f'action(type="omfile" file="{out}" template="t")\n'
    )
    log = (tmp_path / "rsyslogd.log").open("wb")
    proc = subprocess.Popen(
        ["rsyslogd", "-n", "-f", str(conf), "-i", str(tmp_path / "pid")],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ},
    )  # fmt: skip
    try:
        _wait_port(tcp_port)
        plain = SyslogSink(f"udp://127.0.0.1:{udp_port}", hostname="sensor-1")
        cef = SyslogSink(f"tcp://127.0.0.1:{tcp_port}", hostname="sensor-2", cef=True)
        a = nasty_alert()
        plain.write([a])
        cef.write([a])
        plain.close()
        cef.close()
        deadline = time.monotonic() + 10
        lines: list[str] = []
        while time.monotonic() < deadline:
            lines = out.read_text().splitlines() if out.exists() else []
            if len(lines) >= 2:
                break
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
    assert len(lines) >= 2, (lines, (tmp_path / "rsyslogd.log").read_text())
    udp_line = next(x for x in lines if x.startswith("sensor-1#~#"))
    tcp_line = next(x for x in lines if x.startswith("sensor-2#~#"))
    _, app, msgid, sd, msg = udp_line.split("#~#", 4)
    assert (app, msgid) == ("tapetum", "alert")
    assert sd.startswith("[tapetum@32473 ") and 'signature="test.x|y"' in sd
    assert 'entity="h\\"\\]\\\\"' in sd  # escaped as sent, and the SD did not end early
    # rsyslog keeps the BOM and shows the line break as #012 (its control-character escape).
    assert msg == "\ufeff" + NASTY.replace("\n", "#012").replace("\r", "#015")
    assert "CEF:0|Tapetum|Tapetum|" in tcp_line and "test.x\\|y" in tcp_line


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("rsyslogd did not start listening")
