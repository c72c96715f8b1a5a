"""The `Action` record and the validation every value passes before it reaches a backend.

Targets come from incidents, which come from traffic an attacker controls: nothing is passed to
nft, a command or a webhook before it has been parsed into an `ipaddress` object, an int or a
checked identifier.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import Any

import msgspec

from tapetum.errors import TapetumError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

KINDS = ("block_ip", "block_flow", "quarantine", "rate_limit", "webhook", "command")
MODES = ("dry-run", "approve", "auto")
STATES = ("planned", "pending-approval", "applied", "reverted", "expired", "refused", "failed")
#: Kinds whose target is a host address (and so are subject to the allowlist).
ADDRESS_KINDS = frozenset({"block_ip", "block_flow", "quarantine", "rate_limit"})
PROTOCOLS = ("tcp", "udp", "icmp", "any")

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class Action(msgspec.Struct, frozen=True, kw_only=True):
    """One planned response to one incident: logged, reversible, with a TTL."""

    action_id: str
    kind: str
    #: The host address (address kinds), the URL (webhook) or argv[0] (command).
    target: str
    #: Validated kind-specific parameters (dest, proto, dest_port, rate, allow, url, argv, ...).
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    mode: str = "dry-run"
    state: str = "planned"
    ttl_s: float = 3600.0
    created_ns: int = 0
    expires_ns: int = 0
    incident_id: str = ""
    playbook: str = ""
    reason: str = ""


class ValidationFailed(ValueError):
    """A value that must not reach a backend (an address that is not one, an odd identifier)."""


def parse_address(value: object) -> IPAddress:
    """A single host address, or ValidationFailed ("10.0.0.1; rm -rf /" is not one)."""
    if not isinstance(value, str):
        raise ValidationFailed(f"not an IP address: {value!r}")
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ValidationFailed(f"not an IP address: {value!r}") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1 (the allowlist must see it so)
    return addr


def parse_network(value: object) -> IPNetwork:
    if not isinstance(value, str):
        raise ValidationFailed(f"not a network: {value!r}")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValidationFailed(f"not a network (CIDR): {value!r}") from None


def check_identifier(value: object) -> str:
    """An incident or action id: letters, digits and _.:- only."""
    if not isinstance(value, str) or not _ID.match(value):
        raise ValidationFailed(f"not a valid identifier: {value!r}")
    return value


def check_port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValidationFailed(f"not a port number: {value!r}")
    return value


def check_positive_int(value: object, what: str, limit: int = 10_000_000) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= limit:
        raise ValidationFailed(f"{what} must be an integer in 1..{limit}: {value!r}")
    return value


def action_id_for(incident_id: str, playbook: str, index: int, target: str) -> str:
    """Deterministic: re-analysing the same capture plans the same actions, not new ones."""
    key = f"{incident_id}|{playbook}|{index}|{target}".encode()
    return "act-" + hashlib.sha256(key).hexdigest()[:16]


def fmt_ttl(s: float) -> str:
    """3600 -> "1 h", 90 -> "1.5 min" (whole numbers without decimals)."""
    for unit, size in (("days", 86_400.0), ("h", 3600.0), ("min", 60.0)):
        if s >= size:
            v = s / size
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{s:.0f} s"


def describe(action: Action) -> str:
    """What the action does, in words: "block 10.0.0.66 for 1 h"."""
    ttl = fmt_ttl(action.ttl_s)
    p = action.params
    if action.kind == "block_ip":
        return f"block {action.target} for {ttl}"
    if action.kind == "block_flow":
        port = f" port {p['dest_port']}" if p.get("dest_port") else ""
        return f"block {p.get('proto', 'any')} {action.target} -> {p.get('dest')}{port} for {ttl}"
    if action.kind == "quarantine":
        return f"quarantine {action.target} for {ttl}"
    if action.kind == "rate_limit":
        return f"rate-limit {action.target} to {p.get('rate_pps')} packets/s for {ttl}"
    if action.kind == "webhook":
        return f"notify {action.target}"
    return "run " + " ".join(str(a) for a in p.get("argv", []))


def would(action: Action) -> str:
    """ "would have blocked 10.0.0.66 for 1 h" — the dry-run wording."""
    text = describe(action)
    verb, _, rest = text.partition(" ")
    past = {
        "block": "blocked",
        "quarantine": "quarantined",
        "rate-limit": "rate-limited",
        "notify": "notified",
        "run": "run",
    }
    return f"would have {past.get(verb, verb)} {rest}"


class ResponseError(TapetumError):
    """A backend could not carry out or revert an action (nft failed, webhook unreachable, ...)."""
