"""`tapetum learn` and `tapetum analyze --model`: a model learnt on benign office traffic changes
what analysis reports (anomaly detection from the first minute instead of after an hour's warm-up;
kitsune without its grace period), damaged or mismatched models are refused with exit code 6 and
a message naming the file, `--update-model` writes back atomically, and attacks inside the
learning input are not learnt."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tapetum.cli import EXIT_MODEL, main
from tapetum.learning import FORMAT_VERSION, MANIFEST, read_manifest
from tests.detectors.scenarios.kitsune import ATTACKER, UPLOADER, office_capture

EARLY_FLOOD = 60.0  # inside kitsune's grace period when nothing is learnt
CONFIG = """
[detectors.kitsune]
enabled = true
fm_grace_s = 30.0
train_grace_s = 120.0
min_train_packets = 1000
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("learning")
    cfg = d / "tapetum.toml"
    cfg.write_text(CONFIG)
    return {
        "config": cfg,
        "benign": office_capture(d / "benign.pcap", 21),
        "attack": office_capture(
            d / "attack.pcap", 22, flood_at=[EARLY_FLOOD], scan_at=250.0, upload_at=450.0
        ),
        # learning input with an attack after the grace period: it must not be learnt
        "dirty": office_capture(d / "dirty.pcap", 23, flood_at=[300.0]),
        "model": d / "model",
    }


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args])


def _analyze(f: dict[str, Path], capture: str, *extra: str) -> dict[str, Any]:
    res = _cli("analyze", f[capture], "--no-store", "--json", "--no-progress",
               "--config", f["config"], *extra)  # fmt: skip
    assert res.exit_code == 0, res.output
    return dict(json.loads(res.stdout))


