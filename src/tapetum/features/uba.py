"""Features of authentication events: per-user login profiles (user behaviour analytics) and
per-source failure tallies (brute force from auth logs).

Geolocation is offline: geoip2fast's bundled MaxMind GeoLite2 Country+ASN database (IPv4; it
names the ASN's organisation, not its number). It has no cities, so the distance between two
countries is the shortest distance between their large cities (`data/country_points.json`,
GeoNames): a lower bound on the distance travelled, which keeps neighbouring countries with
distant centres (US and Canada) from looking like impossible travel.

Hours are hours of the week in UTC (Monday 00:00-01:00 is 0): a user's profile is compared with
itself, so the zone does not matter as long as it is the same.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from tapetum.records import AuthEvent

HOURS_PER_WEEK = 168
#: 1970-01-01 was a Thursday: hour-of-week 0 is Monday 00:00 UTC.
_EPOCH_HOW = 3 * 24
#: Per-user caps (the oldest/least used entries go first).
MAX_DEVICES = 64
MAX_COUNTRIES = 32
MAX_ASNS = 64
MAX_ASSETS = 64
MAX_FAILURES = 256
EARTH_RADIUS_KM = 6371.0


def hour_of_week(ts_ns: int) -> int:
    return (ts_ns // 3_600_000_000_000 + _EPOCH_HOW) % HOURS_PER_WEEK


# -- geolocation -------------------------------------------------------------------------------


class Geo:
    """Country and ASN organisation of public IPv4 addresses (None for private/unknown),
    memoised (bounded). The database loads on first use (~0.2 s)."""

    MAX_MEMO = 200_000

    def __init__(self) -> None:
        self._db: Any = None
        self._memo: dict[str, tuple[str | None, str | None]] = {}

    def _load(self) -> Any:
        import os

        import geoip2fast
        from geoip2fast import GeoIP2Fast

        path = os.path.join(os.path.dirname(geoip2fast.__file__), "geoip2fast-asn.dat.gz")
        return GeoIP2Fast(geoip2fast_data_file=path, verbose=False)

    def lookup(self, ip: str | None) -> tuple[str | None, str | None]:
        if not ip:
            return None, None
        hit = self._memo.get(ip)
        if hit is not None:
            return hit
        try:
            a = ipaddress.ip_address(ip)
        except ValueError:
            return None, None
        out: tuple[str | None, str | None] = (None, None)
        if a.is_global and a.version == 4:
            if self._db is None:
                self._db = self._load()
            r = self._db.lookup(str(a))
            cc = r.country_code if len(r.country_code) == 2 and r.country_code != "--" else None
            out = (cc, r.asn_name or None)
        if len(self._memo) >= self.MAX_MEMO:
            self._memo.clear()
        self._memo[ip] = out
        return out


_GEO: Geo | None = None


def shared_geo() -> Geo:
    """One database per process (it is read-only)."""
    global _GEO
    if _GEO is None:
        _GEO = Geo()
    return _GEO


@cache
def _country_points() -> dict[str, np.ndarray]:
    raw = resources.files("tapetum").joinpath("data/country_points.json").read_text()
    return {cc: np.radians(np.array(p, dtype=np.float64)) for cc, p in
            json.loads(raw)["points"].items()}  # fmt: skip


def country_distance_km(a: str, b: str) -> float | None:
    """Shortest great-circle distance between the large cities of two countries (0 for the
    same country; None when either is not in the table)."""
    if a == b:
        return 0.0
    pts = _country_points()
    pa, pb = pts.get(a), pts.get(b)
    if pa is None or pb is None:
        return None
    lat1, lon1 = pa[:, 0:1], pa[:, 1:2]
    lat2, lon2 = pb[:, 0][None, :], pb[:, 1][None, :]
    h = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    )
    return float(2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))).min())


# -- the hour-of-week model --------------------------------------------------------------------


def hour_probabilities(how: np.ndarray, prior: float = 1.0) -> np.ndarray:
    """A user's login-hour distribution from the hour-of-week counts: half the counts smoothed
    over neighbouring hours of the week, half the hour-of-day profile spread over every day
    (routines repeat across days), mixed with a uniform share prior/(n+prior) (the rule of
    succession: after n logins, an hour never seen has probability about 1/(n+1))."""
    n = float(how.sum())
    if n <= 0:
        return np.full(HOURS_PER_WEEK, 1.0 / HOURS_PER_WEEK)
    week = 0.5 * how + 0.25 * np.roll(how, 1) + 0.25 * np.roll(how, -1)
    day = how.reshape(7, 24).sum(axis=0)
    day = 0.5 * day + 0.25 * np.roll(day, 1) + 0.25 * np.roll(day, -1)
    blend = 0.5 * week / n + 0.5 * np.tile(day, 7) / (7 * n)
    eps = prior / (n + prior)
    return np.asarray((1 - eps) * blend + eps / HOURS_PER_WEEK)


def hour_tail(how: np.ndarray, hour: int) -> float:
    """How likely the user's own profile makes a login at least as unusual as one at `hour`:
    the probability mass of hours no more probable than it (a p-value under the profile)."""
    p = hour_probabilities(how)
    return float(p[p <= p[hour] * (1 + 1e-9)].sum())


# -- per-user profiles -------------------------------------------------------------------------


def _bump(d: dict[str, int], key: str, cap: int) -> None:
    """Count `key`; beyond `cap` keys the least counted one goes."""
    if key not in d and len(d) >= cap:
        del d[min(d, key=lambda k: (d[k], k))]
    d[key] = d.get(key, 0) + 1


@dataclass(slots=True)
class UserProfile:
    """What a user's successful logins looked like (learnt) and their recent failures."""

    how: np.ndarray = field(default_factory=lambda: np.zeros(HOURS_PER_WEEK))
    logins: int = 0
    countries: dict[str, int] = field(default_factory=dict)
    asns: dict[str, int] = field(default_factory=dict)
    devices: dict[str, int] = field(default_factory=dict)
    assets: dict[str, int] = field(default_factory=dict)
    #: The largest failure burst before a success that was learnt as normal.
    max_burst: int = 0
    #: The last successful login, learnt or not: (ts_ns, src_ip, country).
    last: tuple[int, str | None, str | None] | None = None
    #: Times of recent failed logins (within the burst window), newest last.
    failures: list[int] = field(default_factory=list)

    @property
    def located_logins(self) -> int:
        return sum(self.countries.values())

    def to_json(self) -> dict[str, Any]:
        nz = np.flatnonzero(self.how)
        return {
            "how": {str(k): float(self.how[k]) for k in nz.tolist()},
            "logins": self.logins, "countries": self.countries, "asns": self.asns,
            "devices": self.devices, "assets": self.assets, "max_burst": self.max_burst,
            "last": list(self.last) if self.last else None,
        }  # fmt: skip

    @staticmethod
    def from_json(d: dict[str, Any]) -> UserProfile:
        how = np.zeros(HOURS_PER_WEEK)
        for k, v in d["how"].items():
            how[int(k)] = float(v)
        last = d.get("last")
        return UserProfile(
            how=how, logins=int(d["logins"]), countries=dict(d["countries"]),
            asns=dict(d["asns"]), devices=dict(d["devices"]), assets=dict(d["assets"]),
            max_burst=int(d["max_burst"]),
            last=(int(last[0]), last[1], last[2]) if last else None,
        )  # fmt: skip

    def clone(self) -> UserProfile:
        return copy.deepcopy(self)


@dataclass(slots=True)
class Login:
    """One successful login and what it looked like next to the user's profile before it."""

    user: str
    ts_ns: int
    src_ip: str | None
    host: str | None
    dest_ip: str | None
    service: str
    country: str | None
    asn: str | None
    hour: int
    #: Successful logins learnt before this one.
    history_logins: int
    #: Of them, with a known country.
    located_logins: int
    #: P-value of the login hour under the user's hour-of-week profile (1 without history).
    hour_tail_p: float
    new_country: bool
    new_asn: bool
    new_device: bool
    known_countries: tuple[str, ...]
    #: The previous successful login (any), for travel: its time, address and country.
    prev_ts_ns: int | None
    prev_ip: str | None
    prev_country: str | None
    travel_km: float
    travel_kmh: float
    #: Failed logins of this user within the burst window before this success.
    failures_before: int
    #: The most failures before a success learnt as normal for this user.
    usual_burst: int
    #: The sensitive asset logged in to ("" when none), and whether it is the first time.
    asset: str
    asset_first: bool


@dataclass(slots=True)
class UbaRows:
    logins: list[Login] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.logins)

    def take(self, idx: np.ndarray) -> UbaRows:
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return UbaRows([self.logins[k] for k in idx.tolist()])

    @staticmethod
    def concat(parts: list[UbaRows]) -> UbaRows:
        return UbaRows([x for p in parts for x in p.logins])


class SensitiveAssets:
    """Hosts (names, case-insensitive), addresses and networks tagged sensitive in the config."""

    def __init__(self, items: list[str]) -> None:
        self.names: set[str] = set()
        self.nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for it in items:
            try:
                self.nets.append(ipaddress.ip_network(it, strict=False))
            except ValueError:
                self.names.add(it.lower())

    def match(self, host: str | None, dest_ip: str | None) -> str:
        """The sensitive asset of a login ("" when none)."""
        if host and host.lower() in self.names:
            return host
        for text in (dest_ip, host):
            if not text:
                continue
            try:
                a = ipaddress.ip_address(text)
            except ValueError:
                continue
            if any(a in n for n in self.nets):
                return text
        return ""


def prune_failures(p: UserProfile, now_ns: int, window_ns: int) -> None:
    cut = now_ns - window_ns
    if p.failures and p.failures[0] < cut:
        p.failures = [t for t in p.failures if t >= cut]
    if len(p.failures) > MAX_FAILURES:
        del p.failures[: len(p.failures) - MAX_FAILURES]


