"""Pseudonymised exports: Crypto-PAn keeps prefixes, is keyed and deterministic; no real address
or user name of the demo capture survives in an export, not even inside explanations."""

from __future__ import annotations

import io
import ipaddress
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from tapetum.cli import demo_capture
from tapetum.config import Config
from tapetum.errors import ConfigError
from tapetum.pipeline import Pipeline, Summary
from tapetum.records import Incident
from tapetum.sinks.ecs import EcsSink
from tapetum.sinks.jsonl import JsonlSink
from tapetum.sinks.ocsf import OcsfSink
from tapetum.sinks.pseudonym import ENV_KEY, Pseudonymizer, PseudonymSink

KEY = b"0123456789abcdef-test-key-material"
OTHER = b"another key, also long enough......"
IP_RE = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")


def common_prefix_bits(a: str, b: str) -> int:
    x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    diff = int(x) ^ int(y)
    return x.max_prefixlen - diff.bit_length()


def test_prefix_preserving_ipv4_and_ipv6() -> None:
    p = Pseudonymizer(KEY)
    a, b = p.ip("10.20.0.66"), p.ip("10.20.0.10")
    assert a != "10.20.0.66" and a.rsplit(".", 1)[0] == b.rsplit(".", 1)[0]  # same /24
    rng = random.Random(7)
    for _ in range(200):
        x = ipaddress.IPv4Address(rng.getrandbits(32))
        y = ipaddress.IPv4Address(int(x) ^ (1 << rng.randrange(32)))
        assert common_prefix_bits(p.ip(str(x)), p.ip(str(y))) == common_prefix_bits(str(x), str(y))
    for _ in range(30):
        x6 = ipaddress.IPv6Address(rng.getrandbits(128))
        y6 = ipaddress.IPv6Address(int(x6) ^ (1 << rng.randrange(128)))
        px, py = p.ip(str(x6)), p.ip(str(y6))
        assert ipaddress.ip_address(px).version == 6
        assert common_prefix_bits(px, py) == common_prefix_bits(str(x6), str(y6))


def test_keyed_and_deterministic(tmp_path: Path) -> None:
    addrs = ["10.20.0.66", "198.51.100.77", "2001:db8::1"]
    one = [Pseudonymizer(KEY).ip(a) for a in addrs]
    assert one == [Pseudonymizer(KEY).ip(a) for a in addrs]
    other = [Pseudonymizer(OTHER).ip(a) for a in addrs]
    assert all(x != y for x, y in zip(one, other, strict=True))
    p = Pseudonymizer(KEY)
    assert p.user("alice") == Pseudonymizer(KEY).user("alice") != Pseudonymizer(OTHER).user("alice")
    assert re.fullmatch(r"user-[0-9a-f]{16}", p.user("alice"))
    assert p.ip("not an address") == "not an address"
    # The key from a file or the environment gives the same pseudonyms.
    f = tmp_path / "key"
    f.write_bytes(KEY + b"\n")
    assert Pseudonymizer.from_key_file(f).ip("10.0.0.1") == p.ip("10.0.0.1")
    env_p = Pseudonymizer.from_env({ENV_KEY: KEY.decode()})
    assert env_p.ip("10.0.0.1") == p.ip("10.0.0.1")
    with pytest.raises(ConfigError):
        Pseudonymizer.from_env({})
    (tmp_path / "short").write_bytes(b"short")
    with pytest.raises(ConfigError):
        Pseudonymizer.from_key_file(tmp_path / "short")


