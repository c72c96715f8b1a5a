"""auth.log syslog and generic JSON lines: classification checked against loghub's own
structured parse of the real OpenSSH_2k.log, years, repeats, bad lines."""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from tapetum.pipeline import Pipeline
from tapetum.records import AuthEvent
from tapetum.registry import open_source
from tapetum.sources.authlog import AuthLogSource, JsonAuthSource, classify
from tests.conftest import data_path

#: loghub template id -> the kind our classifier gives the line.
KIND_OF = {
    "E1": "accepted", "E2": "closed_preauth", "E3": "no_identification",
    "E4": "too_many_failures", "E5": "too_many_failures", "E6": "disconnect_error",
    "E7": "disconnect_error", "E8": "failed", "E9": "failed", "E10": "failed", "E11": "fatal",
    "E12": "invalid_user_request", "E13": "invalid_user", "E14": "repeated",
    "E15": "pam_more_failures", "E16": "pam_more_failures", "E17": "pam_more_failures",
    "E18": "pam_ignoring_max_retries", "E19": "pam_auth_failure", "E20": "pam_auth_failure",
    "E21": "pam_check_pass", "E22": "session_closed", "E23": "session_opened",
    "E24": "received_disconnect", "E25": "received_disconnect", "E26": "received_disconnect",
    "E27": "reverse_mapping",
}  # fmt: skip


def _events(src: AuthLogSource | JsonAuthSource) -> list[AuthEvent]:
    out: list[AuthEvent] = []
    for batch in src:
        out.extend(batch.auth)
    src.close()
    return out


def _structured() -> list[dict[str, str]]:
    p = data_path("auth", "openssh_2k", "OpenSSH_2k.log_structured.csv")
    with open(p, newline="") as fh:
        return list(csv.DictReader(fh))


def test_openssh_2k_kinds_match_loghub_templates() -> None:
    path = data_path("auth", "openssh_2k", "OpenSSH_2k.log")
    rows = _structured()
    src = AuthLogSource(str(path), year=2024)
    events = _events(src)
    expected = Counter(KIND_OF[r["EventId"]] for r in rows)
    assert src.log.kinds == dict(expected)
    assert src.log.lines == 2000 and not src.warnings
    # Per line: the classifier agrees with the template, and extracts the template's user and IP.
    for r in rows:
        c = classify("sshd", r["Content"])
        assert c is not None and c.kind == KIND_OF[r["EventId"]], r
        if r["EventId"] in ("E1", "E9", "E10"):
            rx = re.escape(r["EventTemplate"]).replace(re.escape("<*>"), "(.*?)") + "$"
            m = re.match(rx, r["Content"])
            assert m is not None
            user, ip = m.group(1), m.group(2)
            assert (c.user, c.src_ip) == (user, ip), r
    out = Counter(e.outcome for e in events)
    # 1 Accepted; 522 Failed lines + 2 "message repeated 5 times" undone into 10 failures.
    assert out["success"] == 1
    assert out["failure"] == 522 + 10
    ev = next(e for e in events if e.outcome == "success")
    assert (ev.user, ev.src_ip, ev.src_port, ev.method, ev.host) == (
        "fztu", "119.137.62.142", 49116, "password", "LabSZ")  # fmt: skip
    assert ev.ts_ns == int(datetime(2024, 12, 10, 9, 32, 20, tzinfo=UTC).timestamp()) * 10**9
    invalid = [e for e in events if e.outcome == "failure" and e.reason == "invalid user"]
    assert len(invalid) == Counter(r["EventId"] for r in rows)["E10"] + 4  # E8: none, invalid


def test_repeated_message_expands(tmp_path: Path) -> None:
    p = tmp_path / "auth.log"
    p.write_text(
        "Mar  1 10:00:00 h sshd[1]: Failed password for root from 192.0.2.9 port 4000 ssh2\n"
        "Mar  1 10:00:09 h sshd[1]: message repeated 3 times: [ Failed password for root from "
        "192.0.2.9 port 4000 ssh2]\n"
    )
    events = _events(AuthLogSource(str(p), year=2023))
    assert [e.outcome for e in events] == ["failure"] * 4
    assert {e.user for e in events} == {"root"} and events[-1].ts_ns > events[0].ts_ns


