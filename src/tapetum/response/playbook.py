"""Playbooks: which incidents get which actions. Config checks and pure planning.

`plan(incident, config)` only reads the incident and the config; it never touches a backend or
the clock (timestamps default to the incident's end), so the same incident always plans the same
actions with the same ids.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec

from tapetum.response.actions import (
    KINDS,
    MODES,
    PROTOCOLS,
    Action,
    IPAddress,
    IPNetwork,
    ValidationFailed,
    action_id_for,
    check_identifier,
    check_port,
    check_positive_int,
    parse_address,
    parse_network,
)

if TYPE_CHECKING:
    from tapetum.config import Config, PlaybookSection, ResponseSection
    from tapetum.records import Incident

#: Parameters each kind accepts (anything else is a config error: a typo must not be ignored).
PARAMS: dict[str, frozenset[str]] = {
    "block_ip": frozenset(),
    "block_flow": frozenset({"proto", "dest_port"}),
    "quarantine": frozenset({"allow"}),
    "rate_limit": frozenset({"rate_pps", "burst"}),
    "webhook": frozenset({"url", "format"}),
    "command": frozenset({"argv", "revert_argv"}),
}
PLACEHOLDERS = ("{ip}", "{incident_id}", "{action_id}", "{ttl_s}")
#: What the built-in "internal" tag covers (RFC 1918, RFC 4193, loopback, link-local; not the
#: documentation ranges that Python's `is_private` also counts).
INTERNAL = [
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16",
              "fc00::/7", "fe80::/10", "::1/128")
]  # fmt: skip
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def _check_params(kind: str, params: dict[str, Any]) -> None:
    unknown = sorted(set(params) - PARAMS[kind])
    if unknown:
        allowed = ", ".join(sorted(PARAMS[kind])) or "none"
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for {kind} (allowed: {allowed})"
        )
    try:
        if kind == "block_flow":
            if params.get("proto", "any") not in PROTOCOLS:
                raise ValueError(f"proto must be one of {', '.join(PROTOCOLS)}")
            if "dest_port" in params:
                check_port(params["dest_port"])
                if params.get("proto", "any") not in ("tcp", "udp"):
                    raise ValueError("dest_port needs proto tcp or udp")
        if kind == "quarantine":
            allow = params.get("allow", [])
            if not isinstance(allow, list):
                raise ValueError("allow must be a list of networks")
            for a in allow:
                parse_network(a)
        if kind == "rate_limit":
            check_positive_int(params.get("rate_pps", 100), "rate_pps")
            check_positive_int(params.get("burst", 50), "burst")
        if kind == "webhook":
            url = params.get("url")
            if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
                raise ValueError("url must be an http:// or https:// URL")
            if not urlsplit(url).hostname:
                raise ValueError(f"url has no host: {url!r}")
            if params.get("format", "json") not in ("json", "slack"):
                raise ValueError("format must be json or slack")
        if kind == "command":
            for key in ("argv", "revert_argv"):
                if key not in params and key == "revert_argv":
                    continue
                argv = params.get(key)
                if (
                    not isinstance(argv, list)
                    or not argv
                    or not all(isinstance(a, str) for a in argv)
                ):
                    raise ValueError(f"{key} must be a non-empty list of strings")
                for arg in argv:
                    for ph in _PLACEHOLDER.findall(arg):
                        if ph not in PLACEHOLDERS:
                            known = ", ".join(PLACEHOLDERS)
                            raise ValueError(f"unknown placeholder {ph} in {key} (known: {known})")
    except ValidationFailed as exc:
        raise ValueError(str(exc)) from None


def check_playbook(pb: PlaybookSection) -> None:
    """Raise ValueError naming the playbook for unknown condition keys, kinds or parameters."""
    from tapetum.config import ResponseActionSpec, ResponseConditionSection

    where = f"playbook {pb.name!r}"
    if pb.mode is not None and pb.mode not in MODES:
        raise ValueError(f"{where}: mode must be one of {', '.join(MODES)}, not {pb.mode!r}")
    try:
        cond = msgspec.convert(pb.when, ResponseConditionSection)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{where}: condition: {exc}") from None
    if not 1 <= cond.min_severity <= 3:
        raise ValueError(f"{where}: min_severity must be 1 (high) .. 3 (low)")
    if not pb.actions:
        raise ValueError(f"{where}: no actions")
    for i, raw in enumerate(pb.actions):
        kind = raw.get("kind")
        if kind not in KINDS:
            raise ValueError(
                f"{where}: action {i + 1}: unknown action kind {kind!r} (known: {', '.join(KINDS)})"
            )
        try:
            spec = msgspec.convert(raw, ResponseActionSpec)
        except msgspec.ValidationError as exc:
            raise ValueError(f"{where}: action {i + 1} ({kind}): {exc}") from None
        if spec.ttl_s < 0:
            raise ValueError(f"{where}: action {i + 1} ({kind}): ttl_s must be >= 0")
        try:
            _check_params(spec.kind, spec.params)
        except ValueError as exc:
            raise ValueError(f"{where}: action {i + 1} ({kind}): {exc}") from None


def check_section(section: ResponseSection) -> None:
    if section.mode not in MODES:
        raise ValueError(f"response mode must be one of {', '.join(MODES)}, not {section.mode!r}")
    if section.default_ttl_s <= 0:
        raise ValueError("response default_ttl_s must be > 0 (every action has a TTL)")
    try:
        for net in [*section.allowlist, *section.tags]:
            parse_network(net)
    except ValidationFailed as exc:
        raise ValueError(f"response: {exc}") from None
    if section.netns is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", section.netns):
        raise ValueError(f"response netns is not a valid namespace name: {section.netns!r}")
    names = [pb.name for pb in section.playbooks]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"duplicate playbook name(s): {', '.join(dup)}")


def _section(config: Config | ResponseSection) -> ResponseSection:
    from tapetum.config import ResponseSection

    return config if isinstance(config, ResponseSection) else config.response


def allowlisted(addr: IPAddress, allowlist: list[str]) -> str | None:
    """The allowlist entry that covers `addr`, if any."""
    for entry in allowlist:
        net: IPNetwork = ipaddress.ip_network(entry, strict=False)
        if addr.version == net.version and addr in net:
            return entry
    return None


def entity_tags(addr: IPAddress | None, section: ResponseSection) -> set[str]:
    tags: set[str] = set()
    if addr is None:
        return tags
    local = any(addr.version == n.version and addr in n for n in INTERNAL)
    tags.add("internal" if local else "external")
    for net_text, net_tags in section.tags.items():
        net = ipaddress.ip_network(net_text, strict=False)
        if addr.version == net.version and addr in net:
            tags.update(net_tags)
    return tags


def _host_of(incident: Incident) -> IPAddress | None:
    """The incident's host address: the entity if it is one, else its source address."""
    for candidate in (incident.entity, incident.src_ip):
        try:
            return parse_address(candidate)
        except ValidationFailed:
            continue
    return None