def _alerts(out: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    return [e["alert"] for e in out["alerts"] if e["alert"]["signature"].startswith(prefix)]


def _secs(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def _entities(alerts: list[dict[str, Any]]) -> set[str]:
    return {a["entity"] for a in alerts}


@pytest.fixture(scope="module")
def model(files: dict[str, Path]) -> Path:
    res = _cli("learn", files["benign"], "--out", files["model"], "--config", files["config"],
               "--no-progress")  # fmt: skip
    assert res.exit_code == 0, res.output
    return files["model"]


def _digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def test_learn_writes_a_checked_model(files: dict[str, Path], model: Path) -> None:
    m = read_manifest(model)
    assert m["format_version"] == FORMAT_VERSION and m["tapetum_version"]
    assert {"anomaly", "kitsune", "scan", "exfil"} <= set(m["detectors"])
    k = m["detectors"]["kitsune"]
    assert k["arrays"] == "kitsune.npz" and k["learnt"] > 10_000 and k["state_version"] == 1
    assert len(k["feature_schema"]) == 16 and m["detectors"]["anomaly"]["learnt"] > 500
    (inp,) = m["inputs"]
    assert inp["name"] == "benign.pcap" and inp["bytes"] == files["benign"].stat().st_size
    assert m["counts"]["packets"] > 20_000 and m["counts"]["flows"] > 1000
    assert 530 < m["data_span"]["duration_s"] < 560  # sessions run past the last start
    assert m["counts"]["alerts_while_learning"] == 0
    for name, meta in m["files"].items():
        assert (model / name).stat().st_size == meta["bytes"]
    state = json.loads((model / "kitsune.json").read_text())
    assert state["model"] == {"npz_key": "a0"}  # arrays live in the npz, not base64 in JSON


def test_model_changes_what_analysis_reports(files: dict[str, Path], model: Path) -> None:
    cold = _analyze(files, "attack")
    warm = _analyze(files, "attack", "--model", model)
    # Without a model the anomaly detector is still in its one-hour warm-up: nothing.
    assert _alerts(cold, "anomaly.") == []
    found = _alerts(warm, "anomaly.")
    assert ATTACKER in _entities(found) and UPLOADER in _entities(found)

    # Kitsune: the early flood falls into the grace period of a cold start; with the model it
    # is reported from the first minute.
    def early_floods(out: dict[str, Any]) -> list[dict[str, Any]]:
        t0 = _secs(out["first_seen"])
        return [a for a in _alerts(out, "kitsune.") if "198.51.100.7" in a["explanation"]
                and _secs(a["first_seen"]) - t0 < EARLY_FLOOD + 60]  # fmt: skip

    warm_k = _alerts(warm, "kitsune.")
    assert _entities(warm_k) == {ATTACKER, UPLOADER}
    assert early_floods(warm) and not early_floods(cold)
    assert all(a["entity"] == ATTACKER for a in early_floods(warm))
    assert "learnt typical" in early_floods(warm)[0]["explanation"]
    # The model's incidents name the detectors' titles.
    titles = " ".join(i["incident"]["title"] for i in warm["incidents"])
    assert "packets unlike the learnt traffic" in titles


def test_analyze_with_a_model_does_not_write_it(files: dict[str, Path], model: Path) -> None:
    before = _digest(model)
    _analyze(files, "benign", "--model", model)
    assert _digest(model) == before


def test_update_model_round_trip(files: dict[str, Path], model: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    m0 = read_manifest(copy)
    _analyze(files, "attack", "--model", copy, "--update-model")
    m1 = read_manifest(copy)  # checks every file against the new manifest
    assert m1["updates"] == 1 and m1["created"] == m0["created"]
    assert [i["name"] for i in m1["inputs"]] == ["benign.pcap", "attack.pcap"]
    assert m1["counts"]["packets"] > m0["counts"]["packets"]
    assert m1["counts"]["alerts_while_learning"] > 0
    assert m1["detectors"]["kitsune"]["learnt"] > m0["detectors"]["kitsune"]["learnt"]
    assert m1["detectors"]["anomaly"]["learnt"] > m0["detectors"]["anomaly"]["learnt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
    again = _analyze(files, "attack", "--model", copy)  # the updated model loads and runs
    assert _alerts(again, "kitsune.")
    res = _cli("analyze", files["benign"], "--no-store", "--update-model")
    assert res.exit_code == 2 and "--update-model needs --model" in res.output


def _refused(files: dict[str, Path], model: Path, *needles: str) -> None:
    res = _cli("analyze", files["benign"], "--no-store", "--json", "--no-progress",
               "--model", model)  # fmt: skip
    assert res.exit_code == EXIT_MODEL == 6, res.output
    for n in needles:
        assert n in res.output, (n, res.output)


def test_damaged_models_are_refused(files: dict[str, Path], model: Path, tmp_path: Path) -> None:
    def fresh(name: str) -> Path:
        d = tmp_path / name
        shutil.copytree(model, d)
        return d

    d = fresh("truncated")
    npz = d / "kitsune.npz"
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    _refused(files, d, "kitsune.npz", "truncated or edited")

    d = fresh("edited")
    p = d / "scan.json"
    p.write_text(p.read_text().replace('"version": 1', '"version": 7'))  # same size
    _refused(files, d, "scan.json", "SHA-256")

    d = fresh("missing")
    (d / "dos.json").unlink()
    _refused(files, d, "dos.json", "missing")

    d = fresh("format")
    m = json.loads((d / MANIFEST).read_text())
    (d / MANIFEST).write_text(json.dumps(m | {"format_version": FORMAT_VERSION + 1}))
    _refused(files, d, MANIFEST, f"format version {FORMAT_VERSION + 1}", "tapetum learn")

    # A consistent model (hashes updated) whose scan state is of another version.
    d = fresh("version")
    p = d / "scan.json"
    p.write_text(p.read_text().replace('"version": 1', '"version": 99'))
    m = json.loads((d / MANIFEST).read_text())
    m["files"]["scan.json"] = {"bytes": p.stat().st_size,
                               "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}  # fmt: skip
    m["detectors"]["scan"]["state_version"] = 99
    (d / MANIFEST).write_text(json.dumps(m))
    _refused(files, d, "scan.json", "scan state version 99", "version 1")

    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(files, empty, "manifest.json", "not a model")


def test_attacks_while_learning_are_not_learnt(files: dict[str, Path], tmp_path: Path) -> None:
    """The learning capture holds a flood after kitsune's grace period: it is reported while
    learning and kept out of the model, so the same flood in later traffic is still found."""
    out = tmp_path / "dirty-model"
    res = _cli("learn", files["dirty"], "--out", out, "--config", files["config"], "--json",
               "--no-progress")  # fmt: skip
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    assert m["counts"]["alerts_while_learning"] >= 1
    state = json.loads((out / "kitsune.json").read_text())
    assert state["counts"]["anomalous"] >= 1800  # the flood's packets, never learnt
    warm = _analyze(files, "attack", "--model", out)
    floods = [a for a in _alerts(warm, "kitsune.") if "198.51.100.7" in a["explanation"]]
    assert floods and all(a["entity"] == ATTACKER for a in floods)
