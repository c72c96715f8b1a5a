"""Record sources (logs of other sensors) join the pipeline after the meter: flows built from
records look like metered flows to detectors, and auth events reach detectors and sinks."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import jsonschema
import pytest

from tapetum.config import Config
from tapetum.detectors.scan import ScanDetector
from tapetum.flows.build import addr_halves, flow_batch, state_bits_from_flags
from tapetum.flows.table import ST_ESTABLISHED, ST_ORIG_SYN, ST_RESP_SYNACK
from tapetum.pipeline import Pipeline
from tapetum.records import AuthEvent
from tapetum.sinks.jsonl import JsonlSink
from tapetum.sources.base import RecordBatch
from tests.conftest import SCHEMA

T0 = 1_760_000_000 * 10**9


def _probes(n: int) -> RecordBatch:
    """A horizontal scan as Zeek would log it: S0 connections to port 445 on n hosts."""
    flows = flow_batch(
        start_ns=[T0 + k * 10**7 for k in range(n)],
        end_ns=[T0 + k * 10**7 for k in range(n)],
        proto=[6] * n,
        src_ip=["10.0.0.66"] * n,
        dest_ip=[f"10.0.1.{k}" for k in range(1, n + 1)],
        src_port=[40000 + k for k in range(n)],
        dest_port=[445] * n,
        pkts_toserver=[1] * n,
        pkts_toclient=[0] * n,
        bytes_toserver=[44] * n,
        bytes_toclient=[0] * n,
        payload_bytes_toserver=[0] * n,
        payload_bytes_toclient=[0] * n,
        conn_state=["S0"] * n,
        uid=[f"C{k}" for k in range(n)],
    )
    return RecordBatch(flows=flows, records=n)


class _AuthRecorder(ScanDetector):
    def __init__(self) -> None:
        super().__init__()
        self.auth: list[AuthEvent] = []

    def observe_auth(self, events: Sequence[AuthEvent]) -> None:
        self.auth.extend(events)


def test_record_flows_reach_detectors_and_auth_reaches_sinks(tmp_path: Path) -> None:
    out = io.BytesIO()
    det = _AuthRecorder()
    pipe = Pipeline(Config(), sinks=[JsonlSink(out)], detectors=[det])
    pipe.process_records(_probes(40))
    fail = AuthEvent(ts_ns=T0 + 5 * 10**9, outcome="failure", service="ssh", source="auth.log",
                     user="root", src_ip="203.0.113.7", src_port=50022, host="web1",
                     method="password", reason="invalid user")  # fmt: skip
    pipe.process_records(RecordBatch(auth=[fail], records=1))
    summary = pipe.finish()
    assert [a.signature for a in summary.alerts] == ["scan.horizontal"]
    assert summary.alerts[0].observed["distinct_hosts"] == 40
    assert summary.flows == 40 and summary.first_ns == T0
    assert det.auth == [fail]
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    auth = [e for e in events if e["event_type"] == "auth"]
    assert auth and auth[0]["auth"]["user"] == "root" and auth[0]["src_ip"] == "203.0.113.7"
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    for e in events:
        assert not list(validator.iter_errors(e)), e


def test_flow_records_state_and_addresses() -> None:
    assert addr_halves("10.0.0.1") == (0, (0xFFFF << 32) | 0x0A000001)
    assert addr_halves("2001:db8::1")[0] == 0x20010DB800000000
    with pytest.raises(ValueError):
        addr_halves("10.0.0.300")
    bits = state_bits_from_flags(0x02 | 0x10, 0x02 | 0x10)  # SYN,ACK each way
    assert bits & ST_ORIG_SYN and bits & ST_RESP_SYNACK and bits & ST_ESTABLISHED
    fb = _probes(3).flows
    assert fb is not None and len(fb) == 3 and fb.community_id[0].startswith("1:")
    assert len(set(fb.num["flow_id"].tolist())) == 3
