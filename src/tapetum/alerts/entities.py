"""Entity resolution: which user (and host name) was behind an address, and when.

Successful logins in auth logs tie a source address to an account for a while; DHCP leases and
Kerberos tickets (Zeek's dhcp.log and kerberos.log, when a source provides them) can feed the
same map through `observe_name` and `observe_user`. Incidents about an address (their entity or
source) are annotated with the users seen behind it around their time, so a network alert on
10.0.0.5 says whose session it was.

Memory is bounded: at most `max_addresses` addresses (the least recently seen go first) and
`max_per_address` users or names per address (likewise); drops are counted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from tapetum.detectors.common import BoundedDict
from tapetum.records import AuthEvent, Incident


@dataclass(slots=True)
class Sighting:
    """An account or name seen behind an address from `first_ns` to `last_ns`."""

    first_ns: int
    last_ns: int


class EntityResolver:
    def __init__(
        self, hold_s: float = 8 * 3600.0, max_addresses: int = 100_000, max_per_address: int = 8
    ) -> None:
        #: A user stays behind an address this long after their last login from it (a session).
        self.hold_ns = int(hold_s * 1e9)
        self.max_per_address = max_per_address
        self._users: BoundedDict[str, dict[str, Sighting]] = BoundedDict(max_addresses)
        self._names: BoundedDict[str, dict[str, Sighting]] = BoundedDict(max_addresses)
        self.dropped = 0

    def _see(self, table: BoundedDict[str, dict[str, Sighting]], ip: str, key: str,
             ts_ns: int) -> None:  # fmt: skip
        seen = table.get(ip)
        if seen is None:
            seen = {}
        table.touch(ip, seen)
        s = seen.get(key)
        if s is None:
            if len(seen) >= self.max_per_address:
                oldest = min(seen, key=lambda k: seen[k].last_ns)
                del seen[oldest]
                self.dropped += 1
            seen[key] = Sighting(ts_ns, ts_ns)
        else:
            s.first_ns = min(s.first_ns, ts_ns)
            s.last_ns = max(s.last_ns, ts_ns)
        self.dropped += table.trim()

    def observe_auth(self, events: Sequence[AuthEvent]) -> None:
        """Successful logins: the source address belongs to the user from then on (for
        `hold_s` after the last one)."""
        for e in events:
            if e.outcome == "success" and e.src_ip and e.user:
                self.observe_user(_norm(e.src_ip), e.user, e.ts_ns)

    def observe_user(self, ip: str, user: str, ts_ns: int) -> None:
        """Hook: an account seen at an address (e.g. a Kerberos ticket's client)."""
        self._see(self._users, ip, user, ts_ns)

    def observe_name(self, ip: str, name: str, ts_ns: int) -> None:
        """Hook: a host name leased or claimed at an address (e.g. a DHCP lease)."""
        self._see(self._names, ip, name, ts_ns)

    def _at(self, table: BoundedDict[str, dict[str, Sighting]], ip: str, first_ns: int,
            last_ns: int) -> tuple[str, ...]:  # fmt: skip
        seen = table.get(_norm(ip))
        if not seen:
            return ()
        hold = self.hold_ns
        # Overlap of [first_ns, last_ns] with the sighting extended by the hold time.
        hits = (
            k for k, s in seen.items() if s.first_ns <= last_ns and first_ns <= s.last_ns + hold
        )
        return tuple(sorted(hits))

    def users_at(self, ip: str, first_ns: int, last_ns: int) -> tuple[str, ...]:
        """Accounts behind `ip` at any time in [first_ns, last_ns]."""
        return self._at(self._users, ip, first_ns, last_ns)

    def names_at(self, ip: str, first_ns: int, last_ns: int) -> tuple[str, ...]:
        return self._at(self._names, ip, first_ns, last_ns)

    def annotate(self, incident: Incident) -> Incident:
        """The incident with the users behind its address (entity or source) around its time."""
        users: set[str] = set()
        for ip in {incident.entity, incident.src_ip}:
            if ip and _is_ip(ip):
                users.update(self.users_at(ip, incident.first_ts_ns, incident.last_ts_ns))
        if not users:
            return incident
        return msgspec.structs.replace(incident, users=tuple(sorted(users)))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _norm(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip
