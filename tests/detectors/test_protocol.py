"""The protocol-anomaly detector: certificates, ports, cleartext credentials, rare fingerprints."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tapetum.config import Config, ProtocolAnomalySection
from tapetum.detectors.protocol import ProtocolDetector
from tapetum.features.protocol import name_matches, subject_cn
from tapetum.pipeline import Pipeline
from tapetum.records import Alert
from tapetum.registry import build_detectors
from tapetum.testing import CaptureBuilder, Host, http_session, ssh_session, tls_session
from tapetum.testing.anomalies import http_basic_auth_session, tls_cert_session
from tests.conftest import data_path
from tests.detectors.helpers import replay, stream_of, write


@pytest.mark.parametrize(
    ("reference", "presented", "ok"),
    [
        ("www.example.com", "www.example.com", True),
        ("WWW.Example.COM.", "www.example.com", True),
        ("a.example.com", "*.example.com", True),
        ("a.b.example.com", "*.example.com", False),  # one label only
        ("example.com", "*.example.com", False),
        ("wrong.host.badssl.com", "*.badssl.com", False),
        ("foo1.example.com", "foo*.example.com", True),  # partial left-most label
        ("bar.example.com", "foo*.example.com", False),
        ("a.example.com", "a.*.com", False),  # wildcard not left-most
        ("a.com", "*.com", False),  # too few labels after it
        ("xn--abc.example.com", "xn--a*.example.com", False),  # not inside an A-label
        ("a.example.com", "*.*.com", False),
    ],
)
def test_name_matches_rfc6125(reference: str, presented: str, ok: bool) -> None:
    assert name_matches(reference, presented) is ok


def test_subject_cn() -> None:
    assert subject_cn("CN=a.example,O=Org") == "a.example"
    assert subject_cn("O=Acme\\, Inc.,CN=b.example") == "b.example"
    assert subject_cn("O=ntop.org,ST=Some-State,C=IT") is None
    assert subject_cn(None) is None


def _run(path: Path, config: Config | None = None) -> list[Alert]:
    cfg = config or Config()
    pipe = Pipeline(cfg, detectors=build_detectors(cfg, ["protocol"]))
    return pipe.run([str(path)]).alerts


def test_each_anomaly_once_with_counts(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=5)
    c, other = Host("10.1.0.5"), Host("10.1.0.6")
    s1, s2, s3 = Host("203.0.113.9"), Host("203.0.113.10"), Host("203.0.113.11")
    for k in range(3):  # three connections, one server: one alert counting 3
        b.add(1 + k, tls_cert_session, c, s1, sni="a.example", cert_kind="self-signed")
    b.add(5, tls_cert_session, c, s2, sni="b.example", cert_name="other.example")
    b.add(6, tls_cert_session, c, s2, sni="c.example", cert_kind="expired")
    b.add(7, tls_cert_session, c, s2, sni="d.example", cert_kind="not-yet-valid")
    b.add(8, http_basic_auth_session, c, s3, host="intranet.example", requests=2)
    b.add(9, ssh_session, c, s3, port=443, duration=3)
    b.add(10, tls_session, c, s3, sni="e.example", port=22)
    b.add(11, http_session, c, s3, host="f.example", port=443)
    # Nothing wrong: wildcard certificate, CA-signed TLS 1.2, TLS 1.3 (certificate encrypted,
    # so no mismatch can be seen), standard ports.
    b.add(12, tls_cert_session, other, s1, sni="x.wild.example", cert_name="*.wild.example")
    b.add(13, tls_cert_session, other, s1, sni="ok.example")
    b.add(14, tls_session, other, s2, sni="anything.example")
    b.add(15, ssh_session, other, s3, duration=3)
    b.add(16, http_session, other, s3, host="g.example")
    path = write(b, tmp_path, "anomalies.pcap")
    alerts = _run(path)
    by_sig = Counter(a.signature for a in alerts)
    assert by_sig == {
        "protocol.self_signed_cert": 1,
        "protocol.sni_mismatch": 1,
        "protocol.expired_cert": 2,
        "protocol.cleartext_credentials": 1,
        "protocol.unexpected_port": 3,
    }
    assert {a.entity for a in alerts} == {c.ip}
    assert all(a.category == "protocol-anomaly" for a in alerts)
    assert all(9_000_080 <= a.signature_id <= 9_000_089 for a in alerts)
    selfsigned = next(a for a in alerts if a.signature == "protocol.self_signed_cert")
    assert selfsigned.dest_ip == s1.ip and selfsigned.observed["connections"] == 3
    assert "3 connections" in selfsigned.explanation
    creds = next(a for a in alerts if a.signature == "protocol.cleartext_credentials")
    assert creds.mitre_tactic == ("credential-access",) and creds.dest_port == 80
    ports = {(a.dest_port, a.explanation.split(" spoken")[0].split()[-1]) for a in alerts
             if a.signature == "protocol.unexpected_port"}  # fmt: skip
    assert ports == {(443, "SSH"), (22, "TLS"), (443, "HTTP")}
    mismatch = next(a for a in alerts if a.signature == "protocol.sni_mismatch")
    assert "'b.example'" in mismatch.explanation and "other.example" in mismatch.explanation
    texts = " ".join(a.explanation for a in alerts if a.signature == "protocol.expired_cert")
    assert "expired 90" in texts and "not valid for another" in texts


def test_alert_comes_from_poll_before_the_end(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=6)
    c, s = Host("10.1.0.5"), Host("203.0.113.9")
    b.add(1, tls_cert_session, c, s, sni="a.example", cert_kind="self-signed")
    for k in range(40):  # traffic goes on for 20 minutes
        b.add(30 + 30 * k, http_session, Host("10.1.0.7"), s, host="x.example")
    path = write(b, tmp_path, "long.pcap")
    det = ProtocolDetector()
    polled: list[Alert] = []
    for step in stream_of(path):
        det.observe_events(step.events)
        if step.flows is not None:
            det.observe(step.flows)
        polled += det.poll(None)
    assert [a.signature for a in polled] == ["protocol.self_signed_cert"]
    assert det.flush() == []


def _rare_capture(path: Path, *, shared: bool) -> Path:
    b = CaptureBuilder(seed=7)
    clients = [Host(f"10.1.0.{k}") for k in range(10, 25)]
    server = Host("203.0.113.20")
    for k in range(60):
        b.add(k * 2.0, tls_session, clients[k % len(clients)], server, sni="app.example")
    odd = Host("10.1.0.99")
    for k in range(3):  # a TLS 1.2-only client with its own cipher list: another JA4
        b.add(150.0 + k, tls_session, odd, server, sni="c2.example", client_profile="legacy")
    if shared:  # a second host with the same client
        b.add(151.5, tls_session, clients[0], server, sni="c2.example", client_profile="legacy")
    b.write(path)
    return path


def test_rare_fingerprint_after_warm_up(tmp_path: Path) -> None:
    cfg = ProtocolAnomalySection(rare_warmup_handshakes=30, rare_warmup_hosts=10)
    steps = stream_of(_rare_capture(tmp_path / "rare.pcap", shared=False))
    alerts = replay(ProtocolDetector(cfg), steps)
    assert [(a.signature, a.entity) for a in alerts] == [("protocol.rare_ja4", "10.1.0.99")]
    assert alerts[0].severity == 3 and alerts[0].observed["connections"] == 3
    # Before the warm-up nothing is rare.
    late = ProtocolDetector(ProtocolAnomalySection(rare_warmup_handshakes=1000))
    assert replay(late, steps) == []
    # A second host used the same fingerprint within the window: not one host's client.
    shared = stream_of(_rare_capture(tmp_path / "shared.pcap", shared=True))
    assert sum(len(s.events) for s in shared) == sum(len(s.events) for s in steps) + 1
    assert replay(ProtocolDetector(cfg), shared) == []


def test_state_round_trip_keeps_prevalence(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=8)
    for k in range(12):
        b.add(k, tls_session, Host(f"10.1.0.{10 + k}"), Host("203.0.113.5"), sni="a.example")
    path = write(b, tmp_path, "p.pcap")
    det = ProtocolDetector(ProtocolAnomalySection(rare_warmup_handshakes=5, rare_warmup_hosts=5))
    replay(det, stream_of(path))
    state = json.loads(json.dumps(det.state()))
    again = ProtocolDetector.from_state(state, det.config)
    assert again.fingerprints_ == det.fingerprints_ and again.handshakes_ == 12
    from tapetum.errors import ModelError

    with pytest.raises(ModelError):
        ProtocolDetector.from_state({**state, "version": 99})


def _real(name: str) -> Counter[str]:
    return Counter(a.signature for a in _run(data_path("nfstream", "pcaps", name)))


def test_real_captures() -> None:
    # ntop's test certificate: self-signed, expired in 2016 (capture 2020), names no host.
    assert _real("selfsigned.pcap") == {
        "protocol.self_signed_cert": 1,
        "protocol.expired_cert": 1,
        "protocol.sni_mismatch": 1,
    }
    assert _real("ssl-cert-name-mismatch.pcap") == {"protocol.sni_mismatch": 1}  # badssl.com
    assert _real("http_auth.pcap") == {"protocol.cleartext_credentials": 1}
    # Tor's camouflage: random www.*.com SNIs, certificates for other random www.*.net names.
    assert _real("tor.pcap") == {"protocol.sni_mismatch": 7}
    # Anonymised captures dated 2000-01-01: certificates "valid from 2020" say the clock is off.
    assert _real("dnscrypt-v2-doh.pcap") == {}
    assert _real("tls-rdn-extract.pcap") == {}
    # Plain TLS 1.2/1.3 browsing: nothing.
    assert _real("tls_verylong_certificate.pcap")["protocol.sni_mismatch"] == 0
