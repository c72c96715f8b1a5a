"""STIX 2.1 bundles: indicators whose patterns name network observables.

Each object is parsed and validated by the `stix2` library (patterns included); an object of an
unknown type or an invalid one is reported with its id and the reason, and the rest is loaded.
Accepted pattern comparisons (combined with OR, or `IN (…)`; AND, FOLLOWEDBY and qualifiers
describe several observations at once and are reported as not supported):

- `ipv4-addr:value`, `ipv6-addr:value` with `=` or `ISSUBSET`: ip / cidr
- `network-traffic:src_ref.value`, `network-traffic:dst_ref.value` `=`: ip / cidr / domain
- `domain-name:value =`: domain; `url:value =`: url
- `x509-certificate:hashes.'SHA-1' =` (also SHA1): x509-sha1
- JA3/JA4 (no standard STIX object exists): custom objects `x-ja3` / `x-ja4` with property
  `hash` or `value`, `network-traffic:extensions.'x-ja3'.hash` (or `'x-ja4'`, or `.value`),
  and any network-traffic path ending in `ja3`, `ja3_hash` or `ja4`: ja3 / ja4

`file:hashes.*` comparisons are valid STIX but not network data: skipped and counted. The
indicator's `confidence`, `valid_from`/`valid_until`, `name`, `description`, `labels`,
`indicator_types` and `kill_chain_phases` are kept; `indicates` relationships to attack
patterns give ATT&CK technique ids.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import stix2  # type: ignore[import-untyped]
import stix2.exceptions  # type: ignore[import-untyped]
import stix2.patterns as P  # type: ignore[import-untyped]
from stix2.pattern_visitor import create_pattern_object  # type: ignore[import-untyped]

from tapetum.errors import InputError
from tapetum.intel.indicators import Indicator, detect, normalize
from tapetum.intel.parse import NS_PER_DAY, Parsed, json_object

#: ATT&CK tactics by name (kill_chain_phases of the "mitre-attack" kill chain use them).
TACTICS = frozenset(
    [
        "reconnaissance", "resource-development", "initial-access", "execution", "persistence",
        "privilege-escalation", "defense-evasion", "credential-access", "discovery",
        "lateral-movement", "collection", "command-and-control", "exfiltration", "impact",
    ]
)  # fmt: skip


class Unsupported(Exception):
    """A pattern part Tapetum cannot match on single observations."""


def _ns(t: Any) -> int | None:
    if t is None:
        return None
    if isinstance(t, str):
        t = dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp()) * 1_000_000_000 + int(t.microsecond) * 1000


def _path(lhs: Any) -> tuple[str, list[str]]:
    names = []
    for c in lhs.property_path:
        name = getattr(c, "property_name", None)
        if name is None:
            raise Unsupported("list index in object path")
        names.append(str(name).strip("'"))
    return str(lhs.object_type_name), names


def _comparison_kind(obj: str, props: list[str]) -> str | None:
    """The indicator type of an object path, "file-hash" for file hashes, None if unsupported."""
    last = props[-1].lower() if props else ""
    if obj in ("ipv4-addr", "ipv6-addr") and props == ["value"]:
        return "ip"
    if obj == "network-traffic" and props in (["src_ref", "value"], ["dst_ref", "value"]):
        return "auto"
    if obj == "domain-name" and props == ["value"]:
        return "domain"
    if obj == "url" and props == ["value"]:
        return "url"
    if obj == "x509-certificate" and len(props) == 2 and props[0] == "hashes":
        return "x509-sha1" if props[1].upper().replace("-", "") == "SHA1" else "cert-other-hash"
    if obj in ("x-ja3", "x-ja4") and last in ("hash", "value"):
        return obj[2:]
    if obj == "network-traffic":
        if last in ("ja3", "ja3_hash"):
            return "ja3"
        if last == "ja4":
            return "ja4"
        lowered = [p.lower() for p in props]
        for kind in ("ja3", "ja4"):
            if f"x-{kind}" in lowered and last in ("hash", "value"):
                return kind
    if obj in ("file", "artifact") and props and props[0] == "hashes":
        return "file-hash"
    return None


def _values(node: Any) -> list[str]:
    if isinstance(node, P.ListConstant):
        return [str(v.value) for v in node.value]
    return [str(node.value)]


def pattern_values(pattern: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(type, value) pairs of a STIX pattern and the reasons for parts that were skipped.
    Raises `Unsupported` when the pattern as a whole cannot be matched."""
    found: list[tuple[str, str]] = []
    skipped: list[str] = []

    def walk(n: Any) -> None:
        if isinstance(n, P.OrObservationExpression | P.OrBooleanExpression):
            for o in n.operands:
                walk(o)
        elif isinstance(n, P.ObservationExpression | P.ParentheticalExpression):
            walk(getattr(n, "operand", None) or getattr(n, "expression", None))
        elif isinstance(n, P.AndBooleanExpression | P.AndObservationExpression):
            raise Unsupported("AND of several comparisons or observations")
        elif isinstance(n, P.FollowedByObservationExpression):
            raise Unsupported("FOLLOWEDBY sequence")
        elif isinstance(n, P.QualifiedObservationExpression):
            raise Unsupported(f"qualifier {type(n.qualifier).__name__.removesuffix('Qualifier')}")
        elif isinstance(
            n,
            P.EqualityComparisonExpression
            | P.IsSubsetComparisonExpression
            | P.InComparisonExpression,
        ):
            if n.negated or (isinstance(n, P.EqualityComparisonExpression) and n.operator != "="):
                raise Unsupported("negated comparison")
            obj, props = _path(n.lhs)
            kind = _comparison_kind(obj, props)
            where = f"{obj}:{'.'.join(props)}"
            if kind is None:
                skipped.append(f"unsupported object path {where}")
                return
            if kind == "file-hash":
                skipped.append("file hash (not network data)")
                return
            if kind == "cert-other-hash":
                skipped.append(f"certificate hash {props[1]} (the parser computes SHA-1 only)")
                return
            if isinstance(n, P.IsSubsetComparisonExpression) and kind not in ("ip", "auto"):
                raise Unsupported(f"ISSUBSET on {where}")
            for v in _values(n.rhs):
                got = detect(v) if kind == "auto" else normalize(kind, v)
                if got is None or (kind == "auto" and got[0] not in ("ip", "cidr", "domain")):
                    skipped.append(f"value {v[:60]!r} is not a valid {kind} for {where}")
                else:
                    found.append(got)
        else:
            raise Unsupported(f"{type(n).__name__} comparison")

    walk(create_pattern_object(pattern, version="2.1"))
    return found, skipped


