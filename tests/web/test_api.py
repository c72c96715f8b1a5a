"""The REST API under a real uvicorn on loopback, over a store from `tapetum analyze --demo`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tapetum.sinks.duckdb import connect
from tests.web.conftest import HOSTILE_ID, HOSTILE_TEXT, Client

SCAN_ENTITY = "10.20.0.66"  # the demo's scanner: one discovery incident with three alerts

GET_ENDPOINTS = [
    "/api/incidents",
    "/api/incidents/x",
    "/api/entities/10.20.0.66",
    "/api/entities/10.20.0.66/risk",
    "/api/flows",
    "/api/dns",
    "/api/tls",
    "/api/detectors",
    "/api/stats/timeline",
    "/api/stats/overview",
    "/metrics",
    "/openapi.json",
]
POST_ENDPOINTS = [
    "/api/incidents/x/verdict",
    "/api/actions/x/approve",
    "/api/actions/x/revert",
]
INJECTIONS = [
    "' OR 1=1 --",
    "<script>alert(1)</script>",
    "%",
    "_",
    '"; DROP TABLE incidents; --',
    "10.20.0.66' OR '1'='1",
]


#: How each text filter matches: "eq" (equal to one of the columns) or "in" (case-insensitive
#: substring of one of them); the tables' column names.
MATCHES = {
    "ip": ("eq", ["src_ip", "dest_ip"]),
    "src_ip": ("eq", ["src_ip"]),
    "dest_ip": ("eq", ["dest_ip"]),
    "stage": ("eq", ["stage"]),
    "run_id": ("eq", ["run_id"]),
    "proto": ("eq", ["proto"]),
    "service": ("eq", ["service"]),
    "conn_state": ("eq", ["conn_state"]),
    "community_id": ("eq", ["community_id"]),
    "qtype": ("eq", ["qtype"]),
    "rcode": ("eq", ["rcode"]),
    "ja3": ("eq", ["ja3"]),
    "ja4": ("eq", ["ja4"]),
    "entity": ("in", ["entity"]),
    "query": ("in", ["query"]),
    "sni": ("in", ["sni"]),
    "subject": ("in", ["subject"]),
}
TABLES = {"/api/incidents": "incidents", "/api/flows": "flows", "/api/dns": "dns",
          "/api/tls": "tls"}  # fmt: skip


def literal_count(store: Path, path: str, name: str, value: str) -> int:
    """Rows a literal match of `value` on filter `name` finds, computed in Python."""
    con = connect(store)  # the server's own configuration (read-write), so both can be open
    try:
        return _literal_count(con, path, name, value)
    finally:
        con.close()


def _literal_count(con: Any, path: str, name: str, value: str) -> int:
    table = TABLES[path]
    if name == "q":
        rows = con.execute(
            "SELECT title, summary, entity, src_ip, signatures, mitre_technique_id FROM incidents"
        ).fetchall()
        texts = [
            " ".join(" ".join(x) if isinstance(x, list) else str(x) for x in r if x is not None)
            for r in rows
        ]
        return sum(value.lower() in t.lower() for t in texts)
    how, cols = MATCHES[name]
    rows = con.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall()
    if how == "eq":
        return sum(value in r for r in rows)
    return sum(any(c is not None and value.lower() in c.lower() for c in r) for r in rows)


def scan_incident(server: Client, token: str) -> dict[str, Any]:
    data: Any = server.json(f"/api/incidents?entity={SCAN_ENTITY}", token)
    assert data["total"] == 1
    return dict(data["items"][0])


def test_health_needs_no_token(server: Client) -> None:
    status, _, body = server.call("GET", "/api/health")
    assert status == 200
    assert json.loads(body)["status"] == "ok"


@pytest.mark.parametrize("path", GET_ENDPOINTS)
def test_get_needs_a_valid_token(server: Client, token: str, path: str) -> None:
    for bad in (None, "", "tpt_wrong", token + "x", "x" * 500):
        status, headers, _ = server.call("GET", path, token=bad)
        assert status == 401, (path, bad)
        assert headers["www-authenticate"] == "Bearer"
    status, _, _ = server.call("GET", path, headers={"Authorization": f"Basic {token}"})
    assert status == 401
    status, _, body = server.call("GET", path, token=token)
    assert status in (200, 404), (path, status, body[:200])


@pytest.mark.parametrize("path", POST_ENDPOINTS)
def test_post_needs_a_valid_token(server: Client, token: str, path: str) -> None:
    status, _, _ = server.call("POST", path, json_body={"verdict": "fp"})
    assert status == 401
    status, _, _ = server.call("POST", path, token="tpt_wrong", json_body={"verdict": "fp"})
    assert status == 401


def test_revoked_token_is_refused(server: Client, store: Path, token: str) -> None:
    from tapetum.web import tokens

    assert server.call("GET", "/api/incidents", token=token)[0] == 200
    con = connect(store)
    try:
        (row,) = tokens.list_tokens(con)
        # Only the hash is kept.
        stored = con.execute("SELECT * FROM api_tokens").fetchall()
        assert token not in json.dumps(stored, default=str)
        assert tokens.revoke_token(con, row["token_id"])
    finally:
        con.close()
    assert server.call("GET", "/api/incidents", token=token)[0] == 401


def test_incident_list_filters_and_paging(server: Client, token: str) -> None:
    data: Any = server.json("/api/incidents", token)
    assert data["total"] == 4  # the demo's three and the hostile one
    ids = {i["incident_id"] for i in data["items"]}
    assert HOSTILE_ID in ids
    assert server.json("/api/incidents?severity=2", token)["total"] == 2  # type: ignore[index]
    data = server.json("/api/incidents?stage=discovery", token)
    assert {i["entity"] for i in data["items"]} == {SCAN_ENTITY, HOSTILE_TEXT}
    data = server.json("/api/incidents?q=self-signed", token)
    assert [i["entity"] for i in data["items"]] == ["10.20.0.106"]
    data = server.json("/api/incidents?q=T1046&sort=entity&order=asc", token)
    assert [i["entity"] for i in data["items"]] == [SCAN_ENTITY, HOSTILE_TEXT]
    page1: Any = server.json("/api/incidents?limit=2&sort=entity&order=asc", token)
    page2: Any = server.json("/api/incidents?limit=2&offset=2&sort=entity&order=asc", token)
    got = [i["entity"] for i in page1["items"] + page2["items"]]
    assert got == sorted(got) and len(set(got)) == 4
    late: Any = server.json("/api/incidents?since=2026-03-02T09:17:00Z", token)
    early: Any = server.json("/api/incidents?until=2026-03-02T09:17:00Z", token)
    assert late["total"] >= 1 and early["total"] >= 1
    assert server.json("/api/incidents?since=2030-01-01", token)["total"] == 0  # type: ignore[index]


@pytest.mark.parametrize(
    "query",
    ["severity=0", "severity=high", "limit=0", "limit=100000", "offset=-1", "sort=title%3B%20DROP",
     "order=sideways", "since=yesterday", "until=2026-13-45"],
)  # fmt: skip
def test_bad_filters_are_422(server: Client, token: str, query: str) -> None:
    status, _, body = server.call("GET", f"/api/incidents?{query}", token=token)
    assert status == 422, body


@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_strings_in_every_filter(
    server: Client, token: str, store: Path, value: str
) -> None:
    from urllib.parse import quote

    filters = {
        "/api/incidents": ["stage", "entity", "q", "run_id"],
        "/api/flows": ["ip", "src_ip", "dest_ip", "proto", "service", "conn_state",
                       "community_id"],
        "/api/dns": ["query", "qtype", "rcode", "ip", "src_ip", "dest_ip", "community_id"],
        "/api/tls": ["sni", "ja3", "ja4", "subject", "ip", "src_ip", "dest_ip", "community_id"],
    }  # fmt: skip
    for path, names in filters.items():
        for name in names:
            status, headers, body = server.call("GET", f"{path}?{name}={quote(value)}", token=token)
            assert status == 200, (path, name, body[:200])
            assert headers["content-type"] == "application/json"
            # The value is matched as a literal: the count is what Python finds.
            expected = literal_count(store, path, name, value)
            assert json.loads(body)["total"] == expected, (path, name)
        for name in ("since", "until"):
            status = server.call("GET", f"{path}?{name}={quote(value)}", token=token)[0]
            assert status == 422
    for path in ("/api/incidents/", "/api/entities/"):
        status, _, _ = server.call("GET", path + quote(value, safe=""), token=token)
        assert status in (200, 404)
    # Nothing was changed or dropped.
    assert literal_count(store, "/api/incidents", "entity", "") == 4


def test_hostile_text_is_matched_literally_and_returned_as_json(server: Client, token: str) -> None:
    from urllib.parse import quote

    data: Any = server.json(f"/api/incidents?entity={quote(HOSTILE_TEXT)}", token)
    assert [i["incident_id"] for i in data["items"]] == [HOSTILE_ID]
    inc: Any = server.json(f"/api/incidents/{HOSTILE_ID}", token)
    assert inc["title"] == HOSTILE_TEXT
    # The HTML shell names the id only through the template's escaping.
    status, _, body = server.call("GET", "/incidents/" + quote("<b onclick=x()>", safe=""))
    assert status == 200
    assert b"<b onclick" not in body
    assert b"&lt;b onclick=x()&gt;" in body


def test_incident_detail_has_timeline_evidence_and_dry_run(server: Client, token: str) -> None:
    inc_id = scan_incident(server, token)["incident_id"]
    inc: Any = server.json(f"/api/incidents/{inc_id}", token)
    sigs = [a["signature"] for a in inc["alerts"]]
    assert sorted(sigs) == ["scan.arp_sweep", "scan.horizontal", "scan.vertical"]
    firsts = [a["first_seen"] for a in inc["alerts"]]
    assert firsts == sorted(firsts)
    assert all(a["explanation"] for a in inc["alerts"])
    # The scanner's flows in the incident's span are evidence (1,000 ports probed).
    assert inc["evidence_counts"]["flows"] > 1000
    assert len(inc["evidence"]["flows"]) == 200
    assert all(SCAN_ENTITY in (f["src_ip"], f["dest_ip"]) for f in inc["evidence"]["flows"])
    planned = inc["response"]["planned"]
    blocks = [a for a in planned if a["kind"] == "block_ip"]
    assert blocks and blocks[0]["description"].startswith("would have blocked 10.20.0.66")
    assert {a["state"] for a in planned} == {"planned", "pending-approval"}


def test_tls_incident_evidence_is_linked_by_flow(server: Client, token: str) -> None:
    data: Any = server.json("/api/incidents?entity=10.20.0.106", token)
    inc: Any = server.json(f"/api/incidents/{data['items'][0]['incident_id']}", token)
    (alert,) = inc["alerts"]
    linked = [t for t in inc["evidence"]["tls"] if t["linked"]]
    assert [t["flow_id"] for t in linked] == [alert["flow_id"]]
    assert linked[0]["self_signed"] is True


def test_unknown_incident_is_404(server: Client, token: str) -> None:
    assert server.call("GET", "/api/incidents/nope", token=token)[0] == 404
    status, _, body = server.call(
        "POST", "/api/incidents/nope/verdict", token=token, json_body={"verdict": "fp"}
    )
    assert status == 404, body


def test_verdict_is_recorded_with_suppression(server: Client, token: str, store: Path) -> None:
    inc_id = scan_incident(server, token)["incident_id"]
    status, _, body = server.call(
        "POST",
        f"/api/incidents/{inc_id}/verdict",
        token=token,
        json_body={"verdict": "fp", "note": "lab scanner <b>", "suppress": True,
                   "suppress_days": 7},
    )  # fmt: skip
    assert status == 200, body
    v = json.loads(body)
    assert v["verdict"] == "fp" and v["suppression_id"]
    inc: Any = server.json(f"/api/incidents/{inc_id}", token)
    assert [x["note"] for x in inc["verdicts"]] == ["lab scanner <b>"]
    from tapetum.alerts.feedback import active_suppressions

    (sup,) = active_suppressions(store)
    assert sup.entity == SCAN_ENTITY and sup.signature == "scan."


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"verdict": "maybe"}',
        b'{"verdict": "fp", "extra": 1}',
        b'{"verdict": "fp", "note": 5}',
        b'{"verdict": "fp", "suppress_days": -1}',
        b"",
    ],
)
def test_malformed_verdict_is_422_and_changes_nothing(
    server: Client, token: str, store: Path, body: bytes
) -> None:
    inc_id = scan_incident(server, token)["incident_id"]
    status, _, resp = server.call(
        "POST", f"/api/incidents/{inc_id}/verdict", token=token, body=body,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 422, resp
    inc: Any = server.json(f"/api/incidents/{inc_id}", token)
    assert inc["verdicts"] == []


def test_oversized_body_is_413(server: Client, token: str) -> None:
    inc_id = scan_incident(server, token)["incident_id"]
    big = json.dumps({"verdict": "fp", "note": "x" * 100_000}).encode()
    status, _, body = server.call(
        "POST", f"/api/incidents/{inc_id}/verdict", token=token, body=big,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 413, body
    # Without a Content-Length (chunked), the limit holds while streaming.
    import http.client

    con = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        con.putrequest("POST", f"/api/incidents/{inc_id}/verdict")
        con.putheader("Authorization", f"Bearer {token}")
        con.putheader("Content-Type", "application/json")
        con.putheader("Transfer-Encoding", "chunked")
        con.endheaders()
        for i in range(0, len(big), 8192):
            chunk = big[i : i + 8192]
            con.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        con.send(b"0\r\n\r\n")
        assert con.getresponse().status == 413
    finally:
        con.close()
    inc: Any = server.json(f"/api/incidents/{inc_id}", token)
    assert inc["verdicts"] == []


def test_entity_risk(server: Client, token: str) -> None:
    risk: Any = server.json(f"/api/entities/{SCAN_ENTITY}/risk", token)
    assert 0 < risk["score"] <= 100
    assert risk["level"] in ("low", "medium", "high", "critical")
    assert risk["reasons"]
    quiet: Any = server.json("/api/entities/10.99.99.99/risk", token)
    assert quiet["score"] == 0


def test_entity_summary(server: Client, token: str) -> None:
    e: Any = server.json(f"/api/entities/{SCAN_ENTITY}", token)
    # Its own incident and the hostile copy (same source address).
    assert sorted(i["incident_id"] for i in e["incidents"])[1] == HOSTILE_ID
    assert e["traffic"]["flows"] > 1000
    assert all(a["observed"] for a in e["alerts"])


def test_flow_dns_tls_search(server: Client, token: str, store: Path) -> None:
    con = connect(store, read_only=True)
    try:
        (n443,) = con.execute(
            "SELECT count(*) FROM flows WHERE src_port = 443 OR dest_port = 443"
        ).fetchone() or (0,)
        (nslack,) = con.execute(
            "SELECT count(*) FROM dns WHERE query ILIKE '%slack%'"
        ).fetchone() or (0,)
    finally:
        con.close()
    flows: Any = server.json("/api/flows?port=443&limit=5&sort=bytes", token)
    assert flows["total"] == n443 > 0 and len(flows["items"]) == 5
    sizes = [f["bytes_toserver"] + f["bytes_toclient"] for f in flows["items"]]
    assert sizes == sorted(sizes, reverse=True)
    dns: Any = server.json("/api/dns?query=SLACK", token)
    assert dns["total"] == nslack > 0
    assert all("slack" in d["query"] for d in dns["items"])
    tls: Any = server.json("/api/tls?self_signed=true", token)
    assert [t["sni"] for t in tls["items"]] == ["nas.office.example"]
    fid = tls["items"][0]["flow_id"]
    one: Any = server.json(f"/api/flows?flow_id={fid}", token)
    assert [f["flow_id"] for f in one["items"]] == [fid]
    assert server.call("GET", "/api/flows?port=70000", token=token)[0] == 422
    assert server.call("GET", "/api/flows?sort=src_ip;--", token=token)[0] == 422


def test_detectors_stats_metrics_openapi(server: Client, token: str) -> None:
    from tapetum.registry import DETECTORS

    dets: Any = server.json("/api/detectors", token)
    by_name = {d["name"]: d for d in dets["detectors"]}
    assert set(by_name) == set(DETECTORS)
    assert by_name["scan"]["alerts"] == 3 and by_name["scan"]["config"]["window_s"] > 0
    tl: Any = server.json("/api/stats/timeline?buckets=30", token)
    assert len(tl["flows"]) == len(tl["alerts"]) == len(tl["start_ns"]) == 30
    ov: Any = server.json("/api/stats/overview", token)
    assert sum(tl["flows"]) == ov["totals"]["flows"]
    assert sum(tl["alerts"]) == ov["totals"]["alerts"] == 5
    assert ov["incidents_by_stage"]["discovery"] == 2  # the scan and its hostile copy
    status, headers, body = server.call("GET", "/metrics", token=token)
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert f"tapetum_flows_total {ov['totals']['flows']}" in body.decode()
    spec: Any = server.json("/openapi.json", token)
    for path in (
        "/api/incidents",
        "/api/incidents/{incident_id}",
        "/api/incidents/{incident_id}/verdict",
        "/api/entities/{entity}/risk",
        "/api/flows",
        "/api/dns",
        "/api/tls",
        "/api/detectors",
        "/api/stats/timeline",
        "/api/actions/{action_id}/approve",
        "/api/actions/{action_id}/revert",
    ):
        assert path in spec["paths"], path
    # No page loads anything from another site.
    for page in ("/", "/login", "/incidents", "/search", "/detectors", "/entities/x"):
        status, headers, body = server.call("GET", page)
        assert status == 200
        assert b"http://" not in body and b"https://" not in body
        assert "default-src 'self'" in headers["content-security-policy"]


def test_actions_approve_and_revert(server: Client, token: str, store: Path) -> None:
    from tapetum.config import load_config
    from tapetum.response import list_actions, respond

    inc_id = scan_incident(server, token)["incident_id"]
    assert server.call("POST", "/api/actions/nope/approve", token=token)[0] == 404
    assert server.call("POST", "/api/actions/nope/revert", token=token)[0] == 404
    # Record the playbooks' actions for the scan incident: a dry-run block and a queued limit.
    from tapetum.web.app import _incident_record

    con = connect(store)
    try:
        from tapetum.store.incidents import get_incident

        row = get_incident(con, inc_id)
        assert row is not None
        respond([_incident_record(row)], load_config(Path(__file__).parent / "playbooks.toml"),
                con)  # fmt: skip
    finally:
        con.close()
    inc: Any = server.json(f"/api/incidents/{inc_id}", token)
    recorded = {a["kind"]: a for a in inc["response"]["recorded"]}
    assert recorded["block_ip"]["state"] == "planned"
    assert recorded["rate_limit"]["state"] == "pending-approval"
    assert inc["response"]["planned"] == []  # everything planned is on record now
    # A dry-run action cannot be approved; the queued one is withdrawn by a revert (approving
    # it would run tc/nft on this machine, which tests/response does in a namespace).
    status, _, body = server.call(
        "POST", f"/api/actions/{recorded['block_ip']['action_id']}/approve", token=token
    )
    assert status == 409, body
    status, _, body = server.call(
        "POST", f"/api/actions/{recorded['rate_limit']['action_id']}/revert", token=token
    )
    assert status == 200, body
    assert json.loads(body)["state"] == "reverted"
    states = {a.kind: a.state for a in list_actions(store, incident_id=inc_id)}
    assert states == {"block_ip": "planned", "rate_limit": "reverted"}
