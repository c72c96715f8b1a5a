"""Planning, modes, allowlist, TTL expiry, audit rows, config errors, no shell, webhooks."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pytest

from tapetum.config import Config, ResponseSection, load_config
from tapetum.errors import ConfigError
from tapetum.records import Incident
from tapetum.response import (
    Action,
    NotFound,
    ResponseError,
    apply,
    approve,
    audit_log,
    expire_due,
    list_actions,
    plan,
    respond,
    revert_stored,
)
from tapetum.response.command import substitute
from tapetum.response.nftables import NftBackend

HOUR_NS = 3600 * 10**9


def incident(entity: str = "10.0.0.66", **kw: Any) -> Incident:
    base: dict[str, Any] = dict(
        incident_id="inc-1",
        ts_ns=10**18,
        first_ts_ns=10**18,
        last_ts_ns=10**18 + 60 * 10**9,
        entity=entity,
        title=f"Discovery by {entity}: vertical port scan",
        summary="",
        severity=1,
        confidence=0.9,
        alert_count=3,
        alert_ids=("a1", "a2", "a3"),
        signatures=("scan.vertical",),
        categories=("scan",),
        mitre_technique_id=("T1046",),
        mitre_tactic=("discovery",),
        src_ip=entity,
        dest_ips=("10.0.0.9", "10.0.0.10"),
    )
    base.update(kw)
    return Incident(**base)


def section(tmp_path: Path, toml: str) -> ResponseSection:
    p = tmp_path / "c.toml"
    p.write_text(toml)
    return load_config(p).response


BLOCK = """
[response]
mode = "{mode}"
allowlist = ["127.0.0.0/8", "10.0.0.1/32"]
[[response.playbooks]]
name = "block-scanners"
when = {{ min_severity = 2, detectors = ["scan"], tactics = ["discovery"] }}
actions = [{{ kind = "block_ip", ttl_s = 3600 }}]
"""


# -- planning -------------------------------------------------------------------------------


def test_plan_matches_conditions_and_is_pure(tmp_path: Path) -> None:
    s = section(tmp_path, BLOCK.format(mode="dry-run"))
    acts = plan(incident(), s)
    assert [(a.kind, a.target, a.state, a.mode, a.ttl_s) for a in acts] == [
        ("block_ip", "10.0.0.66", "planned", "dry-run", 3600.0)
    ]
    assert acts[0].expires_ns - acts[0].created_ns == HOUR_NS
    assert plan(incident(), s) == acts  # deterministic ids and times
    # Each condition can exclude the incident.
    assert plan(incident(severity=3), s) == []
    assert plan(incident(signatures=("beacon.periodic",)), s) == []
    assert plan(incident(signatures=("scanner.x",)), s) == []  # "scan" is not a prefix of it
    assert plan(incident(mitre_tactic=("exfiltration",)), s) == []


def test_entity_tags_and_categories(tmp_path: Path) -> None:
    s = section(
        tmp_path,
        """
