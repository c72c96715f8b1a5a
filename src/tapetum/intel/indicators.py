"""Indicators of compromise: the record, the types Tapetum matches, normalisation, merging.

Types, their normalised values, and what each is matched against:

- ip: an IPv4/IPv6 address; flow source/destination, DNS A/AAAA answers.
- cidr: a network ("198.51.100.0/24", "2001:db8::/32"); the same, by prefix.
- domain: a name, lower case, IDNA (punycode); DNS query/answer names, TLS SNI, HTTP host, and
  every subdomain of it.
- url: "scheme://host[:port]/path?query" (default port and fragment dropped); HTTP requests.
- ja3: 32 hex digits (MD5 of the JA3 string); TLS ClientHello JA3.
- ja4: "t13d1516h2_8daaf6152771_b0da82dd1658"; TLS/QUIC ClientHello JA4.
- x509-sha1: 40 hex digits, no colons; the server certificate's SHA-1 fingerprint.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit, urlunsplit

import msgspec

TYPES = ("ip", "cidr", "domain", "url", "ja3", "ja4", "x509-sha1")

JA4_RE = re.compile(r"^[tqd][0-9a-z]{2}[di]\d{4}[0-9a-zA-Z]{2}_[0-9a-f]{12}_[0-9a-f]{12}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_COLON_HEX40 = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){19}$")
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}


class Indicator(msgspec.Struct, kw_only=True):
    type: str
    value: str
    source: str
    #: 0 (unknown) .. 100 (certain), as in STIX 2.1.
    confidence: int = 50
    #: Validity in data time, ns since the epoch (None: unbounded on that side).
    valid_from_ns: int | None = None
    valid_until_ns: int | None = None
    name: str = ""
    description: str = ""
    labels: tuple[str, ...] = ()
    stix_id: str | None = None
    #: ATT&CK technique ids and tactic names this indicator stands for (from STIX).
    techniques: tuple[str, ...] = ()
    tactics: tuple[str, ...] = ()
    #: Wall-clock time of the first import (ns); the store keeps it across re-imports.
    first_imported_ns: int | None = None
    #: How many duplicates were merged into this record.
    merges: int = 0

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.type, self.value, self.source)

    def valid_at(self, ts_ns: int) -> bool:
        if self.valid_from_ns is not None and ts_ns < self.valid_from_ns:
            return False
        return self.valid_until_ns is None or ts_ns < self.valid_until_ns


def merge(a: Indicator, b: Indicator) -> Indicator:
    """One record of two duplicates: the longest validity, the highest confidence, all labels."""

    def lo(x: int | None, y: int | None) -> int | None:
        return None if x is None or y is None else min(x, y)

    def hi(x: int | None, y: int | None) -> int | None:
        return None if x is None or y is None else max(x, y)

    firsts = [t for t in (a.first_imported_ns, b.first_imported_ns) if t is not None]
    best = a if a.confidence >= b.confidence else b
    return msgspec.structs.replace(
        a,
        confidence=max(a.confidence, b.confidence),
        valid_from_ns=lo(a.valid_from_ns, b.valid_from_ns),
        valid_until_ns=hi(a.valid_until_ns, b.valid_until_ns),
        name=best.name or a.name or b.name,
        description=best.description or a.description or b.description,
        labels=tuple(dict.fromkeys(a.labels + b.labels)),
        techniques=tuple(dict.fromkeys(a.techniques + b.techniques)),
        tactics=tuple(dict.fromkeys(a.tactics + b.tactics)),
        stix_id=a.stix_id or b.stix_id,
        first_imported_ns=min(firsts) if firsts else None,
        merges=a.merges + b.merges + 1,
    )


def normalize_domain(text: str) -> str | None:
    name = text.strip().rstrip(".").lower()
    if name.startswith("*."):
        name = name[2:]  # a wildcard means the subdomains, which parent matching covers
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        if not name.isascii():
            return None
    labels = name.split(".")
    if len(labels) < 2 or not all(_LABEL.match(x) for x in labels):
        return None
    if labels[-1].isdigit():
        return None  # an IPv4 address is not a domain
    return name


def normalize_url(text: str) -> str | None:
    """scheme://host[:port]/path?query with lower-case scheme and host, default ports dropped,
    the fragment (never sent) dropped, an empty path as "/"."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if not scheme or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def normalize_sha1(text: str) -> str | None:
    t = text.strip().lower()
    if _COLON_HEX40.match(t):
        t = t.replace(":", "")
    return t if _HEX40.match(t) else None


def normalize(kind: str, text: str) -> tuple[str, str] | None:
    """(type, normalised value) of a value declared as `kind`; ip and cidr are told apart
    (a /32 or /128 network is an ip). None when the value is not of that kind."""
    text = text.strip()
    if kind in ("ip", "cidr"):
        try:
            if "/" not in text:
                return "ip", ipaddress.ip_address(text).compressed
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            return None
        if net.prefixlen == net.max_prefixlen:
            return "ip", net.network_address.compressed
        return "cidr", net.compressed
    if kind == "domain":
        d = normalize_domain(text)
        return None if d is None else ("domain", d)
    if kind == "url":
        u = normalize_url(text)
        return None if u is None else ("url", u)
    if kind == "ja3":
        t = text.lower()
        return ("ja3", t) if _HEX32.match(t) else None
    if kind == "ja4":
        return ("ja4", text) if JA4_RE.match(text) else None
    if kind == "x509-sha1":
        s = normalize_sha1(text)
        return None if s is None else ("x509-sha1", s)
    return None


def detect(text: str) -> tuple[str, str] | None:
    """The type of a bare value, in this order: "type:value" prefix, URL (has "://"), IP,
    CIDR, certificate SHA-1 (40 hex, colons allowed), JA3 (32 hex), JA4, domain."""
    text = text.strip()
    head, sep, rest = text.partition(":")
    if sep and head.lower() in TYPES and not rest.startswith("//"):
        return normalize(head.lower(), rest)
    if "://" in text:
        return normalize("url", text)
    for kind in ("ip", "x509-sha1", "ja3", "ja4", "domain"):
        found = normalize(kind, text)
        if found is not None:
            return found
    return None
