"""DGA detection: the bundled model on held-out domains, name preparation (IDN, malformed, local),
and the detector on synthetic captures and hand-made DNS events."""

from __future__ import annotations

import importlib.util
import json
import random
from importlib import resources
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tapetum.config import DgaSection
from tapetum.detectors.dga import SID_DOMAINS, SID_NXDOMAIN, DgaDetector
from tapetum.errors import ModelError
from tapetum.features.dga import (
    IDN,
    LOCAL,
    MALFORMED,
    OK,
    REVERSE,
    load_model,
    prepare,
    schema_hash,
    score_names,
)
from tapetum.records import Alert, DnsEvent, FlowRef
from tests.conftest import REPO, data_path
from tests.detectors.helpers import replay, stream_of
from tests.detectors.scenarios import dga as scenario

T0 = 1_700_000_400 * 10**9  # a window boundary (multiple of 600 s)
S = 10**9


def _train_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_dga", REPO / "scripts" / "train_dga.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def held_out(name: str, n: int, rng: random.Random) -> list[str]:
    """`n` labels of a list that the shipped model never trained on (the held-out split)."""
    t = _train_module()
    seed = int(load_model().meta["training"]["seed"])
    labels = set()
    for line in data_path("dga", f"{name}.txt").read_text().splitlines():
        p = prepare(line)
        if p.status == OK and t.is_held_out(p.label, seed):
            labels.add(p.label)
    return rng.sample(sorted(labels), min(n, len(labels)))


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    return float(np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])))


def ev(ts_s: float, src: str, name: str, rcode: str | None = "NOERROR", port: int = 53) -> DnsEvent:
    flow = FlowRef(flow_id=abs(hash((src, name, ts_s))) % 2**53, community_id="1:x", src_ip=src,
                   src_port=40000, dest_ip="10.0.0.2", dest_port=port, proto="UDP")  # fmt: skip
    return DnsEvent(ts_ns=T0 + int(ts_s * S), flow=flow, id=1, rrname=name, rrtype="A",
                    type="answer" if rcode else "query", rcode=rcode)  # fmt: skip


def run(det: DgaDetector, events: list[DnsEvent]) -> list[Alert]:
    det.observe_events(events)
    return det.poll(None) + det.flush()


# -- the model ---------------------------------------------------------------------------------


def test_model_ships_in_the_package_with_its_metadata() -> None:
    base = resources.files("tapetum") / "models" / "dga"
    meta = json.loads((base / "dga.json").read_text())
    assert meta["feature_schema_hash"] == schema_hash()
    assert 0.5 <= meta["threshold"] < 1.0
    model = load_model()
    assert model.threshold == meta["threshold"]
    assert model.embedding.shape[0] == 2**18


def test_held_out_dga_ranks_above_held_out_benign() -> None:
    rng = random.Random(5)
    model = load_model()
    benign = held_out("opendns-random-domains", 800, rng) + held_out(
        "opendns-top-domains", 800, rng
    )
    sb = model.score_labels(benign)
    per_family = {}
    for fam in ("conficker", "cryptolocker", "goz", "pushdo", "tinba", "zeus"):
        s = model.score_labels(held_out(fam, 400, rng))
        per_family[fam] = auc(s, sb)
    assert min(per_family.values()) > 0.94, per_family
    assert np.mean(list(per_family.values())) > 0.975, per_family
    assert (sb >= model.threshold).mean() < 0.02  # false positives at the shipped threshold


def test_scores_are_deterministic_and_batch_independent() -> None:
    model = load_model()
    names = ["google", "xkqzvbwtrp", "1jjcgb11mmtru8r7xsa1xqk8zh", "a", "a" * 63]
    together = model.score_labels(names)
    alone = np.array([model.score_labels([n])[0] for n in names])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-12)
    assert model.score_labels([]).shape == (0,)


# -- which label is scored ---------------------------------------------------------------------


