"""Labelled attacks: the `tapetum-labels/1` JSON files `tapetum lab` writes beside its captures.

An attack names its attacker(s) (the entity an alert should be about; for C2, DNS tunnels and
exfiltration that is the compromised internal host), its victims, its data-time window and the
alert category Tapetum is expected to raise. A benign-only capture has no attacks.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from tapetum.errors import InputError

FORMAT = "tapetum-labels/1"


class Attack(msgspec.Struct, kw_only=True):
    id: str
    category: str
    attacker: list[str]
    start_ts: float
    end_ts: float
    technique: str = ""
    victims: list[str] = msgspec.field(default_factory=list)
    tool: str = ""
    command: list[str] | str = msgspec.field(default_factory=list)
    start: str = ""
    end: str = ""
    params: dict[str, object] = msgspec.field(default_factory=dict)


class Labels(msgspec.Struct, kw_only=True):
    scenario: str
    capture: str
    attacks: list[Attack] = msgspec.field(default_factory=list)
    format: str = FORMAT
    seed: int | None = None
    start_ts: float | None = None
    end_ts: float | None = None
    benign_hosts: list[str] = msgspec.field(default_factory=list)
    networks: dict[str, list[str]] = msgspec.field(default_factory=dict)

    def attacker_set(self) -> set[str]:
        return {ip for a in self.attacks for ip in a.attacker}


def load_labels(path: str | Path) -> Labels:
    """Read and check a labels file; errors name the file and what is wrong."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InputError(str(p), None, f"cannot read labels: {exc.strerror}") from None
    try:
        labels = msgspec.json.decode(raw, type=Labels)
    except msgspec.DecodeError as exc:
        raise InputError(str(p), None, f"not a labels file: {exc}") from None
    if labels.format != FORMAT:
        raise InputError(str(p), None, f"labels format {labels.format!r}, expected {FORMAT!r}")
    for a in labels.attacks:
        if a.end_ts < a.start_ts:
            raise InputError(str(p), None, f"attack {a.id!r} ends before it starts")
        if not a.attacker:
            raise InputError(str(p), None, f"attack {a.id!r} names no attacker")
    return labels


def capture_of(labels: Labels, labels_path: str | Path) -> Path:
    """The capture a labels file describes (relative to the labels file)."""
    return (Path(labels_path).parent / labels.capture).resolve()
