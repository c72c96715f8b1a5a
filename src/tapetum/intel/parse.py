"""Read indicator files: plain lists (one indicator per line) and STIX 2.1 bundles.

A file is read whole before anything is stored: problems with single lines or objects are
reported (file:line, or the STIX object id, and the reason), counted, and the rest is kept; a
file that cannot be read or is not what it claims to be is a fatal `InputError` and gives nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tapetum.errors import InputError
from tapetum.intel.indicators import Indicator, detect, merge

NS_PER_DAY = 86_400 * 1_000_000_000


@dataclass
class Parsed:
    """What one file gave: indicators (duplicates merged), problems, counts."""

    path: str
    format: str
    indicators: list[Indicator] = field(default_factory=list)
    #: Human-readable problems, each naming the line or object and the reason.
    problems: list[str] = field(default_factory=list)
    #: Reason -> count of what was read but not loaded (bad lines, file hashes, …).
    skipped: Counter[str] = field(default_factory=Counter)
    #: Duplicates merged inside this file.
    merged: int = 0
    #: STIX objects that are not indicators, by type (relationships, attack patterns, …).
    other_objects: Counter[str] = field(default_factory=Counter)

    def add(self, ind: Indicator, index: dict[tuple[str, str, str], int]) -> None:
        k = index.get(ind.key)
        if k is None:
            index[ind.key] = len(self.indicators)
            self.indicators.append(ind)
        else:
            self.indicators[k] = merge(self.indicators[k], ind)
            self.merged += 1


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(str(path), None, f"cannot read: {exc.strerror}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(str(path), exc.start, "not UTF-8 text") from None


def parse_file(
    path: str | Path,
    *,
    source: str | None = None,
    confidence: int = 50,
    valid_days: float | None = None,
    now_ns: int | None = None,
) -> Parsed:
    """Parse a plain list or a STIX 2.1 bundle (told apart by content: a JSON object).

    `source` defaults to the file name; `confidence` applies where the file says nothing;
    `valid_days` bounds indicators that have no end of validity: STIX ones from their
    valid_from, plain ones from `now_ns` (the import time).
    """
    p = Path(path)
    text = _read_text(p)
    src = source or p.name
    if text.lstrip().startswith("{"):
        from tapetum.intel.stix import parse_bundle

        return parse_bundle(p, text, src, confidence, valid_days, now_ns)
    return parse_plain(p, text, src, confidence, valid_days, now_ns)


def parse_plain(
    path: Path,
    text: str,
    source: str,
    confidence: int = 50,
    valid_days: float | None = None,
    now_ns: int | None = None,
) -> Parsed:
    """One indicator per line, its type told by its form (see `indicators.detect`); "#" starts
    a comment (whole line, or after whitespace); what follows the value on the line becomes
    its description."""
    out = Parsed(str(path), "plain")
    index: dict[tuple[str, str, str], int] = {}
    until = None
    if valid_days is not None and now_ns is not None:
        until = now_ns + int(valid_days * NS_PER_DAY)
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        for marker in (" #", "\t#"):
            cut = line.find(marker)
            if cut >= 0:
                line = line[:cut].strip()
        token, _, rest = line.partition(" ")
        if "\t" in token:
            token, _, more = token.partition("\t")
            rest = f"{more} {rest}".strip()
        if "," in token and "://" not in token:
            token, _, more = token.partition(",")
            rest = f"{more} {rest}".strip(" ,")
        found = detect(token)
        if found is None:
            out.problems.append(f"{path}:{lineno}: cannot tell what {token[:80]!r} is")
            out.skipped["unrecognised line"] += 1
            continue
        kind, value = found
        out.add(
            Indicator(
                type=kind,
                value=value,
                source=source,
                confidence=confidence,
                valid_until_ns=until,
                description=rest.strip()[:500],
            ),
            index,
        )
    return out


def load_indicator_files(paths: list[str]) -> list[Indicator]:
    """Indicators of files named in the config, parsed as `tapetum intel import` would."""
    out: list[Indicator] = []
    for p in paths:
        out.extend(parse_file(p).indicators)
    return out


def json_object(path: Path | str, text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            str(path), exc.pos, f"invalid JSON (line {exc.lineno}): {exc.msg}"
        ) from None
    if not isinstance(data, dict):
        raise InputError(str(path), None, "a STIX bundle must be a JSON object")
    return data