[response]
tags = { "10.0.5.0/24" = ["servers"] }
[[response.playbooks]]
name = "servers"
when = { entity_tags = ["servers"], categories = ["brute-force"] }
actions = [{ kind = "rate_limit", params = { rate_pps = 20 } }]
[[response.playbooks]]
name = "outside"
when = { entity_tags = ["external"] }
actions = [{ kind = "block_flow", params = { proto = "tcp", dest_port = 22 } }]
""",
    )
    bf = {"categories": ("brute-force",)}
    assert [a.playbook for a in plan(incident("10.0.5.7", **bf), s)] == ["servers"]
    assert plan(incident("10.0.6.7", **bf), s) == []
    flows = plan(incident("203.0.113.9"), s)
    assert [(a.target, a.params["dest"], a.params["dest_port"]) for a in flows] == [
        ("203.0.113.9", "10.0.0.9", 22),
        ("203.0.113.9", "10.0.0.10", 22),
    ]
    assert flows[0].ttl_s == s.default_ttl_s
    assert len({a.action_id for a in flows}) == 2


def test_allowlisted_and_invalid_targets_are_refused(tmp_path: Path) -> None:
    s = section(tmp_path, BLOCK.format(mode="auto"))
    (a,) = plan(incident("10.0.0.1"), s)
    assert a.state == "refused" and "allowlisted (10.0.0.1/32)" in a.reason
    (b,) = plan(incident("10.0.0.1; rm -rf /", src_ip=None), s)
    assert b.state == "refused" and "not an IP address" in b.reason
    # ::ffff:127.0.0.1 is loopback: the mapped form must not slip past the allowlist.
    (c,) = plan(incident("::ffff:127.0.0.1"), s)
    assert c.state == "refused"
    # apply() checks again, whatever the action claims.
    forged = msgspec.structs.replace(a, state="planned")
    done, why = apply(forged, s)
    assert done.state == "refused" and "allowlisted" in why


# -- config errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('when = {}\nactions = [{ kind = "nuke" }]', "unknown action kind 'nuke'"),
        ('when = { severity = 1 }\nactions = [{ kind = "block_ip" }]', "severity"),
        ('actions = [{ kind = "block_ip", params = { port = 1 } }]', "unknown parameter"),
        ('actions = [{ kind = "command", params = { argv = ["x", "{host}"] } }]', "{host}"),
        ('actions = [{ kind = "webhook", params = { url = "file:///etc/passwd" } }]', "http"),
        ('mode = "yolo"\nactions = [{ kind = "block_ip" }]', "mode"),
        ('actions = [{ kind = "block_ip", ttl = 5 }]', "ttl"),
    ],
)
def test_config_errors_name_the_playbook(tmp_path: Path, body: str, needle: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(f'[[response.playbooks]]\nname = "pb-x"\n{body}\n')
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert "pb-x" in str(err.value) and needle in str(err.value)


def test_config_errors_in_section(tmp_path: Path) -> None:
    for body, needle in [
        ('allowlist = ["10.0.0.0/33"]', "10.0.0.0/33"),
        ('mode = "on"', "mode"),
        ("default_ttl_s = 0", "TTL"),
        ('netns = "a b;c"', "netns"),
    ]:
        p = tmp_path / "c.toml"
        p.write_text(f"[response]\n{body}\n")
        with pytest.raises(ConfigError, match=needle):
            load_config(p)


# -- modes, audit, TTL ----------------------------------------------------------------------


def _audit(store: Path) -> list[tuple[str, str, str, str]]:
    return [(e.action_id, e.actor, e.event, e.result) for e in audit_log(store)]


def test_dry_run_records_and_applies_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    s = section(tmp_path, BLOCK.format(mode="dry-run"))
    store = tmp_path / "s.duckdb"
    out = respond([incident()], s, store, now_ns=5 * HOUR_NS)
    assert [m for _, m in out] == ["would have blocked 10.0.0.66 for 1 h (dry-run)"]
    assert calls == []
    (a,) = list_actions(store)
    assert a.state == "planned" and a.expires_ns == 6 * HOUR_NS
    assert _audit(store) == [(a.action_id, "pipeline", "dry-run", "dry-run")]
    # The same incident again (a re-run) adds nothing.
    assert respond([incident()], s, store, now_ns=6 * HOUR_NS) == []
    assert len(audit_log(store)) == 1
    # Nothing to expire: dry-run actions were never applied.
    assert expire_due(store, 10 * HOUR_NS, s) == []


class FakeNft:
    """Stands in for subprocess.run: records argv/kwargs and answers like nft."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, Any]]] = []
        self.table = False

    def __call__(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append((argv, kw))
        if argv[-3:] == ["table", "inet", "tapetum"] and argv[-4] == "list":
            rc = 0 if self.table else 1
            return subprocess.CompletedProcess(argv, rc, "", "" if rc == 0 else "No such file")
        if argv[-2:] == ["-f", "-"] and "table inet tapetum {" in (kw.get("input") or ""):
            self.table = True
        return subprocess.CompletedProcess(argv, 0, "", "")

    def scripts(self) -> list[str]:
        return [kw.get("input") or "" for _, kw in self.calls]


def test_approve_mode_queues_until_approved_then_expires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeNft()
    monkeypatch.setattr(subprocess, "run", fake)
    s = section(tmp_path, BLOCK.format(mode="approve"))
    store = tmp_path / "s.duckdb"
    ((a, msg),) = respond([incident()], s, store, now_ns=0)
    assert a.state == "pending-approval" and "waiting for approval" in msg
    assert fake.calls == []
    with pytest.raises(NotFound):
        approve(store, "act-nope", s)
    done, _ = approve(store, a.action_id, s, analyst="alice", now_ns=2 * HOUR_NS)
    assert done.state == "applied" and done.expires_ns == 3 * HOUR_NS  # TTL from approval
    assert any("add element inet tapetum blocked4 { 10.0.0.66 timeout 3600s }" in x
               for x in fake.scripts())  # fmt: skip
    with pytest.raises(ResponseError):
        approve(store, a.action_id, s)  # not pending any more
    assert expire_due(store, 3 * HOUR_NS - 1, s) == []
    ((e, _),) = expire_due(store, 3 * HOUR_NS, s)
    assert e.state == "expired"
    assert any("delete element inet tapetum blocked4 { 10.0.0.66 }" in x for x in fake.scripts())
    assert [ev for _, _, ev, _ in _audit(store)] == ["queued", "approved", "applied", "expired"]
    assert [who for _, who, _, _ in _audit(store)] == ["pipeline", "alice", "alice", "expiry"]
    # Only the state changed in place: one row in actions.
    with duckdb.connect(str(store)) as con:
        assert con.execute("SELECT count(*), any_value(state) FROM actions").fetchone() == (
            1,
            "expired",
        )


def test_auto_mode_applies_reverts_on_request_and_refuses_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeNft()
    monkeypatch.setattr(subprocess, "run", fake)
    s = section(tmp_path, BLOCK.format(mode="auto"))
    store = tmp_path / "s.duckdb"
    ((a, _),) = respond([incident()], s, store, now_ns=0)
    assert a.state == "applied"
    for argv, kw in fake.calls:  # never a shell, always an argument list
        assert isinstance(argv, list) and kw["shell"] is False
        assert argv[0] == "nft"
    # A second incident about the same host while the block is in force: refused, audited.
    ((b, why),) = respond([incident(incident_id="inc-2")], s, store, now_ns=HOUR_NS // 2)
    assert b.state == "refused" and a.action_id in why
    r, _ = revert_stored(store, a.action_id, s, analyst="bob", now_ns=HOUR_NS // 2)
    assert r.state == "reverted"
    with pytest.raises(ResponseError):
        revert_stored(store, a.action_id, s)  # already reverted
    assert expire_due(store, 10 * HOUR_NS, s) == []
    events = [(who, ev, res) for _, who, ev, res in _audit(store)]
    assert events == [
        ("pipeline", "applied", "ok"),
        ("pipeline", "refused", "refused"),
        ("bob", "revert", "ok"),
    ]


def test_nft_failure_is_recorded_as_failed(tmp_path: Path) -> None:
    s = section(tmp_path, BLOCK.format(mode="auto").replace("[[", 'nft = "/nonexistent/nft"\n[['))
    store = tmp_path / "s.duckdb"
    ((a, msg),) = respond([incident()], s, store, now_ns=0)
    assert a.state == "failed" and "/nonexistent/nft" in msg
    assert _audit(store)[0][2:] == ("failed", "error")


# -- no shell, validated values -------------------------------------------------------------


def test_nft_scripts_only_hold_validated_values() -> None:
    b = NftBackend(netns="tpr-x")
    assert b.argv("-f", "-") == ["ip", "netns", "exec", "tpr-x", "nft", "-f", "-"]
    bad = Action(action_id="x", kind="block_ip", target="10.0.0.1; rm -rf /")
    with pytest.raises(ValueError, match="not an IP address"):
        b.build(bad)
    with pytest.raises(ValueError, match="identifier"):
        b.build(Action(action_id='x" ; flush ruleset', kind="rate_limit", target="10.0.0.1"))
    with pytest.raises(ValueError):
        NftBackend(netns="a;b")
    flow = Action(action_id="f1", kind="block_flow", target="10.0.0.5",
                  params={"dest": "10.0.0.9", "proto": "tcp", "dest_port": 22})  # fmt: skip
    assert b.build(flow) == (
        "add rule inet tapetum actions ip saddr 10.0.0.5 ip daddr 10.0.0.9 tcp dport 22 drop "
        'comment "tapetum:f1"\n'
        "add rule inet tapetum actions ip saddr 10.0.0.9 ip daddr 10.0.0.5 tcp sport 22 drop "
        'comment "tapetum:f1"\n'
    )
    with pytest.raises(ValueError, match="port"):
        b.build(msgspec.structs.replace(flow, params=flow.params | {"dest_port": "22; drop"}))


def test_command_action_uses_argv_without_shell(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    s = section(
        tmp_path,
        f"""
[response]
mode = "auto"
[[response.playbooks]]
name = "cmd"
actions = [{{ kind = "command", params = {{ argv = ["/bin/sh", "-c", 'printf "%s|%s" "$1" "$2" > {out}', "x", "{{ip}}", "{{incident_id}}"] }} }}]
""",  # noqa: E501
    )
    # The incident text is never parsed by the shell: it only ever lands in "$1"/"$2".
    ((a, _),) = respond([incident("10.0.0.66")], s, tmp_path / "s.duckdb", now_ns=0)
    assert a.state == "applied" and out.read_text() == "10.0.0.66|inc-1"
    (bad,) = plan(incident("10.0.0.66", incident_id="inc-1;reboot"), s)
    assert bad.state == "refused" and "identifier" in bad.reason
    with pytest.raises(ValueError):
        substitute(["echo", "{ip}"], Action(action_id="a", kind="command", target="$(id)"))


def test_command_runs_with_list_and_shell_false(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Any, dict[str, Any]]] = []

    def fake(argv: Any, **kw: Any) -> subprocess.CompletedProcess[str]:
        seen.append((argv, kw))
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake)
    s = section(
        tmp_path,
        """
[response]
mode = "auto"
[[response.playbooks]]
name = "fw"
actions = [{ kind = "command", params = { argv = ["fwctl", "block", "{ip}", "--ttl={ttl_s}"] } }]
""",
    )
    respond([incident("2001:db8::66")], s, tmp_path / "s.duckdb", now_ns=0)
    assert seen == [
        (["fwctl", "block", "2001:db8::66", "--ttl=3600"], seen[0][1]),
    ]
    assert seen[0][1]["shell"] is False


# -- webhook --------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[Any], list[int]]]:
    got: list[Any] = []
    statuses: list[int] = []  # status codes to answer, in order (then 200)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            n = int(self.headers["Content-Length"])
            got.append(json.loads(self.rfile.read(n)))
            code = statuses.pop(0) if statuses else 200
            self.send_response(code)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    srv = HTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/hook", got, statuses
    finally:
        srv.shutdown()
        srv.server_close()


def test_webhook_slack_with_retry(
    tmp_path: Path, receiver: tuple[str, list[Any], list[int]]
) -> None:
    url, got, statuses = receiver
    statuses.append(503)  # first attempt fails: retried
    s = section(
        tmp_path,
        f"""
[response]
mode = "auto"
webhook_attempts = 3
[[response.playbooks]]
name = "notify"
actions = [{{ kind = "webhook", params = {{ url = "{url}", format = "slack" }} }}]
""",
    )
    ((a, msg),) = respond([incident()], s, tmp_path / "s.duckdb", now_ns=0)
    assert a.state == "applied" and "2 attempt" in msg
    assert len(got) == 2 and set(got[1]) == {"text"} and "notify" in got[1]["text"]


def test_webhook_json_and_client_error_fails(
    tmp_path: Path, receiver: tuple[str, list[Any], list[int]]
) -> None:
    url, got, statuses = receiver
    s = section(
        tmp_path,
        f"""
[response]
mode = "auto"
[[response.playbooks]]
name = "notify"
actions = [{{ kind = "webhook", params = {{ url = "{url}" }} }}]
""",
    )
    ((a, _),) = respond([incident()], s, tmp_path / "s.duckdb", now_ns=0)
    assert a.state == "applied" and got[0]["incident_id"] == "inc-1"
    statuses.append(400)  # a 4xx is not retried
    ((b, msg),) = respond([incident(incident_id="inc-9")], s, tmp_path / "t.duckdb", now_ns=0)
    assert b.state == "failed" and "HTTP 400" in msg and len(got) == 2


def test_default_config_is_dry_run() -> None:
    c = Config()
    assert c.response.mode == "dry-run" and all(p.mode is None for p in c.response.playbooks)
