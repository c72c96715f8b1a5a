"""The kitsune packet detector in the pipeline: trained on office traffic, it reports a scan, a
flood and an upload by the hosts that did them (not their victims), stays quiet on benign
traffic, explains with the worst-reconstructed statistics, and does not learn attacks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tapetum.config import Config
from tapetum.detectors.kitsune import KitsuneDetector, KitsuneRows
from tapetum.pipeline import Pipeline
from tapetum.records import Alert
from tapetum.registry import build_detectors
from tests.detectors.scenarios.kitsune import (
    ATTACKER,
    UPLOADER,
    VICTIM,
    config,
    office_capture,
)

NS = 1_000_000_000
SCAN_AT, FLOOD_AT, UPLOAD_AT = 250.0, 350.0, 450.0


def _kitsune(cfg: Config) -> KitsuneDetector:
    (det,) = build_detectors(cfg, ["kitsune"])
    assert isinstance(det, KitsuneDetector)
    return det


def _run(det: KitsuneDetector, path: Path, cfg: Config) -> tuple[list[Alert], int]:
    s = Pipeline(cfg, detectors=[det]).run([str(path)])
    assert s.first_ns is not None
    return s.alerts, s.first_ns


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return office_capture(
        tmp_path_factory.mktemp("kitsune") / "attacked.pcap", 5,
        scan_at=SCAN_AT, flood_at=[FLOOD_AT], upload_at=UPLOAD_AT,
    )  # fmt: skip


def test_not_in_the_default_set_unless_enabled() -> None:
    assert "kitsune" not in {d.name for d in build_detectors(Config())}
    assert "kitsune" in {d.name for d in build_detectors(config(enabled=True))}


def test_detects_scan_flood_and_upload_by_their_authors(attacked: Path) -> None:
    cfg = config()
    det = _kitsune(cfg)
    alerts, t0 = _run(det, attacked, cfg)
    assert det.model_ is not None and det.model_.rows_learnt > 1000
    assert {a.entity for a in alerts} == {ATTACKER, UPLOADER}
    assert VICTIM not in {a.dest_ip for a in alerts if a.entity == UPLOADER}
    assert det.collateral_ >= 1, "the scanned host's after-effects were seen and not reported"
    starts = sorted((a.first_ts_ns - t0) / NS for a in alerts if a.first_ts_ns is not None)
    assert starts[0] >= SCAN_AT - 1, "alert in the benign part"
    assert all(a.first_ts_ns is not None and a.last_ts_ns is not None for a in alerts)
    for at, who, peer in ((SCAN_AT, ATTACKER, VICTIM), (FLOOD_AT, ATTACKER, "198.51.100.7"),
                          (UPLOAD_AT, UPLOADER, "203.0.113.50")):  # fmt: skip
        hit = [a for a in alerts if a.entity == who and a.dest_ip == peer
               and (a.first_ts_ns or 0) <= t0 + (at + 60) * NS
               and (a.last_ts_ns or 0) >= t0 + at * NS]  # fmt: skip
        assert hit, (at, who)
        a = hit[0]
        assert a.signature == "kitsune.packets" and a.signature_id == 9_000_110
        assert a.category == "anomaly" and a.score >= 0.5
        assert a.observed["anomalous_packets"] >= 20
        text = a.explanation
        assert f"{who}: " in text and "packets unlike the" in text and peer in text
        assert "half-life" in text and "learnt typical" in text  # features, in words
        named = [k for k in a.observed if k in det.names]
        assert named and all(k in a.baseline for k in named)
    scan = next(a for a in alerts if a.dest_ip == VICTIM)
    assert scan.observed["dest_ports"] >= 300  # the probed ports are counted


def test_quiet_on_benign_traffic(tmp_path: Path) -> None:
    cfg = config()
    det = _kitsune(cfg)
    alerts, _ = _run(det, office_capture(tmp_path / "benign.pcap", 6), cfg)
    assert det.model_ is not None
    assert alerts == []


def test_explain_rows_and_untrained_scores(attacked: Path) -> None:
    from tapetum.sources.pcap import CaptureReader

    det = _kitsune(config())
    with CaptureReader(attacked) as reader:
        rows = KitsuneRows.concat([det.packet_features(b) for b in reader])
    assert (det.score(rows) == 0).all()  # nothing learnt: no ranking
    assert det.explain(rows, np.array([0]))[0].endswith("nothing learnt yet")
    t = (rows.ts_ns - rows.ts_ns[0]) / NS
    det.learn(rows.take(np.flatnonzero(t < SCAN_AT - 10)))
    s = det.score(rows)
    k = int(np.argmax(s))
    (text,) = det.explain(rows, np.array([k]))
    assert "threshold 0.50" in text and "learnt typical" in text
    assert det.entities(rows.take(np.array([k]))) in ([ATTACKER], [UPLOADER], [VICTIM])


def test_attack_bursts_are_not_learnt(tmp_path: Path) -> None:
    """Two identical floods; the model is refitted (every 3,000 learnt packets) between them.
    Learning only packets under the threshold keeps the second flood as anomalous as the first;
    had the first been learnt (it falls inside the training grace of `poisoned`), the second
    would largely pass."""
    path = office_capture(tmp_path / "bursts.pcap", 7, flood_at=[250.0, 430.0])
    cfg = config(refit_packets=3000)
    det = _kitsune(cfg)
    alerts, t0 = _run(det, path, cfg)
    floods = [a for a in alerts if a.entity == ATTACKER]
    assert {round(((a.first_ts_ns or 0) - t0) / NS / 10) * 10 for a in floods} == {250, 430}
    first, second = sorted(floods, key=lambda a: a.ts_ns)
    assert second.observed["anomalous_packets"] >= 0.9 * first.observed["anomalous_packets"]
    assert det.anomalous_ >= 3600  # both bursts, never learnt
    pcfg = config(train_grace_s=250.0)  # training ends at 280 s: the first flood is learnt
    poisoned = _kitsune(pcfg)
    p_alerts, _ = _run(poisoned, path, pcfg)
    p_second = [a.observed["anomalous_packets"] for a in p_alerts if a.entity == ATTACKER]
    assert sum(p_second) < 0.5 * second.observed["anomalous_packets"]


def test_one_source_cannot_fill_the_learning_set(attacked: Path) -> None:
    from tapetum.sources.pcap import CaptureReader

    det = _kitsune(config(refit_packets=1000, max_source_share=0.1))  # 100 per source
    with CaptureReader(attacked) as reader:
        rows = KitsuneRows.concat([det.packet_features(b) for b in reader])
    src = np.array(det.entities(rows))
    one = rows.take(np.flatnonzero(src == ATTACKER)[:500])
    keep = det._source_cap(one)
    assert keep.sum() == 100 and keep[:100].all()
    assert det._source_cap(one).sum() == 0  # its share is used up until the next refit
    other = rows.take(np.flatnonzero(src == UPLOADER)[:50])
    assert det._source_cap(other).all()


def test_state_continues_learning_and_scoring(tmp_path: Path, attacked: Path) -> None:
    """A detector restored from JSON scores the next capture exactly as the original does."""
    cfg = config()
    det = _kitsune(cfg)
    _run(det, office_capture(tmp_path / "learn.pcap", 8), cfg)
    det.finish_learning()  # as `tapetum learn` does: fit on all that was learnt
    state = json.loads(json.dumps(det.state()))
    restored = KitsuneDetector.from_state(state, cfg.detectors.kitsune)
    a1, _ = _run(det, attacked, cfg)
    a2, _ = _run(restored, attacked, cfg)
    assert a1 == a2 and {a.entity for a in a1} == {ATTACKER, UPLOADER}
    # from the first minute: the restored model needs no grace period on the new capture
    assert det.learnt_ == restored.learnt_ > int(state["learnt"])


def test_refuses_other_versions_and_schemas() -> None:
    from tapetum.errors import ModelError

    state = json.loads(json.dumps(KitsuneDetector(config().detectors.kitsune).state()))
    with pytest.raises(ModelError, match="version"):
        KitsuneDetector.from_state(state | {"version": 99})
    with pytest.raises(ModelError, match="feature schema"):
        KitsuneDetector.from_state(state | {"schema_hash": "0123456789abcdef"})
    with pytest.raises(ModelError, match="incomplete"):
        KitsuneDetector.from_state({k: v for k, v in state.items() if k != "reservoir"})
    bad = state | {"reservoir": state["reservoir"] | {"b64": state["reservoir"]["b64"] + "AAAA"}}
    with pytest.raises(ModelError):
        KitsuneDetector.from_state(bad)
