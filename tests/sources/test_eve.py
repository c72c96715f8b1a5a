"""Suricata EVE as a record source: the real Slips EVE file end to end, and a real redis-server
that goes away and comes back."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapetum.flows.build import _flow_id
from tapetum.pipeline import Pipeline
from tapetum.registry import open_source
from tapetum.sources import eve as E
from tests.conftest import data_path

EVE = ("slips", "test6-malicious.suricata.json")


def test_eve_file_counted_by_event_type() -> None:
    path = data_path(*EVE)
    lines = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    types = Counter(e["event_type"] for e in lines)
    src = open_source(str(path))
    assert isinstance(src, E.EveSource)
    batches = list(src)
    c = src.counters
    assert c.records == len(lines)
    assert c.flows == sum(len(b.flows) for b in batches if b.flows is not None) == types["flow"]
    assert c.alerts == types["alert"]
    assert c.events == {k: types[k] for k in ("dns", "http", "tls") if types[k]}
    assert c.skipped == {k: v for k, v in types.items() if k not in E.MAPPED}
    assert c.corrupt_records == 0
    # events carry the flow_id their flow record gets (Suricata's flow_id is the key)
    flow_ids = {f for b in batches if b.flows is not None for f in b.flows.num["flow_id"].tolist()}
    dns = [e for b in batches for e in b.events if type(e).__name__ == "DnsEvent"]
    eve_dns_with_flow = {e["flow_id"] for e in lines if e["event_type"] == "dns"} & {
        e["flow_id"] for e in lines if e["event_type"] == "flow"
    }
    assert {d.flow.flow_id for d in dns} & flow_ids == {
        _flow_id(f"eve:{f}") for f in eve_dns_with_flow
    }
    tls = [e for b in batches for e in b.events if type(e).__name__ == "TlsEvent"]
    assert (
        tls[0].sni == "www.myedimax.com" and tls[0].ja3_hash == "b7202231ff2db28363c109cedc6d1642"
    )


def test_suricata_alerts_join_incidents() -> None:
    path = data_path(*EVE)
    lines = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    raw_alerts = [e for e in lines if e["event_type"] == "alert"]
    summary = Pipeline().run([str(path)])
    sur = [a for a in summary.alerts if a.signature_id < 9_000_000]
    assert len(sur) == len(raw_alerts)
    assert Counter(a.signature for a in sur) == Counter(e["alert"]["signature"] for e in raw_alerts)
    assert Counter(a.entity for a in sur) == Counter(e["src_ip"] for e in raw_alerts)
    in_incidents = {i for inc in summary.incidents for i in inc.alert_ids}
    assert {a.alert_id for a in sur} <= in_incidents
    assert len({a.alert_id for a in sur}) == len(sur)
    worst = min(sur, key=lambda a: a.severity)
    inc = next(i for i in summary.incidents if worst.alert_id in i.alert_ids)
    assert inc.entity == worst.entity and worst.signature in inc.title


def test_alert_mitre_metadata_and_bad_lines(tmp_path: Path) -> None:
    alert = {
        "timestamp": "2024-01-02T03:04:05.000006+0000",
        "flow_id": 77,
        "event_type": "alert",
        "src_ip": "203.0.113.9",
        "src_port": 4444,
        "dest_ip": "10.0.0.5",
        "dest_port": 22,
        "proto": "TCP",
        "alert": {
            "signature_id": 2001219,
            "signature": "ET SCAN SSH brute",
            "category": "Attempted Information Leak",
            "severity": 1,
            "metadata": {
                "mitre_technique_id": ["T1110"],
                "mitre_tactic_name": ["Credential_Access"],
            },
        },
    }
    text = json.dumps(alert) + "\n" + "{not json\n" + json.dumps({"event_type": "dns"}) + "\n"
    text += json.dumps({"event_type": "stats", "timestamp": "2024-01-02T03:04:05+0000"}) + "\n"
    text += json.dumps(alert)[:40]  # truncated last line
    p = tmp_path / "eve.json"
    p.write_text(text)
    src = E.EveSource(str(p))
    batches = list(src)
    (a,) = [a for b in batches for a in b.alerts]
    assert a.mitre_technique_id == ("T1110",) and a.mitre_tactic == ("credential-access",)
    assert a.category == "scan" and a.severity == 1 and a.entity == "203.0.113.9"
    assert a.ts_ns == 1_704_164_645_000_006_000
    c = src.counters
    assert (c.corrupt_records, c.truncated_records, c.skipped) == (2, 1, {"stats": 1})
    text_w = "\n".join(str(w) for w in src.warnings)
    assert f"{p}: line 2: not valid JSON" in text_w and "line 3: dns event: missing field" in text_w
    assert "line 5" in text_w


def test_probe() -> None:
    head = data_path(*EVE).read_bytes()[:4096]
    assert E.probe("x", head)
    assert not E.probe("x", b'{"ts":1.0,"uid":"C1","id.orig_h":"10.0.0.1"}\n')


# -- Redis -----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    pytest.importorskip("redis")
    srv = RedisServer(_free_port())
    srv.start()
    yield srv
    srv.stop()


def _events(n: int, start: int = 0) -> list[bytes]:
    out = []
    for k in range(start, start + n):
        out.append(
            json.dumps(
                {
                    "timestamp": f"2024-01-02T03:{k // 60 % 60:02d}:{k % 60:02d}.000000+0000",
                    "flow_id": 1000 + k,
                    "event_type": "dns",
                    "src_ip": "10.0.0.5",
                    "src_port": 5000 + k,
                    "dest_ip": "10.0.0.53",
                    "dest_port": 53,
                    "proto": "UDP",
                    "dns": {"type": "query", "id": k, "rrname": f"host{k}.example", "rrtype": "A"},
                }
            ).encode()
        )
    return out


def _drain(src: E.RedisEve, want: int, timeout_s: float = 20.0) -> list[str]:
    names: list[str] = []
    deadline = time.monotonic() + timeout_s
    while len(names) < want and time.monotonic() < deadline:
        rb = src.poll(0.1)
        if rb is not None:
            names += [e.rrname for e in rb.events]
            src.ack()
        else:
            time.sleep(0.02)
    return names


def test_redis_list_survives_a_server_restart(redis_server: RedisServer) -> None:
    import redis

    url = f"redis://127.0.0.1:{redis_server.port}/0"
    producer = redis.Redis.from_url(url)
    producer.lpush("suricata", *_events(300))  # LPUSH like Suricata's redis output
    src = E.RedisEve(url, "suricata", "list", batch=64, backoff_max_s=0.5)
    got = _drain(src, 300)
    assert got == [f"host{k}.example" for k in range(300)]  # oldest first, none lost
    producer.close()
    redis_server.stop()
    for _ in range(5):  # server away: polls fail fast, back off, never raise
        assert src.poll(0.05) is None
        time.sleep(0.1)
    assert src.stats["disconnects"] >= 1
    redis_server.start()
    producer = redis.Redis.from_url(url)
    producer.lpush("suricata", *_events(200, 300))
    got += _drain(src, 200)
    assert got == [f"host{k}.example" for k in range(500)]
    assert src.stats["reconnects"] >= 1 and src.stats["accepted"] == 500
    assert src.stats["acked"] == 500 and src.counters.events == {"dns": 500}
    assert producer.llen("suricata") == 0 and producer.llen(src.processing) == 0
    src.close()
    producer.close()


def test_redis_unacked_batch_is_recovered_by_the_next_consumer(redis_server: RedisServer) -> None:
    import redis

    url = f"redis://127.0.0.1:{redis_server.port}/0"
    producer = redis.Redis.from_url(url)
    producer.lpush("eve", *_events(50))
    first = E.RedisEve(url, "eve", "list", batch=20)
    rb = first.poll(0.1)
    assert rb is not None and len(rb.events) == 20
    first.close()  # dies before acknowledging: the 20 stay in the processing list
    second = E.RedisEve(url, "eve", "list", batch=20)
    names = _drain(second, 50)
    assert names == [f"host{k}.example" for k in range(50)]
    assert second.stats["recovered"] == 20
    second.close()
    producer.close()


def test_redis_channel(redis_server: RedisServer) -> None:
    import redis

    url = f"redis://127.0.0.1:{redis_server.port}/0"
    src = E.RedisEve(url, "suricata", "channel")
    assert src.poll(0.2) is None  # subscribes
    producer = redis.Redis.from_url(url)
    for ev in _events(30):
        producer.publish("suricata", ev)
    names = _drain(src, 30, 10)
    assert names == [f"host{k}.example" for k in range(30)]
    src.close()
    producer.close()
