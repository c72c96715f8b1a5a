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
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from tapetum.config import BruteforceSection
from tapetum.detectors.common import AlertIds, fmt_bytes, fmt_duration
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
from tapetum.flows.key import addr_text
from tapetum.flows.meter import FlowBatch
from tapetum.records import Alert, AppEvent, HttpEvent, SshEvent

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
        self._tags: OrderedDict[int, int] = OrderedDict()  # flow_id -> service code
        self._plain_web: OrderedDict[int, None] = OrderedDict()  # flow_ids of plain browsing
        self._windows: dict[int, list[Attempts]] = {}
        self._ids = AlertIds()
        self._watermark = np.iinfo(np.int64).min

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
        from tapetum.errors import ModelError

        if state.get("detector") != cls.name or state.get("version") != STATE_VERSION:
            raise ModelError(
                f"bruteforce detector state version {state.get('version')} does not match "
                f"this Tapetum's version {STATE_VERSION}; learn again"
            )
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
        cap = self.config.max_tagged_flows
        while len(self._tags) > cap:
            self._tags.popitem(last=False)
            self.dropped_tags += 1
        while len(self._plain_web) > cap:
            self._plain_web.popitem(last=False)
            self.dropped_tags += 1

    def observe(self, flows: FlowBatch) -> None:
        if len(flows) == 0:
            return
        self._watermark = max(self._watermark, int(flows.num["end_ns"].max()))
        fids = flows.num["flow_id"].tolist()
        tags = {f: c for f in fids if (c := self._tags.pop(f, None)) is not None}
        plain = frozenset(f for f in fids if f in self._plain_web)
        for f in plain:
            del self._plain_web[f]
        a = self._attempts(flows, tags, plain)
        if len(a) == 0:
            return
        win = a.start_ns // self.window_ns
        for w in np.unique(win).tolist():
            self._windows.setdefault(int(w), []).append(a.take(win == w))

    def poll(self, watermark_ns: int | None = None) -> list[Alert]:
        wm = self._watermark if watermark_ns is None else max(self._watermark, watermark_ns)
        done = [w for w in self._windows if (w + 1) * self.window_ns + self.lag_ns < wm]
        return self._finalize(sorted(done))

    def flush(self) -> list[Alert]:
        alerts = self._finalize(sorted(self._windows))
        self._watermark = np.iinfo(np.int64).min  # a new stream may start at any time
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
        alerts.sort(key=lambda a: (a.ts_ns, a.alert_id))
        return alerts

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
