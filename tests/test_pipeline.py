"""Pipeline semantics across files and clocks."""

from __future__ import annotations

from pathlib import Path

from tapetum.cli import demo_capture
from tapetum.config import Config
from tapetum.pipeline import Pipeline
from tapetum.testing import CaptureBuilder, Host, dns_lookup, http_session
from tests.conftest import data_path


def run(*paths: Path | str) -> Pipeline:
    pipe = Pipeline(Config())
    pipe.run([str(p) for p in paths])
    return pipe


def test_files_given_out_of_time_order_are_separate_captures() -> None:
    ssh = data_path("zeek", "ssh_basic", "ssh.pcap")
    wiki = data_path("zeek", "wikipedia", "wikipedia.pcap")  # recorded years before ssh.pcap
    single = run(ssh).summary.flows
    twice = run(ssh, ssh)
    assert twice.summary.flows == 2 * single == 50
    assert twice.clock_jumps == 1
    both = run(ssh, wiki)  # wikipedia.pcap goes back in time: a jump
    assert both.summary.flows == 25 + 34 and both.clock_jumps == 1
    forward = run(wiki, ssh)  # forward in time: one stream, no jump
    assert forward.summary.flows == 25 + 34 and forward.clock_jumps == 0


def test_same_capture_twice_keeps_alert_ids_unique() -> None:
    demo = demo_capture()
    pipe = run(demo, demo)
    ids = [a.alert_id for a in pipe.summary.alerts]
    once = len(run(demo).summary.alerts)
    assert once >= 3 and len(ids) == 2 * once and len(set(ids)) == len(ids)
    assert pipe.summary.flows == 2 * run(demo).summary.flows


def test_rotated_files_continue_flows(tmp_path: Path) -> None:
    """A capture split in two files (like tcpdump -C) gives the same flows as the whole."""
    b = CaptureBuilder(seed=5)
    c, s, r = Host("10.0.0.5"), Host("192.0.2.80"), Host("10.0.0.2")
    for k in range(20):
        b.add(1.0 + k * 3, http_session, c, s, host="example.org", requests=3)
        b.add(1.5 + k * 3, dns_lookup, c, r, f"n{k}.example.org")
    whole = tmp_path / "whole.pcap"
    b.write(whole)
    raw = whole.read_bytes()
    # Split at a record boundary roughly in the middle, keeping the global header on both.
    import struct

    pos, half = 24, len(raw) // 2
    while pos < half:
        pos += 16 + struct.unpack_from("<I", raw, pos + 8)[0]
    (tmp_path / "a.pcap").write_bytes(raw[:pos])
    (tmp_path / "b.pcap").write_bytes(raw[:24] + raw[pos:])
    one = run(whole)
    two = run(tmp_path / "a.pcap", tmp_path / "b.pcap")
    assert two.clock_jumps == 0
    assert two.summary.flows == one.summary.flows
    assert two.summary.packets == one.summary.packets
    assert dict(two.summary.events) == dict(one.summary.events)
