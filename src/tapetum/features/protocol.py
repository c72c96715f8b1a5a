"""Protocol anomalies of single application events: pure functions, no state.

Certificates (self-signed, outside their validity, SNI not covered by the names in them), a
service on a port of another service, HTTP Basic credentials in cleartext, and the client
fingerprint of a TLS ClientHello. The detector (`tapetum.detectors.protocol`) adds what needs
memory: prevalence of fingerprints, episodes, counts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from tapetum.records import AppEvent, HttpEvent, SshEvent, TlsEvent

KIND_SELF_SIGNED = "self_signed_cert"
KIND_EXPIRED = "expired_cert"
KIND_SNI_MISMATCH = "sni_mismatch"
KIND_RARE_FINGERPRINT = "rare_ja4"
KIND_UNEXPECTED_PORT = "unexpected_port"
KIND_CLEARTEXT_CREDENTIALS = "cleartext_credentials"

_TIME = "%Y-%m-%dT%H:%M:%S"  # how `protocols.tls` writes notbefore / notafter (UTC)


@dataclass(frozen=True, slots=True)
class Finding:
    """One anomaly of one event: its kind, the key it is deduplicated on (server, SNI,
    fingerprint) and the observed facts, in words and numbers."""

    kind: str
    key: str
    detail: str
    observed: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EventRow:
    """What the detector keeps of one TLS/HTTP/SSH event."""

    ts_ns: int
    flow_id: int
    src_ip: str
    src_port: int
    dest_ip: str
    dest_port: int
    proto: str
    service: str
    #: The client fingerprint (JA4, else JA3) of a TLS ClientHello, "" otherwise.
    fingerprint: str
    findings: tuple[Finding, ...]


@lru_cache(maxsize=16_384)
def _parse_time(text: str) -> int | None:
    try:
        t = dt.datetime.strptime(text, _TIME).replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return int(t.timestamp()) * 1_000_000_000


def service_of(event: AppEvent) -> str:
    """The service the parsers found: ssh, tls, quic, http (dns for DNS events)."""
    if isinstance(event, SshEvent):
        return "ssh"
    if isinstance(event, TlsEvent):
        return "quic" if event.transport == "quic" else "tls"
    if isinstance(event, HttpEvent):
        return "http"
    return "dns"


def subject_cn(subject: str | None) -> str | None:
    """The common name in an RFC 4514 subject ("CN=a.example,O=Org" -> "a.example")."""
    if not subject:
        return None
    # RFC 4514 escapes commas inside values with a backslash; split only on bare commas.
    parts: list[str] = []
    cur: list[str] = []
    escaped = False
    for ch in subject:
        if escaped:
            cur.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",+":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    for part in parts:
        name, _, value = part.partition("=")
        if name.strip().upper() == "CN":
            return value.strip()
    return None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def name_matches(reference: str, presented: str) -> bool:
    """RFC 6125 §6.4: does a certificate's DNS name `presented` cover the name `reference`?

    Case-insensitive, trailing dots ignored. A wildcard is honoured only as the whole or part of
    the left-most label ("*.example.com", "w*.example.com"), covers exactly one label (never
    "example.com" itself nor "a.b.example.com"), needs at least two labels after it, and is not
    honoured in an internationalized (xn--) label.
    """
    ref = reference.strip().rstrip(".").lower()
    pres = presented.strip().rstrip(".").lower()
    if not ref or not pres:
        return False
    if "*" not in pres:
        return ref == pres
    p_labels = pres.split(".")
    r_labels = ref.split(".")
    first = p_labels[0]
    if "*" in ".".join(p_labels[1:]) or first.count("*") != 1 or len(p_labels) < 3:
        return False
    if len(r_labels) != len(p_labels) or r_labels[1:] != p_labels[1:]:
        return False
    if first != "*" and first.startswith("xn--"):
        return False
    head, _, tail = first.partition("*")
    label = r_labels[0]
    return len(label) >= len(head) + len(tail) and label.startswith(head) and label.endswith(tail)


def sni_covered(sni: str, subject: str | None, san: Sequence[str]) -> bool:
    """True when the SNI is covered by the subject CN or any DNS SAN."""
    names = list(san)
    cn = subject_cn(subject)
    if cn:
        names.append(cn)
    return any(name_matches(sni, n) for n in names)


def certificate_findings(e: TlsEvent, not_yet_valid_max_days: float = 365.0) -> list[Finding]:
    """Anomalies of the server certificate in a TLS event (none when no certificate was seen:
    TLS 1.3 and QUIC encrypt it). A certificate valid only from more than
    `not_yet_valid_max_days` after the event says the capture's clock is wrong: not reported."""
    if e.fingerprint is None and e.subject is None and not e.san:
        return []
    out: list[Finding] = []
    server = f"{e.flow.dest_ip}:{e.flow.dest_port}"
    cert_key = f"{server}|{e.fingerprint or e.subject or ''}"
    cn = subject_cn(e.subject) or e.subject or "?"
    if e.self_signed:
        out.append(
            Finding(
                KIND_SELF_SIGNED,
                cert_key,
                f"server {server} presented a self-signed certificate (subject {cn!r}"
                f"{f', SNI {e.sni!r}' if e.sni else ''})",
                {"self_signed": 1.0},
            )
        )
    nb = _parse_time(e.notbefore) if e.notbefore else None
    na = _parse_time(e.notafter) if e.notafter else None
    if na is not None and na < e.ts_ns:
        days = (e.ts_ns - na) / 86_400e9
        out.append(
            Finding(
                KIND_EXPIRED,
                cert_key,
                f"server {server} presented a certificate for {cn!r} that expired "
                f"{days:,.1f} days before the connection (notAfter {e.notafter} UTC)",
                {"days_expired": round(days, 3)},
            )
        )
    elif nb is not None and e.ts_ns < nb <= e.ts_ns + not_yet_valid_max_days * 86_400e9:
        days = (nb - e.ts_ns) / 86_400e9
        out.append(
            Finding(
                KIND_EXPIRED,
                cert_key,
                f"server {server} presented a certificate for {cn!r} that is not valid "
                f"for another {days:,.1f} days (notBefore {e.notbefore} UTC)",
                {"days_until_valid": round(days, 3)},
            )
        )
    sni = e.sni
    if sni and not _is_ip(sni) and not sni_covered(sni, e.subject, e.san):
        cn_only = subject_cn(e.subject)
        names = [*list(e.san)[:5], *([cn_only] if cn_only and cn_only not in e.san else [])]
        named = (
            f"names only {', '.join(names)}"
            if names
            else f"names no host (subject {e.subject or '?'!r})"
        )
        out.append(
            Finding(
                KIND_SNI_MISMATCH,
                f"{server}|{sni.lower()}",
                f"the client asked {server} for {sni!r} but the certificate {named}",
                {"names_in_certificate": float(len(e.san) + (1 if e.subject else 0))},
            )
        )
    return out


