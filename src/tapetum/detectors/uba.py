"""User behaviour analytics from authentication events (auth.log, Windows Security, JSON).

Per user (entity "user:NAME") a profile of successful logins: hour-of-week histogram, countries
and ASN organisations (offline GeoIP), source addresses, sensitive assets used, and the largest
failure burst before a normal success (`features.uba`). Each successful login is scored against
the profile as it was before it:

- `uba.unusual_time`: the login hour's probability mass under the user's own hour-of-week
  profile is below `unusual_time_p` (a calibrated false-alarm rate per login, judged once the
  user has `min_history_logins`);
- `uba.new_country`: a country the user never logged in from, after `min_country_logins`;
- `uba.impossible_travel`: two successful logins from countries at least `min_travel_km` apart
  (between their nearest large cities), faster than `max_speed_kmh`;
- `uba.sensitive_asset`: a login to an asset tagged sensitive, the first time for this user
  (after `min_history_logins`) or at an hour unusual at `sensitive_time_factor` × the bar;
- `uba.success_after_burst`: a success right after `burst_failures` (or twice the user's usual
  burst) failed logins of the account within `burst_window_s` (T1110: the guess that worked).

One alert per login names the most specific finding (`PRIORITY`), scores the strongest, and
lists the others. Logins that alert are not
learnt (an intruder's logins must not become the user's normal: hours, devices, bursts), except
that a first time is a first time only once: the alerted country and sensitive asset are noted
as seen. The same finding about the same user is not alerted again within `repeat_s`.
Password spraying across users from one source is the brute-force detector's
(`bruteforce.spraying`): this detector only judges users.
ATT&CK: T1078 Valid Accounts (initial-access, persistence), T1110 Brute Force.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from tapetum.config import UbaSection
from tapetum.detectors.common import (
    AlertIds,
    BoundedDict,
    by_time,
    check_state,
    fmt_duration,
    reading_state,
)
from tapetum.features.uba import (
    Geo,
    Login,
    SensitiveAssets,
    UbaRows,
    UserProfile,
    learn_login,
    login_features,
    note_novelty,
    prune_failures,
    shared_geo,
    user_of,
)
from tapetum.flows.meter import FlowBatch
from tapetum.records import Alert, AppEvent, AuthEvent

STATE_VERSION = 1
KINDS = ("unusual_time", "new_country", "impossible_travel", "sensitive_asset",
         "success_after_burst")  # fmt: skip
SIDS = {k: 9_000_120 + n for n, k in enumerate(KINDS)}
#: Which finding names an alert when several hold: the most specific and severe first.
PRIORITY = ("success_after_burst", "impossible_travel", "sensitive_asset", "new_country",
            "unusual_time")  # fmt: skip
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _hour_text(how: int) -> str:
    return f"{_DAYS[how // 24]} {how % 24:02d}:00 UTC"


class UbaDetector:
    name = "uba"

    def __init__(self, config: UbaSection | None = None, geo: Geo | None = None) -> None:
        self.config = c = config or UbaSection()
        self.geo = geo or shared_geo()
        self.assets = SensitiveAssets(list(c.sensitive_assets))
        self.burst_ns = int(c.burst_window_s * 1e9)
        #: Learnt: user -> profile (least recently active first).
        self.profiles_: BoundedDict[str, UserProfile] = BoundedDict(c.max_users)
        self.dropped_users = 0
        self.suppressed = 0
        self._last_alert: BoundedDict[str, int] = BoundedDict(c.max_users)
        self._pending: list[Alert] = []
        self._ids = AlertIds()

    # -- contract on feature rows ------------------------------------------------------------

    def features(self, flows: FlowBatch, events: Sequence[Any] = ()) -> UbaRows:
        """One row per successful login among the auth events, each against the profile as it
        would be after the earlier events of this input (learnt profiles are not changed)."""
        scratch: dict[str, UserProfile] = {}

        def profile(user: str) -> UserProfile:
            p = scratch.get(user)
            if p is None:
                known = self.profiles_.get(user)
                p = scratch[user] = known.clone() if known is not None else UserProfile()
            return p

        rows: list[Login] = []
        for e in _auth_only(events):
            x = self._step(e, profile)
            if x is not None:
                rows.append(x)
                if self.score(UbaRows([x]))[0] < 0.5:
                    learn_login(profile(x.user), x)
                else:
                    note_novelty(profile(x.user), x)
        return UbaRows(rows)

    def entities(self, rows: UbaRows) -> list[str]:
        return [f"user:{x.user}" for x in rows.logins]

    def _parts(self, x: Login) -> dict[str, float]:
        """Score (0..1, 0.5 = alert) of each finding about one login."""
        c = self.config
        out = dict.fromkeys(KINDS, 0.0)
        if x.history_logins >= c.min_history_logins:
            # 0.5 at the bar, 1 at probability mass 0.
            out["unusual_time"] = max(0.0, 1.0 - 0.5 * x.hour_tail_p / c.unusual_time_p)
        if x.new_country and x.located_logins >= c.min_country_logins:
            out["new_country"] = 1.0 - 0.5 * c.min_country_logins / x.located_logins
        if x.travel_km >= c.min_travel_km and x.travel_kmh > c.max_speed_kmh:
            out["impossible_travel"] = 1.0 - 0.5 * c.max_speed_kmh / x.travel_kmh
        if x.asset:
            bar = c.unusual_time_p * c.sensitive_time_factor
            first = 0.75 if x.asset_first and x.history_logins >= c.min_history_logins else 0.0
            odd = (
                max(0.0, 1.0 - 0.5 * x.hour_tail_p / bar)
                if x.history_logins >= c.min_history_logins
                else 0.0
            )
            out["sensitive_asset"] = max(first, odd)
        bar_f = max(float(c.burst_failures), 2.0 * x.usual_burst)
        if x.failures_before:
            out["success_after_burst"] = 1.0 - math.exp(-math.log(2.0) * x.failures_before / bar_f)
        return out

    def score(self, rows: UbaRows) -> np.ndarray:
        return np.array([max(self._parts(x).values()) for x in rows.logins], dtype=np.float64)

    def learn(self, rows: UbaRows) -> None:
        for x in rows.logins:
            p = self.profiles_.get(x.user)
            if p is None:
                p = UserProfile()
            self.profiles_.touch(x.user, p)
            learn_login(p, x)
        self.dropped_users += self.profiles_.trim()

    def explain(self, rows: UbaRows, idx: np.ndarray) -> list[str]:
        return [self._explain(rows.logins[k]) for k in idx.tolist()]

    def _explain(self, x: Login, parts: dict[str, float] | None = None) -> str:
        c = self.config
        parts = parts or self._parts(x)
        where = x.src_ip or "an unknown address"
        if x.country:
            where += f" ({x.country}" + (f", {x.asn}" if x.asn else "") + ")"
        onto = f" to {x.host}" if x.host else ""
        head = f"{x.user} logged in{onto} via {x.service} from {where} at {_hour_text(x.hour)}"
        found: list[str] = []
        for kind in PRIORITY:
            if parts[kind] < 0.5:
                continue
            if kind == "unusual_time" or (kind == "sensitive_asset" and not x.asset_first):
                pct = 100 * x.hour_tail_p
                found.append(
                    f"an hour at which {pct:.2g}% of this user's logins would fall under the "
                    f"profile of {x.history_logins} earlier logins "
                    f"(bar {100 * c.unusual_time_p:.2g}%)"
                    + (f" on sensitive asset {x.asset}" if kind == "sensitive_asset" else "")
                )
            elif kind == "new_country":
                known = ", ".join(x.known_countries) or "none"
                found.append(
                    f"a country never seen for this user ({x.located_logins} located logins "
                    f"from {known})"
                )
            elif kind == "impossible_travel":
                dt = (x.ts_ns - (x.prev_ts_ns or x.ts_ns)) / 1e9
                found.append(
                    f"{fmt_duration(dt)} after a login from {x.prev_ip} ({x.prev_country}), at "
                    f"least {x.travel_km:,.0f} km away: {x.travel_kmh:,.0f} km/h, faster than "
                    f"{c.max_speed_kmh:,.0f} km/h"
                )
            elif kind == "sensitive_asset":
                found.append(
                    f"the first login of this user to sensitive asset {x.asset} "
                    f"({x.history_logins} earlier logins)"
                )
            else:
                usual = f"; usual for this user: up to {x.usual_burst}" if x.usual_burst else ""
                found.append(
                    f"right after {x.failures_before} failed logins of this account within "
                    f"{fmt_duration(c.burst_window_s)}{usual}"
                )
        extra = []
        if x.new_device and x.history_logins:
            extra.append("a source address new for this user")
        if x.new_asn and x.history_logins:
            extra.append(f"a network new for this user ({x.asn})")
        tail = f"; also {', '.join(extra)}" if extra else ""
        return f"{head}: " + "; ".join(found or ["nothing unusual"]) + tail

    def state(self) -> dict[str, Any]:
        c = self.config
        return {
            "detector": self.name,
            "version": STATE_VERSION,
            "params": {
                "unusual_time_p": c.unusual_time_p,
                "min_history_logins": c.min_history_logins,
            },
            "profiles": {u: p.to_json() for u, p in self.profiles_.items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], config: UbaSection | None = None) -> UbaDetector:
        check_state(state, cls.name, STATE_VERSION)
        det = cls(config)
        with reading_state(cls.name):
            for u, p in state["profiles"].items():
                det.profiles_[str(u)] = UserProfile.from_json(p)
        return det

    # -- streaming ---------------------------------------------------------------------------

    def _step(self, e: AuthEvent, profile: Any) -> Login | None:
        """Fold one event into the profiles given by `profile(user)`; the login row of a
        success (its profile not yet updated with it)."""
        user = user_of(e)
        if user is None or e.outcome not in ("success", "failure"):
            return None
        p: UserProfile = profile(user)
        prune_failures(p, e.ts_ns, self.burst_ns)
        if e.outcome == "failure":
            p.failures.append(e.ts_ns)
            return None
        x = login_features(p, e, user, self.geo, self.assets, self.burst_ns)
        if x.country or p.last is None:  # travel is judged from the last located login
            p.last = (e.ts_ns, e.src_ip, x.country)
        p.failures.clear()  # the burst ended with this success
        return x

    def observe(self, flows: FlowBatch) -> None:
        return None

    def observe_events(self, events: Sequence[AppEvent]) -> None:
        return None

    def observe_auth(self, events: Sequence[AuthEvent]) -> None:
        def profile(user: str) -> UserProfile:
            p = self.profiles_.get(user)
            if p is None:
                p = UserProfile()
            self.profiles_.touch(user, p)
            return p

        for e in sorted(events, key=lambda e: e.ts_ns):
            x = self._step(e, profile)
            if x is None:
                continue
            parts = self._parts(x)
            if max(parts.values()) < 0.5:
                learn_login(self.profiles_[x.user], x)
                continue
            note_novelty(self.profiles_[x.user], x)
            alert = self._alert(x, parts)
            if alert is not None:
                self._pending.append(alert)
        self.dropped_users += self.profiles_.trim()

    def _alert(self, x: Login, parts: dict[str, float]) -> Alert | None:
        kind = next(k for k in PRIORITY if parts[k] >= 0.5)
        key = f"{x.user}|{kind}|{x.country if kind == 'new_country' else ''}|{x.asset}"
        last = self._last_alert.get(key)
        if last is not None and x.ts_ns - last < self.config.repeat_s * 1e9:
            self.suppressed += 1
            return None
        self._last_alert.touch(key, x.ts_ns)
        self._last_alert.trim()
        hits = [k for k in KINDS if parts[k] >= 0.5]
        score = max(parts.values())
        techniques = ["T1078"]
        tactics = ["initial-access", "persistence"]
        if "success_after_burst" in hits:
            techniques.insert(0 if kind == "success_after_burst" else 1, "T1110")
            tactics.append("credential-access")
        when = datetime.fromtimestamp(x.ts_ns / 1e9, UTC).isoformat()
        observed = {
            "hour_of_week": float(x.hour),
            "hour_tail_p": round(x.hour_tail_p, 6),
            "new_country": float(x.new_country),
            "travel_km": round(x.travel_km, 1),
            "travel_kmh": round(min(x.travel_kmh, 1e9), 1),
            "failures_before": float(x.failures_before),
            "sensitive_first_access": float(x.asset_first),
        }
        c = self.config
        baseline = {
            "history_logins": float(x.history_logins),
            "located_logins": float(x.located_logins),
            "unusual_time_p": c.unusual_time_p,
            "max_speed_kmh": c.max_speed_kmh,
            "failures_before": float(max(c.burst_failures, 2 * x.usual_burst)),
        }
        return Alert(
            alert_id=self._ids(f"uba|{key}|{x.ts_ns}|{when}"),
            ts_ns=x.ts_ns,
            signature=f"uba.{kind}",
            signature_id=SIDS[kind],
            category="brute-force" if kind == "success_after_burst" else "anomaly",
            severity=1 if kind in ("impossible_travel", "success_after_burst") else 2,
            score=score,
            explanation=self._explain(x, parts),
            entity=f"user:{x.user}",
            mitre_technique_id=tuple(techniques),
            mitre_tactic=tuple(tactics),
            src_ip=x.src_ip,
            dest_ip=x.dest_ip,
            first_ts_ns=x.prev_ts_ns if kind == "impossible_travel" else x.ts_ns,
            last_ts_ns=x.ts_ns,
            observed=observed,
            baseline=baseline,
        )

    def poll(self, watermark_ns: int | None = None) -> list[Alert]:
        out, self._pending = self._pending, []
        return by_time(out)

    def flush(self) -> list[Alert]:
        # Failure bursts do not carry over to another stream; profiles do.
        for p in self.profiles_.values():
            p.failures.clear()
        return self.poll(None)


def _auth_only(events: Sequence[Any]) -> list[AuthEvent]:
    return sorted((e for e in events if isinstance(e, AuthEvent)), key=lambda e: e.ts_ns)