def test_year_from_mtime_and_rollover(tmp_path: Path) -> None:
    p = tmp_path / "auth.log"
    p.write_text(
        "Dec 31 23:59:58 h sshd[1]: Accepted publickey for bob from 192.0.2.1 port 1 ssh2\n"
        "Jan  1 00:00:03 h sshd[2]: Accepted publickey for bob from 192.0.2.1 port 2 ssh2\n"
        "Dec 31 23:59:59 h sshd[3]: Accepted publickey for bob from 192.0.2.1 port 3 ssh2\n"
        "Jan  1 00:00:05 h sshd[4]: Accepted publickey for bob from 192.0.2.1 port 4 ssh2\n"
    )
    # Written in January 2025: the December lines are of 2024.
    mtime = datetime(2025, 1, 2, tzinfo=UTC).timestamp()
    os.utime(p, (mtime, mtime))
    years = [datetime.fromtimestamp(e.ts_ns / 1e9, UTC).year
             for e in _events(AuthLogSource(str(p)))]  # fmt: skip
    assert years == [2024, 2025, 2024, 2025]
    # Given explicitly, the year is the first line's.
    years = [datetime.fromtimestamp(e.ts_ns / 1e9, UTC).year
             for e in _events(AuthLogSource(str(p), year=2019))]  # fmt: skip
    assert years == [2019, 2020, 2019, 2020]


def test_iso_and_rfc5424_and_other_services(tmp_path: Path) -> None:
    p = tmp_path / "secure.gz"
    text = (
        "2024-05-01T08:00:00.250+02:00 web1 sshd[7]: Accepted keyboard-interactive/pam for "
        "carol from 2001:db8::5 port 51000 ssh2\n"
        "<38>1 2024-05-01T06:01:00Z web1 sshd 8 - - Failed publickey for carol from "
        "198.51.100.4 port 52000 ssh2\n"
        "2024-05-01T06:02:00Z web1 sudo: carol : TTY=pts/0 ; PWD=/home/carol ; USER=root ; "
        "COMMAND=/usr/bin/id\n"
        "2024-05-01T06:03:00Z web1 login[9]: pam_unix(login:auth): authentication failure; "
        "logname=LOGIN uid=0 euid=0 tty=tty1 ruser= rhost=  user=dave\n"
        "2024-05-01T06:04:00Z web1 CRON[10]: pam_unix(cron:session): session opened\n"
        "2024-05-01T06:05:00Z web1 sshd[11]: Connection closed by authenticating user eve "
        "203.0.113.8 port 40000 [preauth]\n"
    )
    with gzip.open(p, "wt") as fh:
        fh.write(text)
    src = open_source(str(p))
    assert isinstance(src, AuthLogSource)
    events = _events(src)
    assert [(e.outcome, e.service, e.user) for e in events] == [
        ("success", "ssh", "carol"), ("failure", "ssh", "carol"), ("other", "sudo", "carol"),
        ("failure", "login", "dave"), ("other", "ssh", "eve"),
    ]  # fmt: skip
    assert events[0].ts_ns == int(datetime(2024, 5, 1, 6, tzinfo=UTC).timestamp()
                                  * 10**9) + 250_000_000  # fmt: skip
    assert events[0].src_ip == "2001:db8::5" and events[0].method == "keyboard-interactive/pam"
    assert src.log.kinds["other_program"] == 1


def test_malformed_lines_named_with_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "auth.log"
    p.write_bytes(
        b"Mar  1 10:00:00 h sshd[1]: Accepted password for a from 192.0.2.1 port 1 ssh2\n"
        b"garbage \xff\xfe not syslog\n"
        b"Mar  1 10:00:0"  # truncated mid-line: not a line either
    )
    src = AuthLogSource(str(p), year=2024)
    events = _events(src)
    assert len(events) == 1
    assert src.counters.warnings_by_kind == {"malformed_line": 2}
    msgs = [str(w) for w in src.warnings]
    assert msgs[0].startswith(f"{p} at byte 78: line 2: not a syslog line")
    assert "line 3" in msgs[1]
    # Through the pipeline: no traceback, the warnings reach the file report.
    summary = Pipeline().run([str(p)])
    assert summary.events["auth"] == 1 and len(summary.files[0].warnings) == 2


def test_generic_json_lines(tmp_path: Path) -> None:
    p = tmp_path / "auth.jsonl"
    lines = [
        {
            "ts": "2024-06-01T10:00:00Z",
            "user": "alice",
            "src_ip": "192.0.2.10",
            "outcome": "success",
            "service": "vpn",
            "host": "gw1",
            "method": "password",
        },
        {
            "ts": 1717236000.5,
            "user": "bob",
            "src_ip": "192.0.2.11",
            "outcome": "failure",
            "service": "vpn",
        },
        {"ts": "yesterday", "user": "x", "outcome": "success"},
        {"ts": 1717236001, "user": "x", "outcome": "maybe"},
    ]
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n")
    src = open_source(str(p))
    assert isinstance(src, JsonAuthSource)
    events = _events(src)
    assert [(e.user, e.outcome, e.service) for e in events] == [
        ("alice", "success", "vpn"), ("bob", "failure", "vpn")]  # fmt: skip
    assert events[1].ts_ns == 1717236000_500_000_000
    assert src.counters.warnings_by_kind == {"invalid_event": 2, "malformed_json": 1}
    assert [str(w).split(": ", 2)[1] for w in src.warnings] == ["line 3", "line 4", "line 5"]