def test_prepare_picks_the_registered_label_and_refuses_what_it_cannot_score() -> None:
    p = prepare("WWW.Example.CO.UK.")
    assert (p.status, p.registered, p.label) == (OK, "example.co.uk", "example")
    assert prepare("x7fk2q.example.com").label == "example"  # subdomains are not the DGA part
    assert prepare("1.2.168.192.in-addr.arpa").status == REVERSE
    assert prepare("printer.corp.lan").status == LOCAL
    assert prepare("wpad").status == LOCAL
    assert prepare("co.uk").status == LOCAL
    assert prepare("d111111abcdef8.cloudfront.net").private_suffix
    assert prepare("a" * 64 + ".com").status == MALFORMED
    assert prepare(("abc." * 70) + "com").status == MALFORMED
    assert prepare("bad name.com").status == MALFORMED
    assert prepare("a..com").status == MALFORMED
    assert prepare("").status == "empty"


def test_punycode_is_decoded_not_scored_as_dga() -> None:
    for name in ("www.xn--mnchen-3ya.de", "xn--80ak6aa92e.com", "xn--ls8h.la"):
        p = prepare(name)
        assert p.status == IDN and not p.label.startswith("xn--"), p
    assert prepare("xn--mnchen-3ya.de").label == "münchen"
    assert prepare("xn--zzzzzzzzz-99999.com").status == MALFORMED  # undecodable
    (r,) = score_names(["xn--mnchen-3ya.de"])
    assert np.isnan(r[1])


# -- the detector ------------------------------------------------------------------------------


def test_scenario_infected_host_alerts_and_office_does_not(tmp_path: Path) -> None:
    path, attackers = scenario.build(tmp_path)
    det = DgaDetector()
    alerts = replay(det, stream_of(path))
    assert {a.entity for a in alerts} == attackers
    (a,) = alerts
    assert a.signature == "dga.domains" and a.signature_id == SID_DOMAINS
    assert a.category == "dga" and a.mitre_technique_id == ("T1568.002",)
    assert a.mitre_tactic == ("command-and-control",)
    assert a.observed["nxdomain_domains"] == 40 and a.observed["nxdomain_ratio"] == 1.0
    assert a.observed["dga_domains"] >= 5
    assert "distinct DGA-like domains" in a.explanation and "e.g." in a.explanation
    assert a.explanation.count("NXDOMAIN)") == 5  # five examples, each answered NXDOMAIN
    # Office clients were learnt; none has reverse, local or mDNS names counted.
    assert len(det.baseline_) >= 20


def test_dga_burst_from_real_family_names_not_in_training() -> None:
    rng = random.Random(8)
    names = [f"{lb}.ru" for lb in held_out("cryptolocker", 30, rng)]
    events = [ev(k * 2.0, "10.0.0.66", n, "NXDOMAIN") for k, n in enumerate(names)]
    (a,) = run(DgaDetector(), events)
    assert a.signature == "dga.domains" and a.severity <= 2
    assert a.observed["dga_domains"] >= 20


def test_busy_benign_dns_client_does_not_alert() -> None:
    rng = random.Random(9)
    labels = held_out("opendns-random-domains", 400, rng)
    events = []
    for k, lb in enumerate(labels):  # 400 distinct real domains in 10 minutes, a few typos
        events.append(
            ev(k * 1.4, "10.0.0.5", f"www.{lb}.com", "NXDOMAIN" if k % 50 == 0 else "NOERROR")
        )
    det = DgaDetector()
    assert run(det, events) == []
    assert det.baseline_["10.0.0.5"][1] == 8  # the NXDOMAIN level was learnt


def test_nxdomain_burst_of_word_names_and_the_hosts_own_baseline() -> None:
    words = [
        "garden",
        "river",
        "market",
        "silver",
        "planet",
        "orange",
        "castle",
        "window",
        "summer",
        "forest",
        "bridge",
        "yellow",
        "rocket",
        "spring",
        "butter",
        "candle",
    ]
    names = [f"{a}{b}.com" for a in words for b in words[:3]]  # 48 dictionary-like names
    events = [ev(k * 3.0, "10.0.0.7", n, "NXDOMAIN") for k, n in enumerate(names)]
    (a,) = run(DgaDetector(), events)
    assert a.signature == "dga.nxdomain_burst" and a.signature_id == SID_NXDOMAIN
    assert a.observed["nxdomain_domains"] == 48
    assert "NXDOMAIN for 48 distinct domains" in a.explanation
    # A host whose normal is many NXDOMAIN domains (a mail server checking senders) does not
    # alert at the same count: its bar is 3x its own level.
    det = DgaDetector()
    det.baseline_["10.0.0.7"] = [0.0, 30.0, 0.5, 10.0, 0.0]
    assert run(det, events) == []


