"""Hosts resolving algorithmically generated domains (DGA malware looking for its C2).

ATT&CK T1568.002 Dynamic Resolution: Domain Generation Algorithms (command-and-control).

From DNS transactions (`DnsEvent`), per querying host (the client, `flow.src_ip`) and fixed
windows of data time: the distinct registered domains whose label the character model
(`features.dga`) finds generated, and the NXDOMAIN answers (count, ratio, distinct domains).
A DGA-infected host tries many generated names, most of which were never registered.

- `dga.domains`: at least `min_dga_domains` distinct generated-looking registered domains in a
  window (and more than `baseline_factor` x the host's own level).
- `dga.nxdomain_burst`: distinct NXDOMAIN domains above an absolute floor and above the host's
  own level (when the names themselves do not look generated, e.g. a dictionary DGA). One alert
  per host and window: `dga.domains` takes precedence and reports the NXDOMAIN side too.

mDNS/LLMNR (ports 5353/5355), reverse lookups, names without a public suffix and names under
local zones never count. IDN (xn--) labels are counted but not scored; malformed names are
counted (and reported) but not scored. Windows that do not alert are learnt as the host's level
(a decayed peak), so an alerting burst cannot teach itself normal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tapetum.config import DgaSection
from tapetum.detectors.common import AlertIds, by_time, check_state, fmt_duration, reading_state
from tapetum.detectors.windows import DataTimeWindows
from tapetum.errors import ModelError
from tapetum.features.dga import (
    LINK_LOCAL_DNS_PORTS,
    DgaRows,
    HostWindow,
    NameFilter,
    NameScorer,
    Prepared,
    load_model,
    rows_from,
    schema_hash,
)
from tapetum.flows.meter import FlowBatch
from tapetum.records import Alert, AppEvent, DnsEvent

SIG_DOMAINS = "dga.domains"
SIG_NXDOMAIN = "dga.nxdomain_burst"
SID_DOMAINS = 9_000_030
SID_NXDOMAIN = 9_000_031
STATE_VERSION = 1
TECHNIQUE = ("T1568.002",)
TACTIC = ("command-and-control",)
_LN2 = math.log(2.0)


class DgaDetector:
    name = "dga"

    def __init__(self, config: DgaSection | None = None, *, lag_s: float = 300.0) -> None:
        self.config = config or DgaSection()
        self.window_ns = int(self.config.window_s * 1e9)
        self.lag_ns = int(lag_s * 1e9)
        self.scorer = NameScorer(load_model())
        self.threshold = self.config.name_threshold or self.scorer.model.threshold
        self.filter = NameFilter(
            tuple(z.strip(".").lower() for z in self.config.local_zones),
            self.config.skip_private_suffixes,
        )
        #: Learned, per host: [dga_domains level, nx_domains level, nx_ratio level,
        #: windows learnt, last window learnt]. Levels are decayed peaks of non-alerting windows.
        self.baseline_: dict[str, list[float]] = {}
        #: What the memory caps dropped: hosts per window, names per host, baseline hosts.
        self.dropped_: dict[str, int] = {"hosts": 0, "names": 0, "baseline_hosts": 0}
        self._windows: DataTimeWindows[dict[str, HostWindow]] = DataTimeWindows(
            self.window_ns, self.lag_ns, dict
        )
        self._ids = AlertIds()

    # -- contract on feature rows ------------------------------------------------------------

    def _fold(self, events: Sequence[AppEvent],
              into: DataTimeWindows[dict[str, HostWindow]] | None,
              one: dict[str, HostWindow] | None = None) -> None:  # fmt: skip
        """Count DNS events into host windows (`into` keyed by window, or all into `one`)."""
        todo: list[tuple[DnsEvent, Prepared]] = []
        for e in events:
            if not isinstance(e, DnsEvent):
                continue
            if e.flow.dest_port in LINK_LOCAL_DNS_PORTS or e.flow.src_port in LINK_LOCAL_DNS_PORTS:
                continue
            p = self.filter.classify(e.rrname)
            if p is not None:
                todo.append((e, p))
        if not todo:
            return
        scorable = [self.filter.scorable(p) for _, p in todo]
        scores = self.scorer.scores(
            [p.label for (_, p), ok in zip(todo, scorable, strict=True) if ok]
        )
        it = iter(scores)
        cap_hosts, cap_names = self.config.max_hosts, self.config.max_names_per_host
        for (e, p), ok in zip(todo, scorable, strict=True):
            s = next(it) if ok else math.nan
            if one is not None:
                hosts = one
            else:
                assert into is not None
                hosts = into.at(e.ts_ns // self.window_ns)
            hw = hosts.get(e.flow.src_ip)
            if hw is None:
                if len(hosts) >= cap_hosts:
                    self.dropped_["hosts"] += 1
                    continue
                hw = hosts[e.flow.src_ip] = HostWindow(e.ts_ns, e.ts_ns)
            before = hw.dropped_names
            answered = e.type == "answer"
            hw.add(e.ts_ns, p, s, answered, answered and e.rcode == "NXDOMAIN", cap_names)
            self.dropped_["names"] += hw.dropped_names - before

    def features(self, flows: FlowBatch, events: Sequence[AppEvent] = ()) -> DgaRows:
        """Rows of these DNS events taken as one window (flows are not used)."""
        hosts: dict[str, HostWindow] = {}
        self._fold(events, None, hosts)
        return rows_from(hosts, self.threshold)

    def entities(self, rows: DgaRows) -> list[str]:
        return list(rows.host)

    def _levels(self, rows: DgaRows) -> np.ndarray:
        """(rows, 3): the hosts' learnt levels (dga domains, nx domains, nx ratio); 0 if new."""
        out = np.zeros((len(rows), 3))
        for k, h in enumerate(rows.host):
            b = self.baseline_.get(h)
            if b is not None:
                out[k] = b[:3]
        return out

    def _bars(self, rows: DgaRows) -> tuple[np.ndarray, np.ndarray]:
        lv = self._levels(rows)
        f = self.config.baseline_factor
        dga_bar = np.maximum(float(self.config.min_dga_domains), f * lv[:, 0])
        nx_bar = np.maximum(float(self.config.nxdomain_floor), f * lv[:, 1])
        return dga_bar, nx_bar

    def _kind_scores(self, rows: DgaRows) -> tuple[np.ndarray, np.ndarray]:
        dga_bar, nx_bar = self._bars(rows)
        s_dga = 1.0 - np.exp(-_LN2 * rows.dga_domains / dga_bar)
        s_nx = 1.0 - np.exp(-_LN2 * rows.nx_domains / nx_bar)
        return s_dga, s_nx

    def score(self, rows: DgaRows) -> np.ndarray:
        """0..1 per row: 0.5 when the DGA-like (or NXDOMAIN) count reaches its bar, -> 1 beyond."""
        if len(rows) == 0:
            return np.zeros(0)
        s_dga, s_nx = self._kind_scores(rows)
        return np.asarray(np.maximum(s_dga, s_nx))

    def learn(self, rows: DgaRows) -> None:
        decay = self.config.baseline_decay
        ratio = rows.nx_ratio
        for k, h in enumerate(rows.host):
            window = int(rows.first_ns[k]) // self.window_ns
            b = self.baseline_.get(h)
            if b is None:
                b = self.baseline_[h] = [0.0, 0.0, 0.0, 0.0, float(window)]
            obs = (float(rows.dga_domains[k]), float(rows.nx_domains[k]), float(ratio[k]))
            for i in range(3):
                b[i] = round(max(b[i] * decay, obs[i]), 6)
            b[3] += 1
            b[4] = max(b[4], float(window))
        self._bound_baseline()

    def _bound_baseline(self) -> None:
        cap = self.config.max_baseline_hosts
        if len(self.baseline_) <= cap:
            return
        # Forget the least recently learnt hosts (a tenth more than needed: amortised cost).
        excess = len(self.baseline_) - cap + cap // 10
        oldest = sorted(self.baseline_, key=lambda h: (self.baseline_[h][4], h))[:excess]
        for h in oldest:
            del self.baseline_[h]
        self.dropped_["baseline_hosts"] += len(oldest)

    def explain(self, rows: DgaRows, idx: np.ndarray) -> list[str]:
        if len(idx) == 0:
            return []
        lv = self._levels(rows)
        dga_bar, nx_bar = self._bars(rows)
        s_dga, s_nx = self._kind_scores(rows)
        window = fmt_duration(self.config.window_s)
        out = []
        for k in np.asarray(idx).tolist():
            h = rows.host[k]
            span = fmt_duration((int(rows.last_ns[k]) - int(rows.first_ns[k])) / 1e9)
            n_dga, n_nx = int(rows.dga_domains[k]), int(rows.nx_domains[k])
            ratio = float(rows.nx_ratio[k])
            resp, nxr = int(rows.responses[k]), int(rows.nx_responses[k])
            seen = h in self.baseline_
            # Same choice as the alert's signature: generated names first, NXDOMAIN otherwise.
            if s_dga[k] >= 0.5 or s_dga[k] >= s_nx[k]:
                what = (
                    f"{h} queried {n_dga:,} distinct DGA-like domains in {span} "
                    f"(of {int(rows.distinct_domains[k]):,} domains, {int(rows.queries[k]):,} "
                    f"queries; model score >= {self.threshold:.2f})"
                )
                if n_dga:
                    what += f", {int(rows.dga_nx_domains[k]):,} of them answered NXDOMAIN"
                bar = f"alert at {dga_bar[k]:.0f} per {window}"
            else:
                what = (
                    f"{h} got NXDOMAIN for {n_nx:,} distinct domains in {span} "
                    f"(of {int(rows.distinct_domains[k]):,} domains queried; "
                    f"{n_dga:,} look generated)"
                )
                bar = f"alert at {nx_bar[k]:.0f} NXDOMAIN domains per {window}"
            ex = rows.examples[k]
            if ex:
                names = ", ".join(f"{n} ({s:.2f}{', NXDOMAIN' if nx else ''})" for n, s, nx in ex)
                what += f"; e.g. {names}"
            nx_text = (
                f"NXDOMAIN for {n_nx:,} distinct domains, {nxr:,} of {resp:,} answers ({ratio:.0%})"
            )
            if seen:
                normal = (
                    f"normal for this host: {lv[k, 0]:.0f} DGA-like and {lv[k, 1]:.0f} NXDOMAIN "
                    f"domains per {window}, NXDOMAIN ratio {lv[k, 2]:.0%}"
                )
            else:
                normal = "no earlier windows learnt for this host"
            extra = ""
            if int(rows.malformed[k]):
                extra += f"; {int(rows.malformed[k]):,} malformed names"
            if int(rows.dropped_names[k]):
                extra += f"; {int(rows.dropped_names[k]):,} further names not tracked (cap)"
            out.append(f"{what}; {nx_text}; {normal}; {bar}{extra}")
        return out

    def state(self) -> dict[str, Any]:
        return {
            "detector": self.name,
            "version": STATE_VERSION,
            "params": {
                "window_s": self.config.window_s,
                "min_dga_domains": self.config.min_dga_domains,
                "nxdomain_floor": self.config.nxdomain_floor,
                "baseline_factor": self.config.baseline_factor,
                "name_threshold": self.threshold,
            },
            "model": {
                "feature_schema_hash": schema_hash(),
                "version": self.scorer.model.meta.get("version"),
            },
            "baseline": self.baseline_,
            "dropped": dict(self.dropped_),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], config: DgaSection | None = None) -> DgaDetector:
        check_state(state, cls.name, STATE_VERSION)
        det = cls(config)
        with reading_state(cls.name):
            det.baseline_ = {
                str(h): [float(x) for x in v] for h, v in dict(state["baseline"]).items()
            }
            det.dropped_.update({str(k): int(v) for k, v in state.get("dropped", {}).items()})
        if any(len(v) != 5 for v in det.baseline_.values()):
            raise ModelError("dga detector state is damaged: baseline rows need 5 values")
        return det

    # -- streaming ---------------------------------------------------------------------------

    def observe(self, flows: FlowBatch) -> None:
        """Flows only move the clock: the evidence is in the DNS events."""
        if len(flows):
            self._windows.advance(int(flows.num["end_ns"].max()))

    def observe_events(self, events: Sequence[AppEvent]) -> None:
        if not events:
            return
        self._windows.advance(max(e.ts_ns for e in events))
        self._fold(events, self._windows)

    def poll(self, watermark_ns: int | None = None) -> list[Alert]:
        return self._finalize(self._windows.complete(watermark_ns, self.lag_ns))

    def flush(self) -> list[Alert]:
        return self._finalize(self._windows.flush())

    def _finalize(self, windows: list[int]) -> list[Alert]:
        alerts: list[Alert] = []
        for w in windows:
            rows = rows_from(self._windows.pop(w), self.threshold)
            if len(rows) == 0:
                continue
            scores = self.score(rows)
            hit = scores >= 0.5
            idx = np.flatnonzero(hit)
            s_dga, _ = self._kind_scores(rows)
            texts = self.explain(rows, idx)
            for k, text in zip(idx.tolist(), texts, strict=True):
                alerts.append(
                    self._alert(rows, k, float(scores[k]), bool(s_dga[k] >= 0.5), text, w)
                )
            self.learn(rows.take(~hit))  # an alerting window cannot raise its own bar
        return by_time(alerts)

    def _alert(self, rows: DgaRows, k: int, score: float, domains: bool, text: str,
               window: int) -> Alert:  # fmt: skip
        h = rows.host[k]
        sig = SIG_DOMAINS if domains else SIG_NXDOMAIN
        lv = self._levels(rows.take(np.array([k])))[0]
        dga_bar, nx_bar = self._bars(rows.take(np.array([k])))
        n_dga, n_nx = int(rows.dga_domains[k]), int(rows.nx_domains[k])
        if domains:
            mostly_nx = rows.dga_nx_domains[k] * 2 >= n_dga
            severity = 1 if n_dga >= 4 * dga_bar[0] and mostly_nx else 2
        else:
            severity = 2 if n_nx >= 4 * nx_bar[0] else 3
        dur = (int(rows.last_ns[k]) - int(rows.first_ns[k])) / 1e9
        return Alert(
            alert_id=self._ids(f"{sig}|{h}|{window}|{int(rows.first_ns[k])}"),
            ts_ns=int(rows.first_ns[k]),
            signature=sig,
            signature_id=SID_DOMAINS if domains else SID_NXDOMAIN,
            category="dga",
            severity=severity,
            score=score,
            explanation=text,
            entity=h,
            mitre_technique_id=TECHNIQUE,
            mitre_tactic=TACTIC,
            src_ip=h,
            first_ts_ns=int(rows.first_ns[k]),
            last_ts_ns=int(rows.last_ns[k]),
            observed={
                "dga_domains": float(n_dga),
                "dga_nxdomain_domains": float(rows.dga_nx_domains[k]),
                "nxdomain_domains": float(n_nx),
                "nxdomain_ratio": round(float(rows.nx_ratio[k]), 6),
                "distinct_domains": float(rows.distinct_domains[k]),
                "queries": float(rows.queries[k]),
                "duration_s": round(dur, 6),
            },
            baseline={
                "dga_domains": float(lv[0]),
                "nxdomain_domains": float(lv[1]),
                "nxdomain_ratio": float(lv[2]),
                "dga_domains_threshold": float(dga_bar[0]),
                "nxdomain_domains_threshold": float(nx_bar[0]),
            },
        )