def test_text_fields_and_users() -> None:
    p = Pseudonymizer(KEY)
    inc = Incident(
        incident_id="i", ts_ns=1, first_ts_ns=1, last_ts_ns=2, entity="10.0.0.5",
        title="Credential access by 10.0.0.5", summary="bob logged in from 10.0.0.5 at 10:00:00 "
        "after 40 failures; then 10.0.0.5 reached fe80::1 and 2001:db8::7",
        severity=1, confidence=0.9, alert_count=1, alert_ids=("a",), signatures=("x.y",),
        categories=("brute-force",), src_ip="10.0.0.5", dest_ips=("10.0.0.9",), users=("bob",),
    )  # fmt: skip
    out = p.record(inc)
    assert isinstance(out, Incident)
    q = p.ip("10.0.0.5")
    assert out.entity == out.src_ip == q and out.title == f"Credential access by {q}"
    assert out.users == (p.user("bob"),)
    assert out.summary == (
        f"{p.user('bob')} logged in from {q} at 10:00:00 after 40 failures; "
        f"then {q} reached {p.ip('fe80::1')} and {p.ip('2001:db8::7')}"
    )
    assert out.dest_ips == (p.ip("10.0.0.9"),)
    assert (out.alert_ids, out.signatures, out.confidence) == (("a",), ("x.y",), 0.9)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Summary, list[str], dict[str, Any]]:
    d = tmp_path_factory.mktemp("pseud")
    p = Pseudonymizer(KEY)
    eve, peve = io.BytesIO(), io.BytesIO()
    ocsf, ecs = OcsfSink(d / "o.jsonl"), EcsSink(d / "e.jsonl")
    sinks = [JsonlSink(eve), PseudonymSink(JsonlSink(peve), p),
             PseudonymSink(ocsf, p), PseudonymSink(ecs, p)]  # fmt: skip
    summary = Pipeline(Config(), sinks).run([str(demo_capture())])
    for s in sinks:
        s.close()
    texts = {"eve": peve.getvalue().decode(), "ocsf": (d / "o.jsonl").read_text(),
             "ecs": (d / "e.jsonl").read_text()}  # fmt: skip
    real = sorted({ip for line in eve.getvalue().decode().splitlines() for ip in
                   IP_RE.findall(line)})  # fmt: skip
    return summary, real, {"texts": texts, "p": p}


def test_no_real_address_survives(demo: tuple[Summary, list[str], dict[str, Any]]) -> None:
    _, real, ctx = demo
    assert len(real) > 20 and "10.20.0.66" in real
    for name, text in ctx["texts"].items():
        found = set(IP_RE.findall(text))
        leaked = found & set(real) - {ctx["p"].ip(r) for r in real}
        assert not leaked, (name, sorted(leaked)[:5])
        assert found, name


def test_explanations_consistent_with_fields(
    demo: tuple[Summary, list[str], dict[str, Any]],
) -> None:
    summary, _, ctx = demo
    p: Pseudonymizer = ctx["p"]
    findings = [json.loads(x) for x in ctx["texts"]["ocsf"].splitlines()]
    by_uid = {e["finding_info"]["uid"]: e for e in findings if e["class_uid"] == 2004}
    for a in summary.alerts:
        ev = by_uid[a.alert_id]
        assert ev["evidences"][0]["src_endpoint"]["ip"] == p.ip(a.src_ip or "")
        assert ev["message"] == p.text(a.explanation) != a.explanation
        assert p.ip(a.src_ip or "") in ev["message"]
    # Directions are judged on the real addresses, not on the pseudonyms.
    flows = [e for e in findings if e["class_uid"] == 4001]
    assert {e["connection_info"]["direction"] for e in flows} == {"Lateral"}
    # Community ids are recomputed from the pseudonyms (the real ones would confirm a guess).
    eve_real = [json.loads(x) for x in ctx["texts"]["eve"].splitlines()]
    cids = {e["community_id"] for e in eve_real if e["event_type"] == "flow"}
    assert {e["connection_info"]["uid"] for e in flows} == cids


def test_cli_pseudonymized_export(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tapetum.cli import main

    key = tmp_path / "key"
    key.write_bytes(KEY)
    outs = []
    for i in range(2):
        out = tmp_path / f"o{i}.jsonl"
        res = CliRunner().invoke(main, ["analyze", "--demo", "--no-store", "--no-progress",
                                        "--export", f"ocsf:{out}",
                                        "--pseudonymize-key-file", str(key)])  # fmt: skip
        assert res.exit_code == 0, res.output
        outs.append(out.read_text())
    assert outs[0] == outs[1]  # same key, same pseudonyms
    assert "10.20.0.66" not in outs[0] and Pseudonymizer(KEY).ip("10.20.0.66") in outs[0]
    res = CliRunner().invoke(main, ["analyze", "--demo", "--no-store", "--pseudonymize"])
    assert res.exit_code == 2  # pseudonymising without an export is a usage error
    res = CliRunner().invoke(
        main,
        ["analyze", "--demo", "--no-store", "--export", f"ocsf:{tmp_path}/x", "--pseudonymize"],
        env={ENV_KEY: ""},
    )
    assert res.exit_code == 5 and ENV_KEY in res.output