def _techniques(objects: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """indicator id -> ATT&CK technique ids of the attack patterns it `indicates`."""
    out: dict[str, list[str]] = {}
    for o in objects.values():
        if o.get("type") != "relationship" or o.get("relationship_type") != "indicates":
            continue
        target = objects.get(str(o.get("target_ref")), {})
        if target.get("type") != "attack-pattern":
            continue
        for ref in target.get("external_references", []) or []:
            if ref.get("source_name") == "mitre-attack" and ref.get("external_id"):
                out.setdefault(str(o.get("source_ref")), []).append(str(ref["external_id"]))
    return out


def parse_bundle(
    path: Path | str,
    text: str,
    source: str,
    confidence: int = 50,
    valid_days: float | None = None,
    now_ns: int | None = None,
) -> Parsed:
    data = json_object(path, text)
    if data.get("type") == "bundle":
        objects = data.get("objects") or []
    elif "type" in data and "id" in data:
        objects = [data]  # a lone STIX object
    else:
        raise InputError(str(path), None, 'not a STIX 2.1 bundle (no "type": "bundle")')
    if not isinstance(objects, list):
        raise InputError(str(path), None, 'the bundle\'s "objects" is not a list')
    out = Parsed(str(path), "stix")
    index: dict[tuple[str, str, str], int] = {}
    raw_by_id = {str(o.get("id")): o for o in objects if isinstance(o, dict)}
    techniques = _techniques(raw_by_id)
    for k, raw in enumerate(objects):
        oid = str(raw.get("id", f"object #{k}")) if isinstance(raw, dict) else f"object #{k}"
        if not isinstance(raw, dict) or "type" not in raw:
            out.problems.append(f"{path}: {oid}: not a STIX object")
            out.skipped["not a STIX object"] += 1
            continue
        try:
            obj = stix2.parse(raw, allow_custom=False, version="2.1")
        except stix2.exceptions.ParseError as exc:
            reason = f"unknown object type {raw['type']!r}" if "unknown" in str(exc) else str(exc)
            out.problems.append(f"{path}: {oid}: {reason}")
            out.skipped["unknown object type"] += 1
            continue
        except stix2.exceptions.STIXError as exc:
            out.problems.append(f"{path}: {oid}: invalid: {exc}")
            out.skipped["invalid object"] += 1
            continue
        if obj.type != "indicator":
            out.other_objects[obj.type] += 1
            continue
        if obj.pattern_type != "stix":
            out.problems.append(f"{path}: {oid}: pattern type {obj.pattern_type!r} not supported")
            out.skipped[f"pattern type {obj.pattern_type}"] += 1
            continue
        try:
            values, skipped = pattern_values(obj.pattern)
        except Unsupported as exc:
            out.problems.append(f"{path}: {oid}: pattern not supported: {exc}")
            out.skipped["pattern not supported"] += 1
            continue
        for reason in skipped:
            out.skipped[reason] += 1
            if not reason.startswith("file hash"):
                out.problems.append(f"{path}: {oid}: {reason}")
        valid_from = _ns(obj.get("valid_from"))
        valid_until = _ns(obj.get("valid_until"))
        if valid_until is None and valid_days is not None:
            start = valid_from if valid_from is not None else now_ns
            if start is not None:
                valid_until = start + int(valid_days * NS_PER_DAY)
        phases = obj.get("kill_chain_phases") or []
        tactics = tuple(dict.fromkeys(p.phase_name for p in phases if p.phase_name in TACTICS))
        labels = tuple(dict.fromkeys([*obj.get("labels", []), *obj.get("indicator_types", [])]))
        conf = obj.get("confidence")
        for kind, value in values:
            out.add(
                Indicator(
                    type=kind,
                    value=value,
                    source=source,
                    confidence=int(conf) if conf is not None else confidence,
                    valid_from_ns=valid_from,
                    valid_until_ns=valid_until,
                    name=str(obj.get("name", "")),
                    description=str(obj.get("description", ""))[:1000],
                    labels=labels,
                    stix_id=str(obj.id),
                    techniques=tuple(dict.fromkeys(techniques.get(str(obj.id), []))),
                    tactics=tactics,
                ),
                index,
            )
    return out
