"""STIX 2.1 objects for the intel tests."""

from __future__ import annotations

import uuid
from typing import Any

CREATED = "2026-01-10T00:00:00.000Z"


def sid(kind: str, n: int) -> str:
    return f"{kind}--{uuid.UUID(int=n, version=4)}"


def indicator(n: int, pattern: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "indicator",
        "spec_version": "2.1",
        "id": sid("indicator", n),
        "created": CREATED,
        "modified": CREATED,
        "pattern": pattern,
        "pattern_type": "stix",
        "valid_from": "2026-01-01T00:00:00Z",
        **extra,
    }


def bundle(*objects: dict[str, Any]) -> dict[str, Any]:
    return {"type": "bundle", "id": sid("bundle", 999), "objects": list(objects)}
