"""Brute force from flows: password guessing (one target) and password spraying (many targets).

Login attempts (`features.bruteforce`: connections to an authentication service in which both
sides spoke) are counted per source and service in fixed windows of data time. An attempt *looks
failed* when it ended after a few small exchanges. Per window and source:

- guessing (per target): failed-looking attempts on one host;
- spraying (per service): hosts with failed-looking attempts.

The count is discounted when the attempts differ in size (tools repeat the same exchange; people
do not) and when most attempts did not look failed. Web ports need `web_factor` times the evidence
and near-identical sizes; an HTTP exchange that was plain browsing (GET without credentials) is not
an attempt, one refused with 401/403 is. SSH is recognised on any port by its banner.

Rows below the threshold are learnt as the source's normal for the service; alerting rows are not.
Auth logs (a later source) will add `Attempts` with exact outcomes to the same windows.
ATT&CK: T1110.001 Password Guessing, T1110.003 Password Spraying (tactic credential-access).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tapetum.config import BruteforceSection
from tapetum.detectors.common import (
    AlertIds,
    BoundedDict,
    by_time,
    check_state,
    fmt_bytes,
    fmt_duration,
)
from tapetum.detectors.windows import NO_TIME, DataTimeWindows
from tapetum.features.bruteforce import (
    HTTP_AUTH,
    SSH,
    WEB,
    AttemptLimits,
    Attempts,
    BruteRows,
    aggregate,
    attempts_from_flows,
)
from tapetum.features.uba import SourceTally
from tapetum.flows.key import addr_text
from tapetum.flows.meter import FlowBatch
from tapetum.records import Alert, AppEvent, AuthEvent, HttpEvent, SshEvent

SIG_GUESSING = "bruteforce.guessing"
SIG_SPRAYING = "bruteforce.spraying"
SID_GUESSING = 9_000_010
SID_SPRAYING = 9_000_011
STATE_VERSION = 1
_LABELS = {
    "ssh": "SSH", "ftp": "FTP", "telnet": "Telnet", "rdp": "RDP", "smb": "SMB", "pop3": "POP3",
    "imap": "IMAP", "smtp-auth": "SMTP submission", "mysql": "MySQL", "postgres": "PostgreSQL",
    "mssql": "MS SQL", "vnc": "VNC", "web": "web", "http-auth": "HTTP authentication",
}  # fmt: skip


class BruteforceDetector:
    name = "bruteforce"

    def __init__(self, config: BruteforceSection | None = None, *, lag_s: float = 300.0) -> None:
        self.config = c = config or BruteforceSection()
        self.window_ns = int(c.window_s * 1e9)
        self.lag_ns = int(lag_s * 1e9)
        names = list(c.ports)
        for extra in (SSH, HTTP_AUTH, WEB):
            if extra not in names:
                names.append(extra)
        self.services = names
        self._code = {n: k for k, n in enumerate(names)}
        self._port_service = {int(p): self._code[n] for n, ports in c.ports.items() for p in ports}
        self._limits = AttemptLimits(c.max_packets, c.max_duration_s, dict(c.max_bytes_toclient))
        #: Learned: per "source|service", the most failed attempts on one target and the most
        #: targets with failed attempts seen in a window that did not alert.
        self.baseline_: dict[str, list[int]] = {}
        self.dropped_baselines = 0
        self.dropped_tags = 0
        self._tags: BoundedDict[int, int] = BoundedDict(c.max_tagged_flows)  # flow_id -> service
        self._plain_web: BoundedDict[int, None] = BoundedDict(c.max_tagged_flows)  # plain browsing
        self._windows: DataTimeWindows[list[Attempts]] = DataTimeWindows(
            self.window_ns, self.lag_ns, list
        )
        self._ids = AlertIds()
        # Auth logs: exact outcomes per (source, service) in half windows, judged two at a
        # time (hopping windows), so a burst across a window boundary is seen whole.
        self._auth: DataTimeWindows[dict[tuple[str, str], SourceTally]] = DataTimeWindows(
            max(1, self.window_ns // 2), int(c.auth_lag_s * 1e9), dict
        )
        # The last judged half window: (index, tallies, alerted keys, quiet keys to learn).
        self._auth_prev: tuple[
            int,
            dict[tuple[str, str], SourceTally],
            set[tuple[str, str]],
            dict[tuple[str, str], tuple[int, int]],
        ] = (NO_TIME, {}, set(), {})
        self.dropped_auth = 0

    # -- contract on feature rows ------------------------------------------------------------

    def features(self, flows: FlowBatch, events: Sequence[AppEvent] = ()) -> BruteRows:
        """Guessing and spraying rows of these flows (tagged by these events) as one window."""
        tags, plain = self._tags_of(events)
        return aggregate(self._attempts(flows, tags, frozenset(plain)))

    def entities(self, rows: BruteRows) -> list[str]:
        """The entity (source address) each row is about."""
        return [addr_text(int(h), int(lo)) for h, lo in zip(rows.src_hi, rows.src_lo, strict=True)]

    def _thresholds(self, rows: BruteRows) -> np.ndarray:
        c = self.config
        bar = np.where(rows.kind == 0, float(c.guess_attempts), float(c.spray_targets))
        web = rows.service == self._code[WEB]
        return np.where(web, bar * c.web_factor, bar)

    def _baseline(self, rows: BruteRows) -> np.ndarray:
        out = np.zeros(len(rows), dtype=np.float64)
        for k, key in enumerate(self._keys(rows)):
            b = self.baseline_.get(key)
            if b is not None:
                out[k] = b[int(rows.kind[k])]
        return out

    def _keys(self, rows: BruteRows) -> list[str]:
        return [
            f"{src}|{self.services[int(s)]}"
            for src, s in zip(self.entities(rows), rows.service.tolist(), strict=True)
        ]

    def evidence(self, rows: BruteRows) -> np.ndarray:
        """The count compared with the threshold: failed-looking attempts on one target
        (guessing) or targets (spraying), discounted for dissimilar sizes and few failures."""
        c = self.config
        count = np.where(rows.kind == 0, rows.failed_attempts, rows.distinct_targets).astype(float)
        over = np.clip((rows.bytes_cv - c.similar_cv) / max(1e-9, 1.0 - c.similar_cv), 0.0, 1.0)
        similarity = 1.0 - 0.5 * over
        web = rows.service == self._code[WEB]
        strict = (rows.bytes_cv > c.web_max_cv) | (rows.busy_ratio < c.web_min_busy)
        similarity = np.where(web & strict, 0.0, similarity)
        ratio = np.minimum(1.0, rows.failure_ratio / max(1e-9, c.min_failure_ratio))
        return np.asarray(count * similarity * ratio)

    def score(self, rows: BruteRows) -> np.ndarray:
        """0..1: 0.5 at the threshold (or twice the source's normal, if higher), → 1 beyond."""
        if len(rows) == 0:
            return np.zeros(0)
        bar = np.maximum(self._thresholds(rows), 2.0 * self._baseline(rows))
        return np.asarray(1.0 - np.exp(-math.log(2.0) * self.evidence(rows) / bar))

    def learn(self, rows: BruteRows) -> None:
        for k, key in enumerate(self._keys(rows)):
            b = self.baseline_.get(key)
            if b is None:
                if len(self.baseline_) >= self.config.max_baselines:
                    self.dropped_baselines += 1
                    continue
                b = self.baseline_[key] = [0, 0]
            kind = int(rows.kind[k])
            n = int(rows.failed_attempts[k] if kind == 0 else rows.distinct_targets[k])
            b[kind] = max(b[kind], n)

    def explain(self, rows: BruteRows, idx: np.ndarray) -> list[str]:
        base = self._baseline(rows)
        keys = self._keys(rows)
        out = []
        for k in idx.tolist():
            src = addr_text(int(rows.src_hi[k]), int(rows.src_lo[k]))
            svc = _LABELS.get(
                self.services[int(rows.service[k])], self.services[int(rows.service[k])]
            )
            dur = fmt_duration((int(rows.last_ns[k]) - int(rows.first_ns[k])) / 1e9)
            n, failed = int(rows.attempts[k]), int(rows.failed_attempts[k])
            pct = 100.0 * failed / max(n, 1)
            cv = 100 * float(rows.bytes_cv[k])
            spread = "under 1%" if cv < 1 else f"{cv:.0f}%"
            median = fmt_bytes(float(rows.bytes_median[k]))
            size = f"median {median} per attempt, sizes vary by {spread}"
            window = fmt_duration(self.config.window_s)
            normal = int(base[k])
            seen = "" if keys[k] in self.baseline_ else " (no earlier activity seen)"
            if rows.kind[k] == 0:
                dst = addr_text(int(rows.dst_hi[k]), int(rows.dst_lo[k]))
                what = (
                    f"{src} made {n:,} {svc} connections to {dst}:{int(rows.dport[k])} in {dur}; "
                    f"{failed:,} ({pct:.0f}%) ended after a few small exchanges, as failed "
                    f"logins do ({size})"
                )
                norm = f"normal for this host: {normal:,} per {window}{seen}"
            else:
                t = int(rows.distinct_targets[k])
                what = (
                    f"{src} tried {svc} logins on {t:,} hosts in {dur}, at most "
                    f"{int(rows.max_failed_per_target[k]):,} per host; {failed:,} of {n:,} "
                    f"attempts ({pct:.0f}%) ended after a few small exchanges ({size})"
                )
                norm = f"normal for this host: {normal:,} hosts per {window}{seen}"
            out.append(f"{what}; {norm}")
        return out

    def state(self) -> dict[str, Any]:
        c = self.config
        return {
            "detector": self.name,
            "version": STATE_VERSION,
            "params": {
                "window_s": c.window_s,
                "guess_attempts": c.guess_attempts,
                "spray_targets": c.spray_targets,
            },
            "baseline": self.baseline_,
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], config: BruteforceSection | None = None
    ) -> BruteforceDetector:
        check_state(state, cls.name, STATE_VERSION)
        det = cls(config)
        det.baseline_ = {str(k): [int(x) for x in v] for k, v in state["baseline"].items()}
        return det

    # -- streaming ---------------------------------------------------------------------------

    def _tags_of(self, events: Sequence[AppEvent]) -> tuple[dict[int, int], set[int]]:
        """Services the parsers found per flow_id, and web flows that were plain browsing."""
        tags: dict[int, int] = {}
        plain: set[int] = set()  # flows with a GET; one POST or 401 in the flow overrides it
        auth: set[int] = set()
        for e in events:
            fid = e.flow.flow_id
            if isinstance(e, SshEvent):
                tags[fid] = self._code[SSH]
            elif isinstance(e, HttpEvent):
                if e.status in (401, 403) or e.authorization_basic:
                    auth.add(fid)
                elif e.http_method in ("GET", "HEAD", "OPTIONS"):
                    plain.add(fid)  # browsing; a POST may be a login form and stays "web"
        for fid in auth:
            tags[fid] = self._code[HTTP_AUTH]
        posted = {
            e.flow.flow_id for e in events if isinstance(e, HttpEvent) and e.http_method == "POST"
        }
        return tags, plain - auth - posted

    def _attempts(self, flows: FlowBatch, tags: dict[int, int], plain: frozenset[int]) -> Attempts:
        return attempts_from_flows(
            flows, self.services, self._port_service, tags, self._limits, plain
        )

    def observe_events(self, events: Sequence[AppEvent]) -> None:
        """Remember which flows the parsers identified (their flow ends later)."""
        tags, plain = self._tags_of(events)
        for fid, code in tags.items():
            self._tags[fid] = code
            self._plain_web.pop(fid, None)
        for fid in plain:
            if fid not in self._tags:
                self._plain_web[fid] = None
        self.dropped_tags += self._tags.trim() + self._plain_web.trim()

    def observe(self, flows: FlowBatch) -> None:
        if len(flows) == 0:
            return
        self._windows.advance(int(flows.num["end_ns"].max()))
        fids = flows.num["flow_id"].tolist()
        tags = {f: c for f in fids if (c := self._tags.pop(f, None)) is not None}
        plain = frozenset(f for f in fids if f in self._plain_web)
        for f in plain:
            del self._plain_web[f]
        a = self._attempts(flows, tags, plain)
        if len(a) == 0:
            return
        for parts, m in self._windows.split(a.start_ns):
            parts.append(a.take(m))

    def poll(self, watermark_ns: int | None = None) -> list[Alert]:
        auth = self._finalize_auth(self._auth.complete(watermark_ns))
        return by_time(self._finalize(self._windows.complete(watermark_ns, self.lag_ns)) + auth)

    def flush(self) -> list[Alert]:
        alerts = by_time(self._finalize(self._windows.flush()) + self._finalize_auth(
            self._auth.flush()))  # fmt: skip
        self._tags.clear()
        self._plain_web.clear()
        return alerts

    def _finalize(self, windows: list[int]) -> list[Alert]:
        alerts: list[Alert] = []
        for w in windows:
            rows = aggregate(Attempts.concat(self._windows.pop(w)))
            if len(rows) == 0:
                continue
            scores = self.score(rows)
            hit = scores >= 0.5
            idx = np.flatnonzero(hit)
            texts = self.explain(rows, idx)
            for k, text in zip(idx.tolist(), texts, strict=True):
                alerts.append(self._alert(rows, k, float(scores[k]), text, w))
            # Learn only what did not alert: an attack cannot raise its own baseline.
            self.learn(rows.take(~hit))
        return by_time(alerts)

    def _alert(self, rows: BruteRows, k: int, score: float, text: str, window: int) -> Alert:
        src = addr_text(int(rows.src_hi[k]), int(rows.src_lo[k]))
        guessing = rows.kind[k] == 0
        svc = self.services[int(rows.service[k])]
        dst = addr_text(int(rows.dst_hi[k]), int(rows.dst_lo[k])) if guessing else None
        one = rows.take(np.array([k]))
        bar = float(np.maximum(self._thresholds(one), 2.0 * self._baseline(one))[0])
        evidence = float(self.evidence(one)[0])
        severity = 2 if evidence >= 3 * bar else 3
        sig = SIG_GUESSING if guessing else SIG_SPRAYING
        key = f"{sig}|{src}|{svc}|{dst}|{window}|{rows.first_ns[k]}"
        dur = (int(rows.last_ns[k]) - int(rows.first_ns[k])) / 1e9
        unit = "failed_attempts" if guessing else "distinct_targets"
        base = self.baseline_.get(f"{src}|{svc}", [0, 0])[0 if guessing else 1]
        return Alert(
            alert_id=self._ids(key),
            ts_ns=int(rows.first_ns[k]),
            signature=sig,
            signature_id=SID_GUESSING if guessing else SID_SPRAYING,
            category="brute-force",
            severity=severity,
            score=score,
            explanation=text,
            entity=src,
            mitre_technique_id=("T1110.001",) if guessing else ("T1110.003",),
            mitre_tactic=("credential-access",),
            src_ip=src,
            dest_ip=dst,
            dest_port=int(rows.dport[k]),
            proto="TCP",
            first_ts_ns=int(rows.first_ns[k]),
            last_ts_ns=int(rows.last_ns[k]),
            observed={
                "attempts": float(rows.attempts[k]),
                "failed_attempts": float(rows.failed_attempts[k]),
                "failure_ratio": round(float(one.failure_ratio[0]), 4),
                "distinct_targets": float(rows.distinct_targets[k]),
                "max_failed_per_target": float(rows.max_failed_per_target[k]),
                "bytes_median": float(rows.bytes_median[k]),
                "bytes_cv": round(float(rows.bytes_cv[k]), 4),
                "busy_ratio": round(float(rows.busy_ratio[k]), 4),
                "duration_s": round(dur, 6),
            },
            baseline={unit: float(base), "threshold": bar},
        )

    # -- auth logs: exact outcomes -----------------------------------------------------------

    #: User names tallied by name per source and window (further ones are counted only).
    MAX_AUTH_USERS = 1000

    def observe_auth(self, events: Sequence[AuthEvent]) -> None:
        """Failed and successful logins of auth logs, tallied per (source, service) and window.
        Events without a source address (local logins) are not brute force from somewhere."""
        for e in events:
            if e.src_ip is None or e.outcome not in ("success", "failure"):
                continue
            self._auth.advance(e.ts_ns)
            tallies = self._auth.at(e.ts_ns // self._auth.window_ns)
            t = tallies.get((e.src_ip, e.service))
            if t is None:
                if len(tallies) >= self.config.max_auth_sources:
                    self.dropped_auth += 1
                    continue
                t = tallies[(e.src_ip, e.service)] = SourceTally(e.ts_ns, e.ts_ns)
            t.add(e, self.MAX_AUTH_USERS)

    def _finalize_auth(self, windows: list[int]) -> list[Alert]:
        """Per source and service, over each half window and the one before: spraying when
        many user names failed a few times each and none carries half the failures, else
        guessing when the failures reach the bar (the source's normal, doubled, if higher).
        What stays below is learnt as the source's normal one half window later, unless the
        next half window alerts (the start of a burst is not normal)."""
        c = self.config
        alerts: list[Alert] = []
        for w in windows:
            cur = self._auth.pop(w)
            prev_w, prev, prev_hit, prev_quiet = self._auth_prev
            both = dict(cur)
            if prev_w == w - 1:
                for k, t in prev.items():
                    both[k] = t.merged(cur[k]) if k in cur else t
            else:
                self._learn_auth(prev_quiet)
                prev_hit, prev_quiet = set(), {}
            hit: set[tuple[str, str]] = set()
            quiet: dict[tuple[str, str], tuple[int, int]] = {}
            for (src, svc), t in sorted(both.items()):
                if (src, svc) not in cur:
                    continue  # judged with the half window before
                base = self.baseline_.get(f"{src}|auth:{svc}", [0, 0])
                users, failed = len(t.failures), t.failed
                # Spraying: many names, few tries each, and no one name carrying most of them
                # (root ×130 plus a few other names is guessing root).
                spray = (users >= c.auth_spray_users
                         and t.median_per_user() <= c.auth_spray_max_per_user
                         and 2 * t.max_per_user() < failed)  # fmt: skip
                n, bar = (
                    (users, max(float(c.auth_spray_users), 2.0 * base[1]))
                    if spray
                    else (failed, max(float(c.auth_guess_failures), 2.0 * base[0]))
                )
                score = 1.0 - math.exp(-math.log(2.0) * n / bar)
                if score < 0.5:
                    quiet[(src, svc)] = (failed, users)
                    continue
                hit.add((src, svc))
                if (src, svc) in prev_hit:
                    # The burst alerted one half window ago: again only if this half alone
                    # reaches the bar or a login from the source succeeded.
                    alone = cur[(src, svc)]
                    if (len(alone.failures) if spray else alone.failed) < bar and not (
                        alone.successes
                    ):
                        continue
                alerts.append(self._auth_alert(src, svc, t, spray, score, bar, base, w))
            self._learn_auth({k: v for k, v in prev_quiet.items() if k not in hit})
            self._auth_prev = (w, cur, hit, quiet)
        if windows and not self._auth.open:  # end of input: nothing follows
            self._learn_auth(self._auth_prev[3])
            self._auth_prev = (NO_TIME, {}, set(), {})
        return alerts

    def _learn_auth(self, quiet: dict[tuple[str, str], tuple[int, int]]) -> None:
        for (src, svc), (failed, users) in quiet.items():
            key = f"{src}|auth:{svc}"
            if key not in self.baseline_ and len(self.baseline_) >= self.config.max_baselines:
                self.dropped_baselines += 1
                continue
            b = self.baseline_.setdefault(key, [0, 0])
            b[0], b[1] = max(b[0], failed), max(b[1], users)

    def _auth_alert(self, src: str, svc: str, t: SourceTally, spray: bool, score: float,
                    bar: float, base: list[int], window: int) -> Alert:  # fmt: skip
        label = _LABELS.get(svc, svc)
        users, failed = len(t.failures), t.failed
        dur = fmt_duration((t.last_ns - t.first_ns) / 1e9)
        hosts = ", ".join(h for h, _ in t.hosts.most_common(3)) or "the logging host"
        top = t.failures.most_common(8)
        names = ", ".join(f"{u} ×{k}" for u, k in top) + (", …" if users > len(top) else "")
        ok = sum(t.successes.values())
        won = (f"; then {ok} login(s) succeeded as "
               f"{', '.join(u for u, _ in t.successes.most_common(3))}"
               if ok else "; no login from it succeeded")  # fmt: skip
        window_text = fmt_duration(self.config.window_s)
        if spray:
            what = (f"{src} tried {users:,} user names with {label} on {hosts} in {dur} "
                    f"(auth log), {t.median_per_user():g} failures per name (median), at most "
                    f"{t.max_per_user()}: {names}")  # fmt: skip
            norm = f"normal for this source: {base[1]:,} names per {window_text}"
        else:
            what = (f"{src} failed {failed:,} {label} logins on {hosts} in {dur} (auth log), "
                    f"{users:,} user name(s): {names}")  # fmt: skip
            norm = f"normal for this source: {base[0]:,} failures per {window_text}"
        sig = SIG_SPRAYING if spray else SIG_GUESSING
        severity = 1 if ok else (2 if (users if spray else failed) >= 3 * bar else 3)
        return Alert(
            alert_id=self._ids(f"{sig}|auth|{src}|{svc}|{window}|{t.first_ns}"),
            ts_ns=t.first_ns,
            signature=sig,
            signature_id=SID_SPRAYING if spray else SID_GUESSING,
            category="brute-force",
            severity=severity,
            score=score,
            explanation=f"{what}{won}; {norm}",
            entity=src,
            mitre_technique_id=("T1110.003",) if spray else ("T1110.001",),
            mitre_tactic=("credential-access",),
            src_ip=src,
            dest_ip=t.dest_ip,
            first_ts_ns=t.first_ns,
            last_ts_ns=t.last_ns,
            observed={
                "failed_logins": float(failed),
                "distinct_users": float(users),
                "max_failures_per_user": float(t.max_per_user()),
                "successful_logins": float(ok),
                "duration_s": round((t.last_ns - t.first_ns) / 1e9, 6),
            },
            baseline={
                "distinct_users" if spray else "failed_logins": float(base[1 if spray else 0]),
                "threshold": bar,
            },
        )