def test_mdns_llmnr_reverse_local_idn_and_malformed_do_not_count() -> None:
    host = "10.0.0.9"
    rng = random.Random(3)
    gen = ["".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(12)) for _ in range(30)]
    events = [ev(k, host, f"{g}.local", "NXDOMAIN", port=5353) for k, g in enumerate(gen)]
    events += [ev(k, host, f"{g}.com", "NXDOMAIN", port=5355) for k, g in enumerate(gen)]
    events += [ev(k, host, f"{k}.{k}.10.10.in-addr.arpa", "NXDOMAIN") for k in range(30)]
    events += [ev(k, host, f"{g}.corp.lan", "NXDOMAIN") for k, g in enumerate(gen)]
    events += [ev(k, host, f"{g}.internal", "NXDOMAIN") for k, g in enumerate(gen)]
    events += [ev(k, host, f"xn--{g}.com", "NXDOMAIN") for k, g in enumerate(gen[:5])]
    events += [ev(k, host, "x" * 300, "FORMERR") for k in range(5)]
    events += [ev(k, host, f"{'q' * 70}{k}.com", "NXDOMAIN") for k in range(5)]
    det = DgaDetector()
    rows = det.features(None, events)  # type: ignore[arg-type]
    (k,) = [i for i, h in enumerate(rows.host) if h == host]
    assert rows.dga_domains[k] == 0
    # Too long names and labels are malformed; random xn-- labels are malformed when they do not
    # decode, otherwise IDN (counted, never scored).
    xn = [prepare(f"xn--{g}.com").status for g in gen[:5]]
    assert set(xn) <= {IDN, MALFORMED}
    assert rows.malformed[k] == 10 + xn.count(MALFORMED)
    assert rows.nx_domains[k] <= 10
    assert run(det, events) == []


def test_memory_caps_count_what_they_drop() -> None:
    cfg = DgaSection(max_names_per_host=10, max_hosts=2)
    det = DgaDetector(cfg)
    events = [ev(k, "10.0.0.1", f"site{k}.com") for k in range(50)]
    events += [ev(1, f"10.0.1.{k}", "example.com") for k in range(5)]
    rows = det.features(None, events)  # type: ignore[arg-type]
    assert len(rows) == 2 and rows.distinct_domains.max() == 10
    assert det.dropped_["names"] == 40 and det.dropped_["hosts"] == 4


def test_windows_close_by_data_time_and_poll_emits_early() -> None:
    rng = random.Random(8)
    names = [f"{lb}.ru" for lb in held_out("cryptolocker", 20, rng)]
    det = DgaDetector(lag_s=60.0)
    det.observe_events([ev(k, "10.0.0.66", n, "NXDOMAIN") for k, n in enumerate(names)])
    assert det.poll(None) == []  # the 10-minute window is not complete yet
    det.observe_events([ev(2000.0, "10.0.0.3", "example.com")])
    (a,) = det.poll(None)
    assert a.entity == "10.0.0.66"
    assert det.flush() == []


def test_state_round_trip_and_version_check() -> None:
    det = DgaDetector()
    events = [ev(k, f"10.0.0.{k % 7}", f"site{k}.com", "NXDOMAIN" if k % 3 else "NOERROR")
              for k in range(60)]  # fmt: skip
    rows = det.features(None, events)  # type: ignore[arg-type]
    det.learn(rows)
    state = json.loads(json.dumps(det.state()))
    restored = DgaDetector.from_state(state)
    assert restored.baseline_ == det.baseline_
    np.testing.assert_array_equal(det.score(rows), restored.score(rows))
    assert restored.explain(rows, np.arange(len(rows))) == det.explain(rows, np.arange(len(rows)))
    with pytest.raises(ModelError):
        DgaDetector.from_state({**state, "version": 999})
    with pytest.raises(ModelError):
        DgaDetector.from_state({**state, "baseline": {"10.0.0.1": [1.0]}})
