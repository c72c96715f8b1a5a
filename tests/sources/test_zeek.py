"""Zeek logs (TSV and JSON) as a record source: real Slips/Zeek folders and hand-made bad input."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from tapetum.flows.build import _flow_id
from tapetum.flows.meter import FlowMeter, MeterConfig
from tapetum.pipeline import Pipeline
from tapetum.registry import open_source
from tapetum.sources import zeek as Z
from tapetum.sources.base import RecordBatch
from tapetum.sources.pcap import CaptureReader
from tests.conftest import data_path


def data_lines(path: Path) -> list[bytes]:
    """Data lines of a log as a reader independent of Tapetum sees them."""
    return [
        ln
        for ln in path.read_bytes().splitlines()
        if ln.strip() and not ln.lstrip().startswith(b"#")
    ]


def read_all(path: Path) -> tuple[Z.ZeekSource, list[RecordBatch]]:
    src = Z.ZeekSource(str(path))
    return src, list(src)


@pytest.mark.parametrize(
    "folder",
    [
        "test9-mixed-zeek-dir",
        "test10-mixed-zeek-dir",
        "test13-malicious-dhcpscan-zeek-dir",
        "test14-malicious-zeek-dir",
        "test15-malicious-zeek-dir",
        "test16-malicious-zeek-dir",
    ],
)
def test_slips_folders_counted_against_the_log_lines(folder: str) -> None:
    d = data_path("slips", folder)
    src, batches = read_all(d)
    flows = sum(len(b.flows) for b in batches if b.flows is not None)
    events = Counter(type(e).__name__ for b in batches for e in b.events)
    alerts = sum(len(b.alerts) for b in batches)
    lines = {p.name.split(".")[0]: len(data_lines(p)) for p in d.glob("*.log")}
    c = src.counters
    assert flows == c.flows == lines.get("conn", 0) - c.warnings_by_kind.get("bad_value", 0)
    assert events["DnsEvent"] == lines.get("dns", 0)
    assert events["TlsEvent"] == lines.get("ssl", 0)
    assert events["HttpEvent"] == lines.get("http", 0)
    # test10's notice.log has one hand-edited line (spaces for tabs): reported, the rest kept
    assert alerts + c.corrupt_records == lines.get("notice", 0)
    skipped = {k: v for k, v in lines.items() if k not in Z.MAPPED}
    assert c.skipped == skipped
    assert c.records == sum(lines.values())


def test_corrupt_notice_line_named_with_file_and_line() -> None:
    d = data_path("slips", "test10-mixed-zeek-dir")
    src, _ = read_all(d)
    msgs = [str(w) for w in src.warnings if w.kind == "corrupt_line"]
    assert msgs == [f"{d / 'notice.log'}: line 21: 23 fields, the #fields header names 26: skipped"]


def test_events_join_their_flows_and_come_first(monkeypatch: pytest.MonkeyPatch) -> None:
    d = data_path("slips", "test9-mixed-zeek-dir")
    monkeypatch.setattr(Z, "BATCH_RECORDS", 40)  # many small batches: order matters
    _, batches = read_all(d)
    assert len(batches) > 20
    flow_batch_of: dict[int, int] = {}
    for k, b in enumerate(batches):
        if b.flows is not None:
            for fid in b.flows.num["flow_id"].tolist():
                flow_batch_of[fid] = k
    conn_uids = {json.loads(ln)["uid"] for ln in data_lines(d / "conn.log")}
    joined = 0
    for k, b in enumerate(batches):
        for e in b.events:
            if e.flow.flow_id in flow_batch_of:
                joined += 1
                assert k <= flow_batch_of[e.flow.flow_id], "an event came after its flow"
    expected = sum(
        json.loads(ln)["uid"] in conn_uids
        for name in ("dns", "http", "ssl")
        for ln in data_lines(d / f"{name}.log")
    )
    assert joined == expected > 0


def test_x509_joined_to_ssl() -> None:
    d = data_path("slips", "test9-mixed-zeek-dir")
    src, batches = read_all(d)
    tls = [e for b in batches for e in b.events if type(e).__name__ == "TlsEvent"]
    x509 = {json.loads(ln)["id"]: json.loads(ln) for ln in data_lines(d / "x509.log")}
    ssl = [json.loads(ln) for ln in data_lines(d / "ssl.log")]
    with_cert = [r for r in ssl if r.get("cert_chain_fuids") and r["cert_chain_fuids"][0] in x509]
    assert src.counters.certs_joined == len(with_cert) > 100
    by_key = {(e.flow.flow_id, e.ts_ns): e for e in tls}
    for r in with_cert[:20]:
        cert = x509[r["cert_chain_fuids"][0]]
        e = by_key[(_flow_id(r["uid"]), round(r["ts"] * 1e6) * 1000)]
        assert e.serial == cert["certificate.serial"]
        assert e.san == tuple(cert.get("san.dns") or ())
        assert e.notafter is not None and e.sni == r.get("server_name")


@pytest.mark.parametrize(
    ("folder", "pcap"), [("wikipedia", "wikipedia.pcap"), ("ssh_basic", "ssh.pcap")]
)
def test_zeek_conn_log_gives_the_flows_tapetum_meters_from_the_pcap(
    tmp_path: Path, folder: str, pcap: str
) -> None:
    """Zeek's own conn.log of a capture and Tapetum's meter on the same capture: same flows,
    packets and IP bytes per direction (the btest baselines mask times: any time will do)."""
    d = data_path("zeek", folder)
    log = tmp_path / "conn.log"
    log.write_text((d / "conn.log").read_text().replace("XXXXXXXXXX.XXXXXX", "1300475167.096535"))
    _, batches = read_all(log)

    def rows(fbs: list) -> Counter:  # type: ignore[type-arg]
        out: Counter = Counter()  # type: ignore[type-arg]
        for fb in fbs:
            n = fb.num
            for k in range(len(fb)):
                out[
                    (
                        fb.src_ip[k],
                        int(n["src_port"][k]),
                        fb.dest_ip[k],
                        int(n["dest_port"][k]),
                        int(n["proto"][k]),
                        int(n["pkts_toserver"][k]),
                        int(n["pkts_toclient"][k]),
                        int(n["ip_bytes_toserver"][k]),
                        int(n["ip_bytes_toclient"][k]),
                        int(n["payload_bytes_toserver"][k]) if n["proto"][k] == 6 else -1,
                        int(n["payload_bytes_toclient"][k]) if n["proto"][k] == 6 else -1,
                    )
                ] += 1
        return out

    meter = FlowMeter(MeterConfig())
    metered = []
    with CaptureReader(d / pcap) as reader:
        for b in reader:
            metered += meter.process(b)[1]
    metered += meter.flush()
    ingested = rows([b.flows for b in batches if b.flows is not None])
    ours = rows(metered)
    assert sum(ingested.values()) == sum(ours.values()) == len(data_lines(d / "conn.log"))
    assert ingested == ours
    # and through the whole pipeline: the same flow count and IP bytes
    s_log = Pipeline().run([str(log)])
    s_pcap = Pipeline().run([str(d / pcap)])
    assert s_log.flows == s_pcap.flows
    assert sum(s_log.talkers.values()) <= sum(s_pcap.talkers.values())  # wire >= IP bytes


TSV_HEAD = (
    "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\t{path}\n"
    "#fields\t{fields}\n#types\t{types}\n"
)
CONN_FIELDS = [
    "ts",
    "uid",
    "id.orig_h",
    "id.orig_p",
    "id.resp_h",
    "id.resp_p",
    "proto",
    "duration",
    "orig_bytes",
    "resp_bytes",
    "conn_state",
    "history",
    "orig_pkts",
    "orig_ip_bytes",
    "resp_pkts",
    "resp_ip_bytes",
    "tunnel_parents",
]
CONN_TYPES = [
    "time",
    "string",
    "addr",
    "port",
    "addr",
    "port",
    "enum",
    "interval",
    "count",
    "count",
    "string",
    "string",
    "count",
    "count",
    "count",
    "count",
    "set[string]",
]


def conn_head() -> str:
    return TSV_HEAD.format(path="conn", fields="\t".join(CONN_FIELDS), types="\t".join(CONN_TYPES))


def conn_line(k: int, ts: float = 1700000000.0) -> str:
    return (
        f"{ts + k:.6f}\tC{k:05d}\t10.0.0.{k % 200 + 1}\t{40000 + k}\t192.0.2.1\t80\ttcp\t"
        f"0.5\t100\t2000\tSF\tShADadFf\t5\t300\t6\t2320\t(empty)\n"
    )


def test_bad_input_is_reported_and_the_rest_kept(tmp_path: Path) -> None:
    d = tmp_path / "logs"
    d.mkdir()
    conn = conn_head() + conn_line(0) + conn_line(1)
    conn += "1700000002.0\tCbad\t10.0.0.9\t1\n"  # too few fields
    conn += conn_line(3).replace("\t300\t", "\tnot-a-number\t")  # bad count
    conn += conn_line(4)
    # JSON line in a TSV file (mixed), with a field nobody knows
    conn += (
        json.dumps(
            {
                "ts": 1700000005.25,
                "uid": "Cjson",
                "id.orig_h": "10.0.0.7",
                "id.orig_p": 5555,
                "id.resp_h": "192.0.2.2",
                "id.resp_p": 443,
                "proto": "tcp",
                "conn_state": "S0",
                "orig_pkts": 1,
                "orig_ip_bytes": 60,
                "resp_pkts": 0,
                "resp_ip_bytes": 0,
                "sensor_color": "blue",
            }
        )
        + "\n"
    )
    conn += json.dumps({"ts": 1700000006, "id.orig_h": "10.0.0.7"}) + "\n"  # no uid etc.
    conn += conn_line(7)[:30]  # truncated last line, no line break
    (d / "conn.log").write_text(conn)
    dns_fields = [
        "ts",
        "uid",
        "id.orig_h",
        "id.orig_p",
        "id.resp_h",
        "id.resp_p",
        "proto",
        "trans_id",
        "query",
        "qtype_name",
        "rcode_name",
        "answers",
        "TTLs",
    ]
    dns_types = [
        "time",
        "string",
        "addr",
        "port",
        "addr",
        "port",
        "enum",
        "count",
        "string",
        "string",
        "string",
        "vector[string]",
        "vector[interval]",
    ]
    dns = TSV_HEAD.format(path="dns", fields="\t".join(dns_fields), types="\t".join(dns_types))
    # an escaped tab inside a name, a set with two answers, an (empty) vector
    dns += (
        "1700000000.1\tC00000\t10.0.0.1\t40000\t192.0.2.1\t80\tudp\t7\ta\\x09b.example\tA\t"
        "NOERROR\t192.0.2.7,192.0.2.8\t60.0,30.0\n"
    )
    dns += (
        "1700000000.2\tC00001\t10.0.0.2\t40001\t192.0.2.1\t80\tudp\t8\tx.example\tA\t-\t"
        "(empty)\t(empty)\n"
    )
    with gzip.open(d / "dns.log.gz", "wt") as fh:
        fh.write(dns)
    (d / "weird.log").write_text('{"ts": 1700000000.3, "name": "bad_TCP_checksum"}\n' * 3)
    src = open_source(str(d))
    assert isinstance(src, Z.ZeekSource)
    batches = list(src)
    flows = [fb for b in batches if b.flows is not None for fb in [b.flows]]
    uids_fids = {fid for fb in flows for fid in fb.num["flow_id"].tolist()}
    assert uids_fids == {_flow_id(u) for u in ("C00000", "C00001", "C00004", "Cjson")}
    c = src.counters
    assert c.corrupt_records == 3 and c.truncated_records == 1
    assert c.unknown_fields == {"conn.sensor_color": 1}
    assert c.skipped == {"weird": 3}
    text = "\n".join(str(w) for w in src.warnings)
    assert f"{d / 'conn.log'}: line 10: 4 fields, the #fields header names 17" in text
    assert "line 11: field orig_ip_bytes" in text
    assert "line 14: conn record without uid" in text
    assert "line 15: last line cut short" in text
    assert "'sensor_color' unknown" in text
    dns_ev = [e for b in batches for e in b.events]
    assert [e.rrname for e in dns_ev] == ["a\tb.example", "x.example"]
    assert [(a.rdata, a.ttl, a.rrtype) for a in dns_ev[0].answers] == [
        ("192.0.2.7", 60, "A"),
        ("192.0.2.8", 30, "A"),
    ]
    assert dns_ev[1].answers == () and dns_ev[1].type == "query"
    # the events name the flows of the same uid
    assert dns_ev[0].flow.flow_id == _flow_id("C00000")
    assert dns_ev[0].ts_ns == 1_700_000_000_100_000_000


def test_times_exact_and_iso() -> None:
    assert Z.ts_ns("1601998366.785668") == 1_601_998_366_785_668_000
    assert Z.ts_ns(1601998366.785668) == 1_601_998_366_785_668_000
    assert Z.ts_ns("2020-10-06T15:32:46.785668Z") == 1_601_998_366_785_668_000
    with pytest.raises(ValueError):
        Z.ts_ns("XXXXXXXXXX.XXXXXX")


def test_probe_by_content(tmp_path: Path) -> None:
    assert Z.probe(str(data_path("slips", "test10-mixed-zeek-dir")), b"")
    assert not Z.probe(str(tmp_path), b"")
    assert Z.probe(
        "x", (data_path("slips", "test9-mixed-zeek-dir") / "conn.log").read_bytes()[:4096]
    )
    assert Z.probe("x", b"#separator \\x09\n#set_separator\t,\n")
    assert not Z.probe("x", b'{"timestamp":"2021-06-06T15:59:46.457984+0200","event_type":"flow"}')


def test_log_type_from_fields_when_the_name_does_not_say(tmp_path: Path) -> None:
    p = tmp_path / "export.json"
    rec = {"ts": 1700000000.5, "uid": "Cx", "id.orig_h": "10.0.0.1", "id.orig_p": 1,
           "id.resp_h": "10.0.0.2", "id.resp_p": 22, "proto": "tcp", "conn_state": "S0",
           "orig_pkts": 1, "orig_ip_bytes": 60}  # fmt: skip
    p.write_text(json.dumps(rec) + "\n")
    assert Z.probe(str(p), p.read_bytes())
    src, batches = read_all(p)
    assert src.counters.flows == 1 and batches[0].flows is not None
    assert batches[0].flows.conn_state == ["S0"]