def login_features(
    p: UserProfile,
    e: AuthEvent,
    user: str,
    geo: Geo,
    assets: SensitiveAssets,
    burst_window_ns: int,
) -> Login:
    """The features of successful login `e` against profile `p` (not changed)."""
    country, asn = geo.lookup(e.src_ip)
    hour = hour_of_week(e.ts_ns)
    tail = hour_tail(p.how, hour) if p.logins else 1.0
    km = kmh = 0.0
    prev_ts = prev_ip = prev_cc = None
    if p.last is not None:
        prev_ts, prev_ip, prev_cc = p.last
        if country and prev_cc and country != prev_cc:
            d = country_distance_km(prev_cc, country)
            if d is not None:
                km = d
                hours = max(e.ts_ns - prev_ts, 0) / 3.6e12
                kmh = d / hours if hours > 0 else math.inf
    cut = e.ts_ns - burst_window_ns
    failures = sum(1 for t in p.failures if cut <= t <= e.ts_ns)
    asset = assets.match(e.host, e.dest_ip)
    return Login(
        user=user, ts_ns=e.ts_ns, src_ip=e.src_ip, host=e.host, dest_ip=e.dest_ip,
        service=e.service, country=country, asn=asn, hour=hour, history_logins=p.logins,
        located_logins=p.located_logins, hour_tail_p=tail,
        new_country=bool(country) and country not in p.countries,
        new_asn=bool(asn) and asn not in p.asns,
        new_device=bool(e.src_ip) and e.src_ip not in p.devices,
        known_countries=tuple(sorted(p.countries, key=lambda c: -p.countries[c])[:5]),
        prev_ts_ns=prev_ts, prev_ip=prev_ip, prev_country=prev_cc, travel_km=km,
        travel_kmh=kmh, failures_before=failures, usual_burst=p.max_burst, asset=asset,
        asset_first=bool(asset) and asset not in p.assets,
    )  # fmt: skip


def learn_login(p: UserProfile, x: Login) -> None:
    """Fold a login taken as normal into the profile."""
    p.how[x.hour] += 1.0
    p.logins += 1
    if x.country:
        _bump(p.countries, x.country, MAX_COUNTRIES)
    if x.asn:
        _bump(p.asns, x.asn, MAX_ASNS)
    if x.src_ip:
        _bump(p.devices, x.src_ip, MAX_DEVICES)
    if x.asset:
        _bump(p.assets, x.asset, MAX_ASSETS)
    p.max_burst = max(p.max_burst, x.failures_before)


def note_novelty(p: UserProfile, x: Login) -> None:
    """An alerted login's country and sensitive asset have now been seen (alerted once); the
    rest of the login is not learnt."""
    if x.country and x.country not in p.countries:
        _bump(p.countries, x.country, MAX_COUNTRIES)
    if x.asset and x.asset not in p.assets:
        _bump(p.assets, x.asset, MAX_ASSETS)


def user_of(e: AuthEvent) -> str | None:
    """The account name as an entity key part (None when the log names none)."""
    u = (e.user or "").strip()
    return u or None


# -- per-source failure tallies (brute force from auth logs) ----------------------------------


@dataclass(slots=True)
class SourceTally:
    """Exact authentication outcomes of one source and service in one window."""

    first_ns: int
    last_ns: int
    failures: Counter[str] = field(default_factory=Counter)
    successes: Counter[str] = field(default_factory=Counter)
    hosts: Counter[str] = field(default_factory=Counter)
    dest_ip: str | None = None
    #: Users not tallied by name beyond the per-source cap (their failures still count).
    other_user_failures: int = 0

    @property
    def failed(self) -> int:
        return sum(self.failures.values()) + self.other_user_failures

    def add(self, e: AuthEvent, max_users: int) -> None:
        self.first_ns = min(self.first_ns, e.ts_ns)
        self.last_ns = max(self.last_ns, e.ts_ns)
        user = user_of(e) or "(no user name)"
        if e.host and (e.host in self.hosts or len(self.hosts) < 16):
            self.hosts[e.host] += 1
        if e.dest_ip and self.dest_ip is None:
            self.dest_ip = e.dest_ip
        table = self.failures if e.outcome == "failure" else self.successes
        if user in table or len(table) < max_users:
            table[user] += 1
        elif e.outcome == "failure":
            self.other_user_failures += 1

    def merged(self, other: SourceTally) -> SourceTally:
        """This tally and a later one of the same source and service, as one."""
        return SourceTally(
            min(self.first_ns, other.first_ns), max(self.last_ns, other.last_ns),
            self.failures + other.failures, self.successes + other.successes,
            self.hosts + other.hosts, self.dest_ip or other.dest_ip,
            self.other_user_failures + other.other_user_failures,
        )  # fmt: skip

    def max_per_user(self) -> int:
        return max(self.failures.values(), default=0)

    def median_per_user(self) -> float:
        v = list(self.failures.values())
        return float(np.median(v)) if v else 0.0
