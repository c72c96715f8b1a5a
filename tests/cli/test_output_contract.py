"""The EVE-shaped output contract: every event the pipeline writes matches the JSON Schema,
and the schema rejects events that break the contract (so the check can fail)."""

from __future__ import annotations

import copy
import io
import json
import re
from typing import Any

import jsonschema
import pytest

from tapetum.cli import demo_capture
from tapetum.config import Config
from tapetum.pipeline import Pipeline
from tapetum.sinks.jsonl import JsonlSink
from tests.conftest import SCHEMA


@pytest.fixture(scope="module")
def demo_events() -> list[dict[str, Any]]:
    buf = io.BytesIO()
    sink = JsonlSink(buf, flow_sequences=True)
    Pipeline(Config(), [sink]).run([str(demo_capture())])
    sink.flush()
    return [json.loads(line) for line in buf.getvalue().splitlines()]


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_every_demo_event_is_valid(
    demo_events: list[dict[str, Any]], validator: jsonschema.Draft202012Validator
) -> None:
    kinds = {e["event_type"] for e in demo_events}
    assert kinds == {"flow", "dns", "tls", "http", "ssh", "alert", "incident"}
    for e in demo_events:
        errors = list(validator.iter_errors(e))
        assert not errors, (e, [err.message for err in errors])


def test_alert_and_incident_fields(demo_events: list[dict[str, Any]]) -> None:
    alerts = [e for e in demo_events if e["event_type"] == "alert"]
    incidents = [e for e in demo_events if e["event_type"] == "incident"]
    assert alerts and incidents
    technique = re.compile(r"^T\d{4}(\.\d{3})?$")
    for a in alerts:
        al = a["alert"]
        assert al["severity"] in (1, 2, 3)
        assert al["explanation"] and al["category"]
        assert all(technique.match(t) for t in al["metadata"]["mitre_technique_id"])
        if al["signature"].startswith("scan."):
            assert al["metadata"]["mitre_technique_id"] in (["T1046"], ["T1018"])
            assert "normal for this host" in al["explanation"]
    # Every alert belongs to exactly one incident.
    grouped = [i for e in incidents for i in e["incident"]["alert_ids"]]
    assert sorted(grouped) == sorted(a["alert"]["alert_id"] for a in alerts)
    scan = [e for e in incidents if e["incident"]["entity"] == "10.20.0.66"]
    assert len(scan) == 1
    flows = [e for e in demo_events if e["event_type"] == "flow"]
    assert all(len(f["flow"]["first_packets"]["size"]) <= 32 for f in flows)
    # Application events point at real flows.
    flow_ids = {f["flow_id"] for f in flows}
    for e in demo_events:
        if e["event_type"] in ("dns", "tls", "http", "ssh"):
            assert e["flow_id"] in flow_ids


BREAKAGES = [
    ("flow without packets", "flow", lambda e: e["flow"].pop("pkts_toserver")),
    ("bad conn_state", "flow", lambda e: e["flow"].update(conn_state="XX")),
    ("bad community_id", "flow", lambda e: e.update(community_id="abc")),
    ("port out of range", "dns", lambda e: e.update(src_port=70000)),
    ("unknown top-level field", "tls", lambda e: e.update(extra=1)),
    ("severity 4", "alert", lambda e: e["alert"].update(severity=4)),
    ("no ATT&CK technique", "alert", lambda e: e["alert"]["metadata"].pop("mitre_technique_id")),
    ("no explanation", "alert", lambda e: e["alert"].pop("explanation")),
    ("missing nested object", "http", lambda e: e.pop("http")),
    ("bad timestamp", "ssh", lambda e: e.update(timestamp="yesterday")),
]


@pytest.mark.parametrize(("what", "kind", "breakage"), BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_schema_rejects_broken_events(
    what: str,
    kind: str,
    breakage: Any,
    demo_events: list[dict[str, Any]],
    validator: jsonschema.Draft202012Validator,
) -> None:
    event = copy.deepcopy(next(e for e in demo_events if e["event_type"] == kind))
    assert validator.is_valid(event)
    breakage(event)
    assert not validator.is_valid(event), what
