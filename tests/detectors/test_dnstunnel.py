"""DNS tunnel detector: iodine/dnscat2-like tunnels and DNS exfiltration alert; CDNs, reverse
DNS, mDNS/LLMNR, DNS-SD and anti-virus/DNSBL zones do not; odd names do not crash it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from tapetum.config import Config, DnsTunnelSection
from tapetum.detectors.dnstunnel import SID_EXFIL, SID_TUNNEL, DnsTunnelDetector
from tapetum.errors import ModelError
from tapetum.features.dnstunnel import skip_reason, tunnel_rows
from tapetum.pipeline import Pipeline
from tapetum.records import DnsAnswer, DnsEvent, FlowRef
from tapetum.registry import build_detectors
from tapetum.testing import CaptureBuilder, Host
from tapetum.testing.tunnels import (
    chunk_names,
    decode_names,
    dnscat2_session,
    iodine_session,
)
from tests.detectors.helpers import replay, stream_of, write
from tests.detectors.scenarios import dnstunnel as scenario

T0 = 1_772_400_000 * 10**9
RNG = random.Random(5)


def ev(
    host: str,
    name: str,
    t_s: float,
    rrtype: str = "A",
    answers: tuple[DnsAnswer, ...] = (),
    port: int = 53,
) -> DnsEvent:
    flow = FlowRef(flow_id=1, community_id="", src_ip=host, src_port=40000, dest_ip="10.0.0.2",
                   dest_port=port, proto="UDP")  # fmt: skip
    return DnsEvent(ts_ns=T0 + int(t_s * 1e9), flow=flow, id=1, rrname=name, rrtype=rrtype,
                    type="answer", rcode="NOERROR", answers=answers)  # fmt: skip


def hexname(bits: int = 240) -> str:
    return f"{RNG.getrandbits(bits):0{bits // 4}x}"


def run(det: DnsTunnelDetector, events: list[DnsEvent]) -> list:  # type: ignore[type-arg]
    det.observe_events(events)
    return det.flush()


# -- the generator -------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["base32", "base64", "hex"])
def test_chunk_names_carry_the_file(encoding: str) -> None:
    data = random.Random(1).randbytes(5000)
    names = chunk_names(data, "t.tun.example", encoding=encoding, header=["ab1"])  # type: ignore[arg-type]
    assert all(len(n) <= 253 for n in names)
    assert all(len(label) <= 63 for n in names for label in n.split("."))
    back = decode_names(names, "t.tun.example", encoding=encoding, header_len=3)  # type: ignore[arg-type]
    assert back == data


def test_generated_tunnels_parse_into_events_that_carry_the_file(tmp_path: Path) -> None:
    data = random.Random(2).randbytes(3000)
    b = CaptureBuilder(seed=3)
    res = Host("10.0.0.2")
    b.add(1.0, iodine_session, Host("10.0.0.66"), res, "t.tun.example", data,
          downstream=b"x" * 2500, polls=3)  # fmt: skip
    b.add(1.0, dnscat2_session, Host("10.0.0.67"), res, "c2.evil.example", data, polls=3)
    path = write(b, tmp_path, "tunnels.pcap")
    events = [e for s in stream_of(path) for e in s.events if isinstance(e, DnsEvent)]
    iodine = sorted((e for e in events if e.flow.src_ip == "10.0.0.66"), key=lambda e: e.ts_ns)
    upload = [e.rrname for e in iodine if not e.rrname.startswith("p")]
    assert decode_names(upload, "t.tun.example", header_len=4) == data
    assert {e.rrtype for e in iodine} == {"NULL"}
    # NULL answers carry the downstream data (rendered as hex by the parser).
    first = iodine[0].answers[0]
    assert first.rrtype == "NULL" and bytes.fromhex(first.rdata).startswith(b"x" * 100)
    cat = sorted((e for e in events if e.flow.src_ip == "10.0.0.67"), key=lambda e: e.ts_ns)
    assert {e.rrtype for e in cat} == {"TXT", "CNAME", "MX"}
    packets = [bytes.fromhex(e.rrname[: -len(".c2.evil.example")].replace(".", "")) for e in cat]
    assert b"".join(p[9:] for p in packets) == data
    assert all(e.answers for e in cat)


# -- detection -----------------------------------------------------------------------------


def test_scenario_end_to_end(tmp_path: Path) -> None:
    path, attackers = scenario.build(tmp_path)
    cfg = Config()
    summary = Pipeline(cfg, detectors=build_detectors(cfg, ["dnstunnel"])).run([str(path)])
    alerts = summary.alerts
    assert {a.entity for a in alerts} == attackers
    for a in alerts:
        assert a.category == "dns-tunnel"
        if a.signature == "dnstunnel.tunnel":
            assert a.signature_id == SID_TUNNEL and a.mitre_technique_id == ("T1071.004",)
            assert a.mitre_tactic == ("command-and-control",)
    iodine = next(a for a in alerts if a.entity == "10.1.0.66")
    assert iodine.explanation.startswith("DNS tunnel to tunnel.example: 10.1.0.66 sent")
    assert "no baseline yet for this host" in iodine.explanation
    assert "1 host queried tunnel.example" in iodine.explanation
    assert iodine.observed["data_type_share"] == 1.0 and iodine.observed["sub_len_mean"] > 150
    dnscat = next(a for a in alerts if a.entity == "10.1.0.67")
    assert "evil.example" in dnscat.explanation


def test_large_upload_in_names_is_exfiltration(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=8)
    b.add(1.0, iodine_session, Host("10.0.0.66"), Host("10.0.0.2"), "t.tun.example",
          random.Random(9).randbytes(150_000), interval_s=0.01)  # fmt: skip
    path = write(b, tmp_path, "exfil.pcap")
    alerts = replay(DnsTunnelDetector(), stream_of(path))
    exfil = [a for a in alerts if a.signature == "dnstunnel.exfil"]
    assert len(exfil) == 1 and exfil[0].signature_id == SID_EXFIL
    a = exfil[0]
    assert a.mitre_tactic == ("exfiltration",) and a.mitre_technique_id == ("T1048",)
    assert a.observed["sub_bytes_out"] > 200_000  # 150 KB as base32 in names
    assert a.explanation.startswith("Data sent out in DNS names to tun.example")
    assert "of data encoded in names" in a.explanation


def test_lookalikes_do_not_alert() -> None:
    events: list[DnsEvent] = []
    host = "10.0.0.5"
    for k in range(3000):
        t = k * 0.1
        ip = ".".join(str(RNG.randint(1, 254)) for _ in range(4))
        events.append(ev(host, f"{ip}.in-addr.arpa", t, "PTR"))
        events.append(ev(host, f"{hexname(128)}.ip6.arpa", t, "PTR"))
        events.append(ev(host, f"{ip}.zen.spamhaus.org", t))
        events.append(ev(host, f"{hexname(160)}.sophosxl.net", t, "TXT"))
        events.append(ev(host, f"{hexname()}.local", t, "TXT", port=5353))
        events.append(ev(host, f"{hexname()}.corp.example", t, "TXT", port=5353))  # mDNS port
        events.append(ev(host, f"{hexname()}.corp.example", t, "TXT", port=5355))  # LLMNR
        events.append(ev(host, f"inst-{hexname()}._ipp._tcp.corp.example", t, "SRV"))
        events.append(ev(host, f"{hexname()}", t, "TXT"))  # single label
    det = DnsTunnelDetector()
    assert run(det, events) == []
    assert len(det.features(None, events)) == 0  # type: ignore[arg-type]
    assert skip_reason("a._domainkey.example.com", 53) == "service-name"
    assert skip_reason("_dmarc.example.com", 53) == "service-name"


def test_cdn_names_many_hosts_few_each_do_not_alert() -> None:
    # A CDN zone outside the Public Suffix List: 60 hosts, 6 hashed edge names each per window.
    events = [
        ev(f"10.0.1.{h}", f"e{hexname(48)}.a.edgecdn-example.net", h + k * 7.0)
        for h in range(60) for k in range(6)
    ]  # fmt: skip
    det = DnsTunnelDetector()
    assert run(det, events) == []
    rows = det.features(None, events)  # type: ignore[arg-type]
    assert len(rows) == 60 and float(det.score(rows).max()) < 0.1


def test_prevalence_raises_the_bar() -> None:
    """The same 150 hashed names score lower when the domain is queried by many hosts."""
    names = [f"{hexname(128)}.lookup.example" for _ in range(150)]
    alone = [ev("10.0.0.9", n, k * 0.5) for k, n in enumerate(names)]
    crowd = alone + [ev(f"10.0.2.{h}", f"x{h}.lookup.example", 1.0) for h in range(20)]
    det = DnsTunnelDetector()
    r1, r2 = det.features(None, alone), det.features(None, crowd)  # type: ignore[arg-type]
    s1 = float(det.score(r1)[r1.host.index("10.0.0.9")])
    s2 = float(det.score(r2)[r2.host.index("10.0.0.9")])
    assert s1 >= 0.5 > s2
    text = det.explain(r2, np.array([r2.host.index("10.0.0.9")]))[0]
    assert "21 hosts queried lookup.example (common domain: bar x4)" in text


def test_odd_names_huge_txt_and_idn_do_not_crash() -> None:
    big_txt = DnsAnswer(rrname="x", rrtype="TXT", ttl=0, rdata="A" * 70_000)
    null = DnsAnswer(rrname="x", rrtype="NULL", ttl=0, rdata="ab" * 512)
    odd = [
        "", ".", "..", "a..b.example.com", "\\x00\\xff.example.com", "x" * 300 + ".com",
        "xn--bcher-kva.xn--p1ai", "süß.bücher.example", "xn--80ak6aa92e.com",
        "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.example.org", "-.-.example.com",
        "\\x2e\\x2e.evil.example", "a b c.example.com", "EXAMPLE.COM.", "*.wild.example",
    ]  # fmt: skip
    events = [ev("10.0.0.7", n, k, t, (big_txt, null)) for k, n in enumerate(odd)
              for t in ("TXT", "NULL", "TYPE65399", "A")]  # fmt: skip
    det = DnsTunnelDetector()
    rows = det.features(None, events)  # type: ignore[arg-type]
    s = det.score(rows)
    assert np.isfinite(s).all() and len(det.explain(rows, np.arange(len(rows)))) == len(rows)
    assert int(rows.rdata_bytes_in.max()) >= 70_000  # a huge TXT record is counted, not cut
    run(det, events)


def test_alerting_windows_are_not_learnt_and_the_baseline_is_per_host() -> None:
    cfg = DnsTunnelSection(window_s=60.0)
    det = DnsTunnelDetector(cfg, lag_s=0.0)
    tunnel = [ev("10.0.0.66", f"{hexname()}.t.evil.example", w * 60 + k * 0.1, "TXT")
              for w in range(3) for k in range(300)]  # fmt: skip
    alerts = run(det, tunnel)
    assert len([a for a in alerts if a.signature == "dnstunnel.tunnel"]) == 3
    assert "10.0.0.66" not in det.baseline_
    # A host whose normal has many (moderate) hashed names learns it; the same count from a
    # host without that normal alerts.
    busy = DnsTunnelDetector(cfg, lag_s=0.0)
    for w in range(30):
        norm = [ev("10.0.0.8", f"{hexname()}.t.app.example", w * 60 + k * 0.5, "TXT")
                for k in range(40 + 2 * w)]  # fmt: skip
        assert run(busy, norm) == []
    assert busy.baseline_["10.0.0.8"][0] > cfg.min_subdomains / 2
    burst = [ev(h, f"{hexname()}.t.app.example", 4000 + k * 0.5, "TXT")
             for h in ("10.0.0.8", "10.0.0.9") for k in range(110)]  # fmt: skip
    got = {a.entity for a in run(busy, burst)}
    assert got == {"10.0.0.9"}


def test_poll_emits_once_the_window_is_complete() -> None:
    det = DnsTunnelDetector(DnsTunnelSection(window_s=60.0), lag_s=30.0)
    det.observe_events([ev("10.0.0.66", f"{hexname()}.evil.example", k * 0.1, "TXT")
                        for k in range(300)])  # fmt: skip
    assert det.poll(T0 + 60 * 10**9) == []  # window not yet closed by the lag
    alerts = det.poll(T0 + 91 * 10**9)
    assert [a.entity for a in alerts] == ["10.0.0.66"] and det.flush() == []


def test_state_round_trip_mismatch_and_caps() -> None:
    cfg = DnsTunnelSection(max_pairs=5, max_names_per_pair=50, max_hosts=3, max_domains=4)
    det = DnsTunnelDetector(cfg)
    events = [ev(f"10.0.0.{h}", f"{hexname()}.d{d}.example", k) for h in range(10)
              for d in range(3) for k in range(80)]  # fmt: skip
    run(det, events)
    assert det.dropped_["pairs"] > 0 and len(det.baseline_) <= 3 and len(det.domain_hosts_) <= 4
    rows = tunnel_rows(events[:200], max_names=50)
    assert int(rows.distinct_subdomains.max()) == 80  # beyond the cap still counted
    state = json.loads(json.dumps(det.state()))
    back = DnsTunnelDetector.from_state(state, cfg)
    np.testing.assert_array_equal(det.score(rows), back.score(rows))
    with pytest.raises(ModelError):
        DnsTunnelDetector.from_state({**state, "version": 99})
    with pytest.raises(ModelError, match="damaged"):
        DnsTunnelDetector.from_state({**state, "baseline": {"h": 1}})


def test_forwarding_resolver_is_not_blamed_for_its_clients_tunnel(tmp_path: Path) -> None:
    """The client's tunnel queries reach the resolver, which repeats them upstream: one alert,
    on the client (as in the lab, where dnsmasq forwards iodine's queries)."""
    client, resolver, upstream = Host("10.1.0.66"), Host("10.1.0.53"), Host("192.0.2.53")
    data = random.Random(9).randbytes(30_000)
    b = CaptureBuilder(seed=9)
    b.add(1.0, iodine_session, client, resolver, "tunnel.example", data)
    b.add(1.002, iodine_session, resolver, upstream, "tunnel.example", data)
    path = tmp_path / "relay.pcap"
    b.write(path)
    det = DnsTunnelDetector()
    alerts = replay(det, stream_of(path))
    assert {a.entity for a in alerts} == {client.ip}
    assert det.relayed_ >= 1
    # Without the client's side in view, the resolver is all there is to alert on.
    b = CaptureBuilder(seed=9)
    b.add(1.002, iodine_session, resolver, upstream, "tunnel.example", data)
    b.write(path)
    assert {a.entity for a in replay(DnsTunnelDetector(), stream_of(path))} == {resolver.ip}
