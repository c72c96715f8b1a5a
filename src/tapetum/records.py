"""Typed low-volume records: the one contract between stages.

Packets and flows travel as column batches (see `tapetum.flows.meter.FlowBatch`); everything
whose volume is per-transaction or lower (DNS, TLS, HTTP, SSH metadata, alerts, incidents) is a
frozen msgspec Struct defined here. On disk every record becomes one EVE-shaped JSON line: a
shared envelope plus one nested object named after the event type (see `tapetum.sinks.eve`).

Times are integer nanoseconds since the Unix epoch, taken from the data, never the wall clock.
"""

from __future__ import annotations

import msgspec


class FlowRef(msgspec.Struct, frozen=True, kw_only=True):
    """The envelope fields that tie an event to its flow, oriented originator -> responder."""

    flow_id: int
    community_id: str
    src_ip: str
    src_port: int
    dest_ip: str
    dest_port: int
    proto: str
    vlan: tuple[int, ...] = ()


class DnsAnswer(msgspec.Struct, frozen=True, kw_only=True):
    rrname: str
    rrtype: str
    ttl: int
    rdata: str


class DnsEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One DNS transaction (query, and its response when seen), as in Zeek's dns.log."""

    ts_ns: int
    flow: FlowRef
    id: int
    rrname: str
    rrtype: str
    #: "answer" when a response was seen, "query" for an unanswered query.
    type: str
    rcode: str | None = None
    answers: tuple[DnsAnswer, ...] = ()
    rtt_ms: float | None = None
    flags: tuple[str, ...] = ()


class TlsEvent(msgspec.Struct, frozen=True, kw_only=True):
    """TLS handshake metadata, Suricata EVE `tls` naming plus Tapetum extras."""

    ts_ns: int
    flow: FlowRef
    sni: str | None = None
    version: str | None = None
    client_versions: tuple[str, ...] = ()
    cipher_suite: str | None = None
    client_alpns: tuple[str, ...] = ()
    server_alpns: tuple[str, ...] = ()
    ja3_hash: str | None = None
    ja3_string: str | None = None
    ja3s_hash: str | None = None
    ja3s_string: str | None = None
    ja4: str | None = None
    subject: str | None = None
    issuerdn: str | None = None
    serial: str | None = None
    fingerprint: str | None = None
    notbefore: str | None = None
    notafter: str | None = None
    self_signed: bool | None = None
    san: tuple[str, ...] = ()
    #: "tls" or "quic": where the ClientHello was found.
    transport: str = "tls"


class HttpEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One HTTP/1.x request and its response when seen."""

    ts_ns: int
    flow: FlowRef
    http_method: str
    hostname: str | None = None
    url: str = ""
    protocol: str | None = None
    http_user_agent: str | None = None
    status: int | None = None
    length: int | None = None
    http_content_type: str | None = None
    http_refer: str | None = None
    authorization_basic: bool = False


class SshEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    proto_version: str
    software_version: str
    comments: str | None = None


class SshEvent(msgspec.Struct, frozen=True, kw_only=True):
    """SSH identification banners of both sides, as in Suricata's `ssh` event."""

    ts_ns: int
    flow: FlowRef
    client: SshEndpoint | None = None
    server: SshEndpoint | None = None


class AuthEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One authentication attempt from a log (sshd, Windows Security, a generic JSON line).

    `outcome` is "success", "failure" or "other"; `host` is the machine that was logged in to
    (the log's host name), `dest_ip` its address when known; `src_ip` where the login came from.
    """

    ts_ns: int
    outcome: str
    service: str
    source: str
    user: str | None = None
    src_ip: str | None = None
    src_port: int | None = None
    host: str | None = None
    dest_ip: str | None = None
    method: str | None = None
    event_id: str | None = None
    logon_type: int | None = None
    reason: str | None = None


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """A detector's finding: scored, explained, mapped to ATT&CK.

    `signature` names the detector (e.g. "scan.vertical"); `severity` is 1 (high) .. 3 (low).
    """

    alert_id: str
    ts_ns: int
    signature: str
    signature_id: int
    category: str
    severity: int
    score: float
    explanation: str
    entity: str
    mitre_technique_id: tuple[str, ...] = ()
    mitre_tactic: tuple[str, ...] = ()
    src_ip: str | None = None
    src_port: int | None = None
    dest_ip: str | None = None
    dest_port: int | None = None
    proto: str | None = None
    flow_id: int | None = None
    community_id: str | None = None
    first_ts_ns: int | None = None
    last_ts_ns: int | None = None
    #: Observed values of the features that drove the score, by feature name (units in names).
    observed: dict[str, float] = msgspec.field(default_factory=dict)
    #: The baseline those features were compared with, same keys as `observed` where known.
    baseline: dict[str, float] = msgspec.field(default_factory=dict)


class Incident(msgspec.Struct, frozen=True, kw_only=True):
    """Alerts about one entity correlated over time, with a summary and ATT&CK techniques."""

    incident_id: str
    ts_ns: int
    first_ts_ns: int
    last_ts_ns: int
    entity: str
    title: str
    summary: str
    severity: int
    confidence: float
    alert_count: int
    alert_ids: tuple[str, ...]
    signatures: tuple[str, ...]
    categories: tuple[str, ...]
    mitre_technique_id: tuple[str, ...] = ()
    mitre_tactic: tuple[str, ...] = ()
    stage: str = "reconnaissance"
    src_ip: str | None = None
    dest_ips: tuple[str, ...] = ()
    #: Accounts that logged in from the incident's address around its time (auth logs).
    users: tuple[str, ...] = ()


AppEvent = DnsEvent | TlsEvent | HttpEvent | SshEvent