def port_findings(
    service: str,
    e: AppEvent,
    port_services: Mapping[str, Sequence[int]],
    strict: bool = False,
) -> list[Finding]:
    """A service on a port that belongs to another service (T1571 Non-Standard Port); with
    `strict`, also on any port outside the service's own standard ports."""
    port = e.flow.dest_port
    own = port_services.get(service, ())
    if port in own:
        return []
    # QUIC and DNS-over-UDP ports are claims on UDP; the others on TCP.
    udp = e.flow.proto == "UDP"
    owners = sorted(
        s
        for s, ports in port_services.items()
        if port in ports
        and s != service
        and (s in ("quic", "dns") or not udp)
        and (s != "quic" or udp)
    )
    if not owners and not strict:
        return []
    where = f"{e.flow.dest_ip}:{port}/{e.flow.proto.lower()}"
    why = f"a port of {', '.join(owners)}" if owners else "not a standard port of it"
    std = ", ".join(str(p) for p in list(own)[:6]) or "none configured"
    return [
        Finding(
            KIND_UNEXPECTED_PORT,
            f"{where}|{service}",
            f"{service.upper()} spoken with {where} ({why}; standard ports for {service}: {std})",
            {"port": float(port), "port_of_other_service": 1.0 if owners else 0.0},
        )
    ]


def credential_findings(e: HttpEvent) -> list[Finding]:
    """HTTP Basic authorization in cleartext HTTP (the password is base64, i.e. readable)."""
    if not e.authorization_basic:
        return []
    host = e.hostname or e.flow.dest_ip
    return [
        Finding(
            KIND_CLEARTEXT_CREDENTIALS,
            f"{e.flow.dest_ip}:{e.flow.dest_port}|{host.lower()}",
            f"HTTP Basic credentials sent in cleartext to {host} "
            f"({e.flow.dest_ip}:{e.flow.dest_port}, {e.http_method} {e.url[:80]})",
            {"basic_auth_requests": 1.0},
        )
    ]


def client_fingerprint(e: TlsEvent) -> str:
    """JA4 when known, else JA3 (prefixed "ja3:" so the two never collide)."""
    if e.ja4:
        return e.ja4
    if e.ja3_hash:
        return f"ja3:{e.ja3_hash}"
    return ""


def event_rows(
    events: Sequence[AppEvent],
    port_services: Mapping[str, Sequence[int]],
    *,
    strict_ports: bool = False,
    enabled: frozenset[str] | None = None,
    not_yet_valid_max_days: float = 365.0,
) -> list[EventRow]:
    """One row per TLS, HTTP and SSH event with its stateless findings (DNS events: none)."""
    rows: list[EventRow] = []
    for e in events:
        if not isinstance(e, TlsEvent | HttpEvent | SshEvent):
            continue
        service = service_of(e)
        found: list[Finding] = []
        fp = ""
        if isinstance(e, TlsEvent):
            found += certificate_findings(e, not_yet_valid_max_days)
            fp = client_fingerprint(e)
        elif isinstance(e, HttpEvent):
            found += credential_findings(e)
        found += port_findings(service, e, port_services, strict_ports)
        if enabled is not None:
            found = [f for f in found if f.kind in enabled]
        f = e.flow
        rows.append(
            EventRow(
                e.ts_ns,
                f.flow_id,
                f.src_ip,
                f.src_port,
                f.dest_ip,
                f.dest_port,
                f.proto,
                service,
                fp,
                tuple(found),
            )
        )
    return rows
