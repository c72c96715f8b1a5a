"""DNS, HTTP and SSH metadata against Zeek's reference logs for the same captures.

Known, explained differences (asserted, so a change shows up):
- Zeek's dns.log also has NetBIOS name service (UDP 137) rows; we do not parse NBNS.
- Zeek lower-cases DNS query names; we keep the case on the wire, so names compare
  case-insensitively.
- Zeek names SRV answers by their target; we give dig's "priority weight port target".
- Zeek's http.log `version` is the reply's; our `protocol` is the request's (Suricata), so it
  is not compared.
- Zeek logs no HTTP for a connection whose handshake is not in the capture (conn_state OTH);
  we read the request anyway: those extra events are allowed, and only those.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tapetum.protocols.dns import DNS_PORTS
from tapetum.records import AppEvent, DnsEvent, FlowRef, HttpEvent, SshEndpoint, SshEvent

Analyze = Callable[..., tuple[list[AppEvent], object]]
ZeekLog = Callable[[Path], list[dict[str, str]]]


def _tuple(flow: FlowRef) -> tuple[str, str, str, str]:
    return (flow.src_ip, str(flow.src_port), flow.dest_ip, str(flow.dest_port))


def _zeek_tuple(row: dict[str, str]) -> tuple[str, str, str, str]:
    return (row["id.orig_h"], row["id.orig_p"], row["id.resp_h"], row["id.resp_p"])


def _zeek_list(value: str) -> list[str]:
    return [] if value in ("-", "(empty)") else value.split(",")


def test_dns_matches_zeek(
    capture: Callable[..., Path], analyze_capture: Analyze, zeek_log: ZeekLog
) -> None:
    events, _ = analyze_capture(capture("zeek", "wikipedia", "wikipedia.pcap"))
    rows = zeek_log(capture("zeek", "wikipedia", "dns.log"))
    ours = [e for e in events if isinstance(e, DnsEvent)]
    in_scope = [
        r for r in rows if int(r["id.resp_p"]) in DNS_PORTS or int(r["id.orig_p"]) in DNS_PORTS
    ]
    netbios = [r for r in rows if r not in in_scope]
    assert {r["id.resp_p"] for r in netbios} == {"137"}

    def key(flow: tuple[str, ...], ident: int | str, name: str) -> tuple[str, ...]:
        return (*flow, str(ident), name.lower())

    remaining = Counter(key(_tuple(e.flow), e.id, e.rrname) for e in ours)
    by_key: dict[tuple[str, ...], list[DnsEvent]] = {}
    for event in ours:
        by_key.setdefault(key(_tuple(event.flow), event.id, event.rrname), []).append(event)
    mismatches = []
    for row in in_scope:
        k = key(_zeek_tuple(row), row["trans_id"], row["query"])
        if remaining[k] <= 0:
            mismatches.append(("missing", row["query"], _zeek_tuple(row)))
            continue
        remaining[k] -= 1
        event = by_key[k].pop(0)
        answers = [
            a.rdata.rsplit(" ", 1)[-1] if a.rrtype == "SRV" else a.rdata for a in event.answers
        ]
        got = {
            "qtype": event.rrtype if row["qtype_name"] != "-" else "-",
            "rcode": event.rcode or "-",
            "answers": answers,
            "ttls": [float(a.ttl) for a in event.answers],
        }
        want = {
            "qtype": row["qtype_name"],
            "rcode": row["rcode_name"],
            "answers": _zeek_list(row["answers"]),
            "ttls": [float(t) for t in _zeek_list(row["TTLs"])],
        }
        if got != want:
            mismatches.append((row["query"], got, want))
        if row["rtt"] != "-":
            assert event.rtt_ms is not None
            assert abs(event.rtt_ms / 1000 - float(row["rtt"])) < 1e-6
    assert not mismatches
    assert sum(remaining.values()) == 0, "events Zeek does not have"
    assert len(ours) == len(in_scope) == 26


def test_http_matches_zeek(
    capture: Callable[..., Path], analyze_capture: Analyze, zeek_log: ZeekLog
) -> None:
    events, _ = analyze_capture(capture("zeek", "wikipedia", "wikipedia.pcap"))
    rows = zeek_log(capture("zeek", "wikipedia", "http.log"))
    conn_states = {
        _zeek_tuple(r): r["conn_state"] for r in zeek_log(capture("zeek", "wikipedia", "conn.log"))
    }
    ours: dict[tuple[str, ...], list[HttpEvent]] = {}
    for event in events:
        if isinstance(event, HttpEvent):
            ours.setdefault(_tuple(event.flow), []).append(event)
    matched = 0
    for row in rows:
        depth = int(row["trans_depth"])
        flow_events = ours.get(_zeek_tuple(row), [])
        assert len(flow_events) >= depth, row
        event = flow_events[depth - 1]
        got = (event.http_method, event.hostname, event.url, event.http_refer,
               event.http_user_agent, event.status)  # fmt: skip
        want = (row["method"], row["host"], row["uri"], row["referrer"], row["user_agent"],
                int(row["status_code"]))  # fmt: skip
        assert got == want
        matched += 1
    zeek_counts = Counter(_zeek_tuple(r) for r in rows)
    extra = {flow: len(evs) - zeek_counts[flow] for flow, evs in ours.items()}
    extra = {flow: n for flow, n in extra.items() if n}
    assert matched == len(rows) == 14
    assert all(conn_states[flow] == "OTH" for flow in extra), extra
    assert sum(extra.values()) == 1


def _banner(endpoint: SshEndpoint | None) -> str:
    if endpoint is None:
        return "-"
    text = f"SSH-{endpoint.proto_version}-{endpoint.software_version}"
    return f"{text} {endpoint.comments}" if endpoint.comments is not None else text


def test_ssh_matches_zeek(
    capture: Callable[..., Path], analyze_capture: Analyze, zeek_log: ZeekLog
) -> None:
    events, _ = analyze_capture(capture("zeek", "ssh_basic", "ssh.pcap"))
    rows = zeek_log(capture("zeek", "ssh_basic", "ssh.log"))
    ours = {_tuple(e.flow): e for e in events if isinstance(e, SshEvent)}
    assert len(ours) == len(rows) == 22
    for row in rows:
        event = ours[_zeek_tuple(row)]
        assert (_banner(event.client), _banner(event.server)) == (row["client"], row["server"])
