"""Small helpers every detector shares: stable alert ids, address classes, human units, learnt
state checks, bounded tables."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from typing import Any, TypeVar

from tapetum.errors import ModelError
from tapetum.records import Alert

K = TypeVar("K")
V = TypeVar("V")


class InternalNetworks:
    """Membership of addresses in the monitored site's networks, memoised per address.

    Inside: the configured `networks` (CIDR) and, with `private` (the default), private,
    link-local and loopback addresses (RFC 1918, RFC 4193, …). `private=False` makes it a plain
    set of networks (an allowlist). Text that is not an address is never inside.
    """

    #: Memo bound: a scan of the whole internet cannot grow it further.
    MAX_MEMO = 1_000_000

    def __init__(self, networks: Sequence[str] = (), *, private: bool = True) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        self.private = private
        self._memo: dict[str, bool] = {}

    def __contains__(self, ip: object) -> bool:
        if not isinstance(ip, str):
            return False
        hit = self._memo.get(ip)
        if hit is None:
            hit = self._lookup(ip)
            if len(self._memo) >= self.MAX_MEMO:
                self._memo.clear()
            self._memo[ip] = hit
        return hit

    def _lookup(self, ip: str) -> bool:
        try:
            a = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if self.private and (a.is_private or a.is_link_local or a.is_loopback):
            return True
        return any(a in n for n in self.networks)  # an IPv4 address is in no IPv6 network


_PRIVATE = InternalNetworks()


def is_internal(ip: str) -> bool:
    """Private, link-local or loopback (RFC 1918, RFC 4193, …): inside the monitored network."""
    return ip in _PRIVATE


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


def by_time(alerts: list[Alert]) -> list[Alert]:
    """The alerts in data-time order (ties by id, so the order is deterministic), in place."""
    alerts.sort(key=lambda a: (a.ts_ns, a.alert_id))
    return alerts


def check_state(state: dict[str, Any], name: str, version: int) -> None:
    """Raise ModelError unless `state` was written by detector `name` at state `version`."""
    if state.get("detector") != name or state.get("version") != version:
        raise ModelError(
            f"{name} detector state (detector {state.get('detector')!r}, version "
            f"{state.get('version')}) does not match this Tapetum's version {version}; "
            "learn again"
        )


@contextmanager
def reading_state(name: str) -> Iterator[None]:
    """Turn a damaged learnt state (missing keys, wrong types) into a ModelError."""
    try:
        yield
    except (KeyError, AttributeError, TypeError, ValueError) as exc:
        raise ModelError(f"{name} detector state is damaged: {exc!r}") from None


class BoundedDict(dict[K, V]):
    """A dict whose oldest entries (insertion order; `touch` makes a key the newest) `trim`
    drops beyond `cap`. Trimming is explicit, so a batch of inserts sees its own entries; the
    owner adds what `trim` returns to its dropped/evicted counter."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def touch(self, key: K, value: V) -> None:
        """Set `key` as the most recent entry."""
        self.pop(key, None)
        self[key] = value

    def trim(self) -> int:
        """Drop the oldest entries beyond the cap; how many were dropped."""
        excess = len(self) - self.cap
        if excess <= 0:
            return 0
        for key in list(islice(self, excess)):
            del self[key]
        return excess
