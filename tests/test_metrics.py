"""Prometheus text of the demo run's counters, read back with the reference parser."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tapetum.cli import demo_capture
from tapetum.metrics import escape_label, render, summary_counters
from tapetum.pipeline import Pipeline


def families(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_demo_summary() -> None:
    summary = Pipeline().run([str(demo_capture())])
    text = render(summary, {"run": "demo"})
    fams = families(text)
    assert fams["tapetum_packets_total"] == {(("run", "demo"),): summary.packets}
    assert fams["tapetum_flows_total"][(("run", "demo"),)] == summary.flows == 1164
    assert fams["tapetum_flows_evicted_total"][(("run", "demo"),)] == 0
    by_sig = {dict(k)["signature"]: v for k, v in fams["tapetum_alerts_total"].items()}
    assert by_sig == Counter(a.signature for a in summary.alerts)
    assert by_sig["scan.vertical"] == 1 and len(by_sig) == 5
    assert sum(fams["tapetum_incidents_total"].values()) == len(summary.incidents)
    # Every family has HELP and TYPE lines, once.
    for name in ("tapetum_packets_total", "tapetum_alerts_total"):
        assert text.count(f"# HELP {name} ") == 1 and text.count(f"# TYPE {name} counter") == 1
    assert summary_counters(summary)["packets"] == summary.packets


def test_watch_counters_and_escaping() -> None:
    counters = {
        "interface": 'eth"0\\\n',
        "capture": "tpacket_v3",
        "uptime_s": 12.5,
        "packets": 1000,
        "kernel_drops": 3,
        "evicted_flows": 2,
        "active_flows": 40,
        "cpu_s": 1.25,
        "max_rss_mib": 100.0,
        "some_new_counter": 9,
        "flag": True,
    }
    text = render(counters, {"interface": counters["interface"]})
    fams = families(text)
    lab = (("interface", 'eth"0\\\n'),)
    assert fams["tapetum_kernel_drops_total"] == {lab: 3}
    assert fams["tapetum_flows_evicted_total"] == {lab: 2}
    assert fams["tapetum_flows_active"] == {lab: 40}
    assert fams["tapetum_max_rss_bytes"] == {lab: 100 * 2**20}
    assert fams["tapetum_uptime_seconds"] == {lab: 12.5}
    assert fams["tapetum_some_new_counter"] == {lab: 9}
    assert "tapetum_flag" not in text and "tpacket_v3" not in text
    assert 'interface="eth\\"0\\\\\\n"' in text
    assert "# TYPE tapetum_flows_active gauge" in text
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_special_values() -> None:
    text = render({"x": float("nan"), "y": float("inf"), "z": 0.1})
    fams = families(text)
    assert fams["tapetum_y"][()] == float("inf") and fams["tapetum_z"][()] == pytest.approx(0.1)
    assert "tapetum_x NaN" in text


def test_watch_writes_the_same_text(tmp_path: Path) -> None:
    """`tapetum watch --metrics FILE` writes this module's text (atomically, via a .tmp)."""
    from tapetum.commands.watch import Watcher

    w = Watcher.__new__(Watcher)  # only the metrics writer is exercised here
    w.metrics_path = tmp_path / "tapetum.prom"
    counters = {"interface": "eth0", "packets": 5, "kernel_drops": 1, "evicted_flows": 0}
    w.write_metrics(counters)
    text = w.metrics_path.read_text()
    assert text == render(counters, {"interface": "eth0"})
    assert families(text)["tapetum_kernel_drops_total"] == {(("interface", "eth0"),): 1}
    assert not (tmp_path / "tapetum.prom.tmp").exists()
