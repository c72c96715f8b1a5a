"""Golden test: Tapetum's flows against the flows NFStream expects from its test captures.

NFStream's results files (../shared/data/nfstream/results/<pcap>) list per flow only id, packets,
bytes and the nDPI application, so the comparison is per pcap: the number of flows, total packets
and bytes, the multiset of per-flow (packets, bytes), and the list in NFStream's id (expiry) order.
The metering is `MeterConfig.nfstream()` with `CaptureReader(tunnels=TUNNELS_ALL)`; how those
settings were derived from NFStream's source is in docs/flow-accuracy.md, and the comparison code
is scripts/nfstream_report.py (which also regenerates the doc's tables and the expected lists).

The expected lists in nfstream_agreeing.json may only grow: a pcap that agreed must keep agreeing.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tapetum.flows.meter import MeterConfig

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / ".." / "shared" / "data" / "nfstream"
EXPECTED = json.loads((Path(__file__).with_name("nfstream_agreeing.json")).read_text())


def _report() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "nfstream_report", REPO / "scripts" / "nfstream_report.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results() -> dict[str, object]:
    if not (DATA / "pcaps").is_dir():
        pytest.skip(f"NFStream test data not available at {DATA.resolve()}")
    report = _report()
    return {c.name: c for c in report.compare_all(data=DATA.resolve())}


def test_agreement_does_not_shrink(results: dict[str, object]) -> None:
    agree = {name for name, c in results.items() if c.agree}  # type: ignore[attr-defined]
    lost = sorted(set(EXPECTED["agree"]) - agree)
    assert not lost, f"pcaps that agreed with NFStream no longer do: {lost}"
    assert len(agree) >= 150


def test_per_flow_multiset_and_order_do_not_shrink(results: dict[str, object]) -> None:
    multiset = {n for n, c in results.items() if c.multiset_equal}  # type: ignore[attr-defined]
    ordered = {n for n, c in results.items() if c.order_equal}  # type: ignore[attr-defined]
    assert not sorted(set(EXPECTED["multiset_equal"]) - multiset)
    assert not sorted(set(EXPECTED["order_equal"]) - ordered)


def test_every_disagreement_has_a_recorded_cause(results: dict[str, object]) -> None:
    causes = _report().CAUSES
    unexplained = sorted(n for n, c in results.items() if not c.agree and n not in causes)  # type: ignore[attr-defined]
    assert not unexplained, f"disagreeing pcaps without a cause in CAUSES: {unexplained}"


def test_nfstream_config_leaves_defaults_alone() -> None:
    default = MeterConfig()
    assert default.icmp_type_in_key and default.meter_later_fragments
    assert default.tcp_close_ends_flow and not default.timeouts_in_ms
    assert (default.tcp_idle_s, default.udp_idle_s, default.active_s) == (300.0, 60.0, 0.0)
    nf = MeterConfig.nfstream()
    assert (nf.tcp_idle_s, nf.udp_idle_s, nf.icmp_idle_s, nf.other_idle_s) == (120.0,) * 4
    assert nf.active_s == 1800.0
