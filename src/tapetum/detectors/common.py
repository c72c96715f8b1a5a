"""Small helpers every detector shares: stable alert ids, address classes, human units."""

from __future__ import annotations

import hashlib
import ipaddress
from functools import lru_cache


@lru_cache(maxsize=65_536)
def is_internal(ip: str) -> bool:
    """Private, link-local or loopback (RFC 1918, RFC 4193, …): inside the monitored network."""
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return a.is_private or a.is_link_local or a.is_loopback


def fmt_duration(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    if s < 86_400 * 2:
        return f"{s / 3600:.1f} h"
    return f"{s / 86_400:.1f} days"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class AlertIds:
    """Deterministic alert ids from a key; the same key twice in one run (the same capture read
    twice) is numbered, so ids stay unique and re-runs give the same ids."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def __call__(self, key: str) -> str:
        n = self._seen.get(key, 0)
        self._seen[key] = n + 1
        if n:
            key += f"|{n}"
        return hashlib.sha1(key.encode()).hexdigest()[:16]
