"""DNS tunnels and exfiltration over DNS.

Per (querying host, parent domain) in windows of data time (`features.dnstunnel`):

- `dnstunnel.tunnel` (T1071.004, command-and-control): many distinct long high-entropy
  subdomains of one parent domain, weighted up by a TXT/NULL/CNAME/MX-heavy query mix and by
  volume. Evidence = distinct subdomains x shape (0..1: long, high-entropy names) x (1 + share
  of data-carrying query types) x (1 + volume / `volume_bytes`, capped at 2).
- `dnstunnel.exfil` (T1048, exfiltration): the characters of distinct encoded-looking
  subdomains sent to one parent domain (upstream data hidden in names) are large.

Each score is 1 - 2^(-evidence / bar): 0.5 at the bar. The bar is the configured minimum or twice
the host's own largest evidence in windows that did not alert (its baseline), whichever is
higher; for a parent domain that many hosts query (CDN, cloud, telemetry: many hosts with few
names each) it is `common_domain_factor` times higher. Reverse DNS, mDNS/LLMNR, DNS-SD names
and allowlisted zones (anti-virus, DNS block lists) are never counted.

A window is scored when the watermark has passed its end by the meter's longest idle timeout
(DNS events arrive no later than their flow ends), or at end of input. Rows that alert are not
learnt. Memory: pairs per window, names per pair, hosts and domains are capped; what the caps
dropped is counted in `dropped_`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tapetum.config import DnsTunnelSection
from tapetum.detectors.common import (
    AlertIds,
    by_time,
    check_state,
    fmt_bytes,
    fmt_duration,
    reading_state,
)
from tapetum.detectors.windows import DataTimeWindows
from tapetum.features.dnstunnel import PairMap, TunnelRows, accumulate, rows_from, tunnel_rows
from tapetum.features.domain import registered_domain
from tapetum.flows.meter import FlowBatch
from tapetum.records import Alert, AppEvent, DnsEvent

SIG_TUNNEL = "dnstunnel.tunnel"
SIG_EXFIL = "dnstunnel.exfil"
SID_TUNNEL = 9_000_040
SID_EXFIL = 9_000_041
STATE_VERSION = 1
#: Hosts remembered per parent domain for its prevalence (enough to tell "common").
_HOSTS_PER_DOMAIN = 64
_LN2 = math.log(2.0)


class DnsTunnelDetector:
    name = "dnstunnel"

    def __init__(self, config: DnsTunnelSection | None = None, *, lag_s: float = 300.0) -> None:
        self.config = config or DnsTunnelSection()
        self.window_ns = int(self.config.window_s * 1e9)
        self.lag_ns = int(lag_s * 1e9)
        self._allow = tuple(z.strip().rstrip(".").lower() for z in self.config.allowlist)
        #: Learned: per host, [largest tunnel evidence, largest exfil evidence] in a window that
        #: did not alert.
        self.baseline_: dict[str, list[float]] = {}
        #: Learned: per parent domain, hosts seen querying it (at most `_HOSTS_PER_DOMAIN`).
        self.domain_hosts_: dict[str, list[str]] = {}
        #: What the memory caps dropped, by kind.
        self.dropped_: dict[str, int] = {"pairs": 0, "hosts": 0, "domains": 0}
        self.skipped_ = 0
        self._windows: DataTimeWindows[PairMap] = DataTimeWindows(self.window_ns, self.lag_ns, dict)
        # Per window: (resolver, parent domain) -> clients that asked that resolver for names
        # under the domain. A forwarding resolver repeats its client's tunnel queries upstream;
        # the alert belongs to the client, not to the resolver.
        self._asked: DataTimeWindows[dict[tuple[str, str], set[str]]] = DataTimeWindows(
            self.window_ns, self.lag_ns, dict
        )
        #: Alerts not raised on a resolver because a client behind it alerted for the same domain.
        self.relayed_ = 0
        self._ids = AlertIds()

    # -- contract on feature rows ------------------------------------------------------------

    def features(self, flows: FlowBatch, events: Sequence[AppEvent] = ()) -> TunnelRows:
        """Rows of these DNS events taken as one window (flows are not used)."""
        c = self.config
        return tunnel_rows(
            events, allowlist=self._allow, max_pairs=c.max_pairs, max_names=c.max_names_per_pair
        )

    def entities(self, rows: TunnelRows) -> list[str]:
        """The querying host of each row."""
        return list(rows.host)

    def _evidence(self, rows: TunnelRows) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        shape = rows.shape(c.min_subdomain_len, c.min_entropy_bits)
        volume = (rows.name_bytes_out + rows.rdata_bytes_in) / max(c.volume_bytes, 1)
        tunnel = (
            rows.distinct_subdomains * shape * (1.0 + rows.data_type_share)
            * (1.0 + np.minimum(volume, 1.0))
        )  # fmt: skip
        exfil = rows.sub_bytes_out * shape
        return np.asarray(tunnel, dtype=np.float64), np.asarray(exfil, dtype=np.float64)

    def _prevalence(self, rows: TunnelRows) -> np.ndarray:
        """Hosts known to query each row's parent domain, this window included."""
        out = np.zeros(len(rows), dtype=np.int64)
        window: dict[str, set[str]] = {}
        for h, d in zip(rows.host, rows.domain, strict=True):
            window.setdefault(d, set()).add(h)
        for k, d in enumerate(rows.domain):
            known = self.domain_hosts_.get(d, ())
            out[k] = len(window[d].union(known))
        return out

    def _bars(self, rows: TunnelRows) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        n = len(rows)
        base = np.zeros((n, 2), dtype=np.float64)
        for k, h in enumerate(rows.host):
            b = self.baseline_.get(h)
            if b is not None:
                base[k] = b
        common = np.where(self._prevalence(rows) >= c.common_domain_hosts,
                          c.common_domain_factor, 1.0)  # fmt: skip
        bar_t = np.maximum(float(c.min_subdomains), 2.0 * base[:, 0]) * common
        bar_x = np.maximum(float(c.exfil_bytes), 2.0 * base[:, 1]) * common
        return bar_t, bar_x

    def _scores(self, rows: TunnelRows) -> tuple[np.ndarray, np.ndarray]:
        ev_t, ev_x = self._evidence(rows)
        bar_t, bar_x = self._bars(rows)
        return 1.0 - np.exp(-_LN2 * ev_t / bar_t), 1.0 - np.exp(-_LN2 * ev_x / bar_x)

    def score(self, rows: TunnelRows) -> np.ndarray:
        """0..1 per row: the higher of the tunnel and the exfiltration score (0.5 = alert)."""
        if len(rows) == 0:
            return np.zeros(0)
        s_t, s_x = self._scores(rows)
        return np.asarray(np.maximum(s_t, s_x))

    def learn(self, rows: TunnelRows) -> None:
        """Rows taken as normal raise their host's baseline and the domains' prevalence.

        A host's baseline grows at most to twice its old value plus a tenth of the bar per
        window, so a slowly ramping tunnel needs many quiet windows to teach itself normal.
        """
        if len(rows) == 0:
            return
        c = self.config
        ev_t, ev_x = self._evidence(rows)
        step = (0.1 * c.min_subdomains, 0.1 * c.exfil_bytes)
        for k, h in enumerate(rows.host):
            b = self.baseline_.get(h)
            if b is None:
                if len(self.baseline_) >= c.max_hosts:
                    self.dropped_["hosts"] += 1
                    b = None
                else:
                    b = self.baseline_[h] = [0.0, 0.0]
            if b is not None:
                for j, x in enumerate((float(ev_t[k]), float(ev_x[k]))):
                    b[j] = max(b[j], min(x, 2.0 * b[j] + step[j]))
            self._note_domain(rows.domain[k], h)

    def _note_domain(self, domain: str, host: str) -> None:
        hosts = self.domain_hosts_.get(domain)
        if hosts is None:
            if len(self.domain_hosts_) >= self.config.max_domains:
                self.dropped_["domains"] += 1
                return
            hosts = self.domain_hosts_[domain] = []
        if host not in hosts and len(hosts) < _HOSTS_PER_DOMAIN:
            hosts.append(host)

    def explain(self, rows: TunnelRows, idx: np.ndarray) -> list[str]:
        """Text for each row, about the stronger of its two findings."""
        s_t, s_x = self._scores(rows)
        prev = self._prevalence(rows)
        return [
            self._text(rows, k, int(prev[k]), exfil=bool(s_x[k] >= 0.5 and s_x[k] >= s_t[k]))
            for k in np.asarray(idx, dtype=np.int64).tolist()
        ]

    def _text(self, rows: TunnelRows, k: int, n: int, *, exfil: bool) -> str:
        c = self.config
        one = rows.take(np.array([k]))
        ev_t, ev_x = self._evidence(one)
        h, d = rows.host[k], rows.domain[k]
        span = fmt_duration((int(rows.last_ns[k]) - int(rows.first_ns[k])) / 1e9)
        what = (
            f"{h} sent {int(rows.queries[k]):,} DNS queries for "
            f"{int(rows.distinct_subdomains[k]):,} distinct subdomains of {d} in {span}: "
            f"subdomains {rows.sub_len_mean[k]:.0f} characters long on average "
            f"(names up to {int(rows.qname_len_max[k])}), "
            f"{rows.sub_entropy_mean[k]:.1f} bits/char entropy, "
            f"{100 * rows.data_type_share[k]:.0f}% TXT/NULL/CNAME/MX queries, "
            f"{fmt_bytes(int(rows.sub_bytes_out[k]))} of distinct names up, "
            f"{fmt_bytes(int(rows.rdata_bytes_in[k]))} of answer data down"
        )
        b = self.baseline_.get(h)
        window = fmt_duration(c.window_s)
        if exfil:
            what += f"; about {fmt_bytes(float(ev_x[0]))} of data encoded in names"
            norm = (
                f"normal for this host: at most {fmt_bytes(b[1])} of encoded names per {window}"
                if b is not None
                else f"no baseline yet for this host (bar {fmt_bytes(c.exfil_bytes)})"
            )
        else:
            what += f"; tunnel evidence {float(ev_t[0]):.0f}"
            norm = (
                f"normal for this host: tunnel evidence at most {b[0]:.0f} per {window}"
                if b is not None
                else f"no baseline yet for this host (bar {c.min_subdomains:,})"
            )
        who = f"{n} host{'s' if n != 1 else ''} queried {d}"
        if n >= c.common_domain_hosts:
            who += f" (common domain: bar x{c.common_domain_factor:g})"
        return f"{what}; {norm}; {who}"

    def state(self) -> dict[str, Any]:
        c = self.config
        return {
            "detector": self.name,
            "version": STATE_VERSION,
            "params": {
                "window_s": c.window_s,
                "min_subdomains": c.min_subdomains,
                "exfil_bytes": c.exfil_bytes,
            },
            "baseline": self.baseline_,
            "domain_hosts": self.domain_hosts_,
            "dropped": self.dropped_,
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], config: DnsTunnelSection | None = None
    ) -> DnsTunnelDetector:
        check_state(state, cls.name, STATE_VERSION)
        det = cls(config)
        with reading_state(cls.name):
            det.baseline_ = {str(h): [float(x) for x in v] for h, v in state["baseline"].items()}
            det.domain_hosts_ = {
                str(d): [str(h) for h in v] for d, v in state["domain_hosts"].items()
            }
            det.dropped_.update({str(k): int(v) for k, v in state.get("dropped", {}).items()})
        return det

    # -- streaming ---------------------------------------------------------------------------

    def observe(self, flows: FlowBatch) -> None:
        """Flows only move the watermark: tunnels are seen in the DNS events."""
        if len(flows):
            self._windows.advance(int(flows.num["end_ns"].max()))

    def observe_events(self, events: Sequence[AppEvent]) -> None:
        c = self.config
        by_window: dict[int, list[DnsEvent]] = {}
        for ev in events:
            if isinstance(ev, DnsEvent):
                by_window.setdefault(ev.ts_ns // self.window_ns, []).append(ev)
                self._windows.advance(ev.ts_ns)
        for w, evs in by_window.items():
            asked = self._asked.at(w)
            for ev in evs:
                key = (ev.flow.dest_ip, registered_domain(ev.rrname))
                if key in asked or len(asked) < c.max_pairs:
                    clients = asked.setdefault(key, set())
                    if len(clients) < 64:
                        clients.add(ev.flow.src_ip)
            pairs = self._windows.at(w)
            skipped, dropped = accumulate(
                pairs, evs, allowlist=self._allow, max_pairs=c.max_pairs,
                max_names=c.max_names_per_pair,
            )  # fmt: skip
            self.skipped_ += skipped
            self.dropped_["pairs"] += dropped

    def poll(self, watermark_ns: int | None = None) -> list[Alert]:
        alerts = self._finalize(self._windows.complete(watermark_ns, self.lag_ns))
        # Windows of only skipped names (reverse lookups …) have no rows: drop their clients.
        wm = self._windows.now(watermark_ns)
        for w in [w for w in self._asked.open if (w + 1) * self.window_ns + self.lag_ns < wm]:
            del self._asked.open[w]
        return alerts

    def flush(self) -> list[Alert]:
        alerts = self._finalize(self._windows.flush())
        self._asked.open.clear()
        return alerts

    def _relays(
        self, rows: TunnelRows, hit: np.ndarray, asked: dict[tuple[str, str], set[str]]
    ) -> np.ndarray:
        """Alerting rows of resolvers that only repeat an alerting client's queries."""
        alerting = {(rows.host[k], rows.domain[k]) for k in np.flatnonzero(hit).tolist()}
        relay = np.zeros(len(rows), dtype=bool)
        for k in np.flatnonzero(hit).tolist():
            clients = asked.get((rows.host[k], rows.domain[k]), set())
            relay[k] = any((c, rows.domain[k]) in alerting for c in clients if c != rows.host[k])
        return relay

    def _finalize(self, windows: list[int]) -> list[Alert]:
        alerts: list[Alert] = []
        for w in windows:
            rows = rows_from(self._windows.pop(w))
            asked = self._asked.open.pop(w, {})
            if len(rows) == 0:
                continue
            s_t, s_x = self._scores(rows)
            hit = (s_t >= 0.5) | (s_x >= 0.5)
            relay = self._relays(rows, hit, asked)
            self.relayed_ += int(relay.sum())
            idx = np.flatnonzero(hit & ~relay)
            ev_t, ev_x = self._evidence(rows)
            bar_t, bar_x = self._bars(rows)
            prev = self._prevalence(rows)
            for k in idx.tolist():
                if s_t[k] >= 0.5:
                    text = self._text(rows, k, int(prev[k]), exfil=False)
                    alerts.append(self._alert(rows, k, SIG_TUNNEL, float(s_t[k]), text, w,
                                              float(ev_t[k]), float(bar_t[k])))  # fmt: skip
                if s_x[k] >= 0.5:
                    text = self._text(rows, k, int(prev[k]), exfil=True)
                    alerts.append(self._alert(rows, k, SIG_EXFIL, float(s_x[k]), text, w,
                                              float(ev_x[k]), float(bar_x[k])))  # fmt: skip
            # Learn only what did not alert: a tunnel cannot raise its own bar.
            self.learn(rows.take(~hit))
            for k in np.flatnonzero(hit).tolist():
                self._note_domain(rows.domain[k], rows.host[k])
        return by_time(alerts)

    def _alert(
        self,
        rows: TunnelRows,
        k: int,
        sig: str,
        score: float,
        text: str,
        window: int,
        evidence: float,
        bar: float,
    ) -> Alert:
        h, d = rows.host[k], rows.domain[k]
        tunnel = sig == SIG_TUNNEL
        base = self.baseline_.get(h, [0.0, 0.0])
        first, last = int(rows.first_ns[k]), int(rows.last_ns[k])
        severity = 1 if score >= 0.9 else 2
        if tunnel:
            text = f"DNS tunnel to {d}: {text}"
            technique, tactic = ("T1071.004",), ("command-and-control",)
        else:
            text = f"Data sent out in DNS names to {d}: {text}"
            technique, tactic = ("T1048",), ("exfiltration",)
        ev_key = "tunnel_evidence" if tunnel else "encoded_bytes_out"
        return Alert(
            alert_id=self._ids(f"{sig}|{h}|{d}|{window}|{first}"),
            ts_ns=first,
            signature=sig,
            signature_id=SID_TUNNEL if tunnel else SID_EXFIL,
            category="dns-tunnel",
            severity=severity,
            score=score,
            explanation=text,
            entity=h,
            mitre_technique_id=technique,
            mitre_tactic=tactic,
            src_ip=h,
            proto="UDP",
            first_ts_ns=first,
            last_ts_ns=last,
            observed={
                ev_key: round(evidence, 3),
                "queries": float(rows.queries[k]),
                "distinct_subdomains": float(rows.distinct_subdomains[k]),
                "sub_len_mean": round(float(rows.sub_len_mean[k]), 3),
                "qname_len_max": float(rows.qname_len_max[k]),
                "sub_entropy_bits": round(float(rows.sub_entropy_mean[k]), 3),
                "data_type_share": round(float(rows.data_type_share[k]), 3),
                "name_bytes_out": float(rows.name_bytes_out[k]),
                "sub_bytes_out": float(rows.sub_bytes_out[k]),
                "rdata_bytes_in": float(rows.rdata_bytes_in[k]),
                "duration_s": round((last - first) / 1e9, 6),
            },
            baseline={ev_key: round(base[0 if tunnel else 1], 3), "threshold": round(bar, 3)},
        )