def matches(incident: Incident, pb: PlaybookSection, section: ResponseSection) -> bool:
    c = pb.condition()
    if incident.severity > c.min_severity or incident.confidence < c.min_confidence:
        return False
    if c.detectors and not any(
        s == d or s.startswith(d if d.endswith(".") or "." in d else d + ".")
        for s in incident.signatures
        for d in c.detectors
    ):
        return False
    if c.tactics and not set(c.tactics) & set(incident.mitre_tactic):
        return False
    if c.categories and not set(c.categories) & set(incident.categories):
        return False
    return not (c.entity_tags and not set(c.entity_tags) & entity_tags(_host_of(incident), section))


def plan(
    incident: Incident, config: Config | ResponseSection, *, now_ns: int | None = None
) -> list[Action]:
    """The actions every matching playbook calls for. Pure: no backend, no clock.

    Actions on an allowlisted or invalid address are planned in state "refused" (so the refusal
    is audited); the others in "planned" (dry-run), "pending-approval" (approve) or "planned"
    awaiting `apply` (auto).
    """
    section = _section(config)
    now = incident.last_ts_ns if now_ns is None else now_ns
    out: list[Action] = []
    for pb in section.playbooks:
        if not matches(incident, pb, section):
            continue
        mode = pb.mode or section.mode
        for i, spec in enumerate(pb.action_specs()):
            ttl = spec.ttl_s or section.default_ttl_s
            for target, params, refusal in _targets(incident, spec.kind, spec.params, section):
                state = (
                    "refused"
                    if refusal
                    else ("pending-approval" if mode == "approve" else "planned")
                )
                why = (
                    f"playbook {pb.name}: {incident.title} "
                    f"(severity {incident.severity}, incident {incident.incident_id})"
                )
                key = f"{target}|{params.get('dest', '')}"
                out.append(
                    Action(
                        action_id=action_id_for(incident.incident_id, pb.name, i, key),
                        kind=spec.kind,
                        target=target,
                        params=params,
                        mode=mode,
                        state=state,
                        ttl_s=float(ttl),
                        created_ns=now,
                        expires_ns=now + int(ttl * 1e9),
                        incident_id=incident.incident_id,
                        playbook=pb.name,
                        reason=f"refused: {refusal}" if refusal else why,
                    )
                )
    return out


def _targets(
    incident: Incident, kind: str, params: dict[str, Any], section: ResponseSection
) -> list[tuple[str, dict[str, Any], str | None]]:
    """(target, validated params, refusal reason or None) for one action spec."""
    params = dict(params)
    if kind == "webhook":
        return [(str(params["url"]), params, None)]
    if kind == "command":
        refusal = _check_command_values(incident)
        uses_ip = any("{ip}" in a for a in [*params["argv"], *params.get("revert_argv", [])])
        if not uses_ip or refusal:
            return [(incident.incident_id, params, refusal)]
    raw = incident.entity if kind != "block_flow" else (incident.src_ip or incident.entity)
    try:
        host = parse_address(raw)
    except ValidationFailed:
        # A user-name entity: act on the incident's source address if it has one.
        try:
            host = parse_address(incident.src_ip)
        except ValidationFailed as exc:
            return [(str(raw), params, f"invalid target: {exc}")]
    hit = allowlisted(host, section.allowlist)
    if hit is not None:
        return [(str(host), params, f"{host} is allowlisted ({hit})")]
    if kind == "quarantine":
        params["allow"] = [str(parse_network(a)) for a in params.get("allow", [])]
    if kind == "rate_limit":
        params.setdefault("rate_pps", 100)
        params.setdefault("burst", 50)
    if kind != "block_flow":
        return [(str(host), params, None)]
    out: list[tuple[str, dict[str, Any], str | None]] = []
    for dest in incident.dest_ips[: section.max_targets]:
        p = dict(params)
        p.setdefault("proto", "any")
        try:
            d = parse_address(dest)
        except ValidationFailed as exc:
            out.append((str(host), p | {"dest": str(dest)}, f"invalid target: {exc}"))
            continue
        p["dest"] = str(d)
        if d.version != host.version:
            out.append((str(host), p, "source and destination address families differ"))
        else:
            out.append((str(host), p, None))
    return out


def _check_command_values(incident: Incident) -> str | None:
    try:
        check_identifier(incident.incident_id)
    except ValidationFailed as exc:
        return f"invalid target: {exc}"
    return None
