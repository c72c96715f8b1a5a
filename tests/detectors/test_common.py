"""The helpers the detectors share: data-time windows, episodes, bounded tables, internal
networks, learnt-state checks, column row sets, the Public Suffix Lists."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tapetum.config import Config
from tapetum.detectors.common import (
    BoundedDict,
    InternalNetworks,
    check_state,
    is_internal,
    reading_state,
)
from tapetum.detectors.windows import NO_TIME, DataTimeWindows, Episodes
from tapetum.errors import ModelError
from tapetum.features import columns
from tapetum.features.domain import psl, registered_domain
from tapetum.features.flowstats import HostWindows
from tapetum.registry import build_detectors
from tests.detectors.helpers import stream_of

S = 1_000_000_000


def test_windows_complete_by_watermark_and_lag() -> None:
    w: DataTimeWindows[list[int]] = DataTimeWindows(10 * S, 5 * S, list)
    starts = np.array([1, 12, 13, 25], dtype=np.int64) * S
    for acc, m in w.split(starts):
        acc.extend(np.flatnonzero(m).tolist())
    assert w.open == {0: [0], 1: [1, 2], 2: [3]}
    assert w.complete() == []  # nothing seen yet
    w.advance(15 * S)
    assert w.complete() == [] and w.complete(16 * S) == [0]  # end 10 s + lag 5 s < 16 s
    assert w.complete(26 * S) == [0, 1] and w.complete(26 * S, lag_ns=0) == [0, 1]
    assert w.complete(21 * S, lag_ns=0) == [0, 1] and w.complete(21 * S) == [0]
    assert w.pop(0) == [0] and w.watermark == 15 * S
    assert w.flush() == [1, 2] and w.watermark == NO_TIME  # a new stream may start


@pytest.mark.parametrize("name", ["scan", "dnstunnel", "dga", "bruteforce", "exfil"])
def test_a_restored_detector_reports_with_the_lag_set_after_restoring(
    name: str, tmp_path: Path
) -> None:
    """`learning` restores a detector from its state and then sets `lag_ns` from the running
    meter: polling must use that lag, as a detector built with it does."""
    path, _ = importlib.import_module(f"tests.detectors.scenarios.{name}").build(tmp_path)
    steps = stream_of(path)
    cfg = Config()

    def polled(det: Any, lag_ns: int) -> list[Any]:
        """Alerts of one poll a window (the longest) after the data ends."""
        det.lag_ns = lag_ns
        for s in steps:
            det.observe_events(s.events)
            if s.flows is not None:
                det.observe(s.flows)
        end = max(int(s.flows.num["end_ns"].max()) for s in steps if s.flows is not None)
        window = max(getattr(det, "windows_ns", [getattr(det, "window_ns", 0)]))
        return list(det.poll(end + window + S))

    (fresh,) = build_detectors(cfg, [name])
    state, section = fresh.state(), getattr(cfg.detectors, name)
    built = polled(build_detectors(cfg, [name])[0], 0)
    restored = polled(type(fresh).from_state(state, section), 0)  # type: ignore[attr-defined]
    held = polled(type(fresh).from_state(state, section), 10**18)  # type: ignore[attr-defined]
    assert restored == built and restored and held == []


def test_episodes_due_once_and_end_after_a_gap() -> None:
    eps = Episodes(window_s=10, gap_s=30, max_open=1)
    eps.see(("h", "sig", "k"), 0, "first")
    eps.see(("h", "sig", "k"), 2 * S, "second")
    eps.see(("other", "sig", "k"), 3 * S, "dropped")  # over max_open
    eps.advance(5 * S)
    assert eps.due() == [] and eps.dropped == 1
    ((key, ep),) = eps.due(10 * S)
    assert key == ("h", "sig", "k") and ep.count == 2 and ep.data == "first"
    eps.see(("h", "sig", "k"), 20 * S, "repeat")
    assert eps.due(21 * S) == [] and eps.repeats == 1
    eps.see(("h", "sig", "k"), 60 * S, "new episode")  # quiet for longer than the gap
    assert eps.flush()[0][1].data == "new episode" and eps.watermark == NO_TIME


def test_bounded_dict_keeps_the_newest_and_counts_what_it_dropped() -> None:
    d: BoundedDict[str, int] = BoundedDict(3)
    for k, v in (("a", 1), ("b", 2), ("c", 3), ("d", 4)):
        d[k] = v
    assert len(d) == 4  # trimming is explicit
    d.touch("a", 10)  # "a" becomes the newest
    assert d.trim() == 1 and list(d) == ["c", "d", "a"] and d["a"] == 10
    assert d.trim() == 0
    d.update(x=1, y=2)
    assert d.trim() == 2 and list(d) == ["a", "x", "y"]


def test_internal_networks() -> None:
    default = InternalNetworks()
    assert "10.1.2.3" in default and "fe80::1" in default and "127.0.0.1" in default
    assert "8.8.8.8" not in default and "not an address" not in default and 5 not in default
    assert is_internal("192.168.0.1") and not is_internal("1.1.1.1")
    extra = InternalNetworks(["100.64.0.0/10", "2001:db8::/32"])
    assert "100.64.1.1" in extra and "2001:db8::1" in extra and "10.0.0.1" in extra
    only = InternalNetworks(["100.64.0.0/10"], private=False)
    assert "100.64.1.1" in only and "10.0.0.1" not in only and "::ffff:100.64.1.1" not in only


def test_state_checks_name_the_detector() -> None:
    check_state({"detector": "scan", "version": 1}, "scan", 1)
    with pytest.raises(ModelError, match=r"scan detector state .* version 2.*learn again"):
        check_state({"detector": "scan", "version": 2}, "scan", 1)
    with pytest.raises(ModelError, match="'dga'"):
        check_state({"detector": "dga", "version": 1}, "scan", 1)
    with pytest.raises(ModelError, match="dos detector state is damaged"), reading_state("dos"):
        {"baseline": 1}["baseline"].items()  # type: ignore[attr-defined]


def test_column_rows_take_and_concat() -> None:
    hw = HostWindows(
        ["a", "b", "c"], np.arange(3), np.arange(3) * 10, np.arange(3) * 20,
        np.arange(12.0).reshape(3, 4), ["p", "", "q"], np.array([1.0, 0.0, 2.0]),
    )  # fmt: skip
    by_mask = columns.take(hw, np.array([True, False, True]))
    by_index = hw.take(np.array([0, 2]))
    assert by_mask.host == by_index.host == ["a", "c"] and by_index.top_peer == ["p", "q"]
    assert by_index.values.tolist() == [[0, 1, 2, 3], [8, 9, 10, 11]]
    assert hw.take(np.zeros(0, dtype=np.int64)).host == []
    first, inv = columns.group(np.array([[2, 1], [1, 5], [2, 1]], dtype=np.uint64))
    assert first.tolist() == [1, 0] and inv.tolist() == [1, 0, 1]


def test_public_suffix_lists_are_shared_and_differ_in_private_suffixes() -> None:
    assert psl() is psl() and psl(only_icann=True) is psl(only_icann=True)
    assert registered_domain("www.bbc.co.uk") == "bbc.co.uk"
    assert psl().privatesuffix("me.github.io") == "me.github.io"  # github.io: private section
    assert psl(only_icann=True).privatesuffix("me.github.io") == "github.io"
