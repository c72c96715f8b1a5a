"""DNS tunnelling features: per (querying host, parent domain) in a window of data time.

A DNS tunnel (iodine, dnscat2, DNSExfiltrator …) hides data in the labels left of a domain its
operator controls and gets data back in answers (TXT, NULL, CNAME, MX). Per (host, registered
domain) this module counts queries, distinct subdomains, name lengths, the character entropy of
the subdomains, the share of data-carrying query types, the bytes of names sent (upstream) and
of answer data received (downstream).

Names that are tunnel-shaped by design are left out before counting: reverse lookups
(in-addr.arpa, ip6.arpa), mDNS and LLMNR (ports 5353/5355, ".local"), DNS-SD and other service
names (a label starting with "_"), single-label names, and parent domains on an allowlist
(anti-virus lookups, DNS block lists). Pure functions over `DnsEvent`s; any text is accepted
(escaped bytes, punycode, overlong names) without raising.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tapetum.features import columns
from tapetum.features.domain import entropy_bits, normalize, registered_domain
from tapetum.records import AppEvent, DnsEvent

#: Query types that carry data in their answers (iodine: NULL, TXT, CNAME, MX, SRV, PRIVATE;
#: dnscat2: TXT, CNAME, MX). Unknown types ("TYPE65399") count too.
DATA_QTYPES = frozenset({"TXT", "NULL", "CNAME", "MX", "SRV", "KEY", "ANY"})
#: Answer types the DNS parser renders as text; everything else is hex (two characters a byte).
_TEXT_RDATA = frozenset(
    {"A", "AAAA", "NS", "CNAME", "PTR", "DNAME", "MX", "TXT", "SPF", "SRV", "SOA"}
)
#: Ports of multicast/link-local name resolution (mDNS, LLMNR): local chatter, never a tunnel.
LOCAL_PORTS = frozenset({5353, 5355})
_SKIP_SUFFIXES = (".in-addr.arpa", ".ip6.arpa", ".local")


def rdata_bytes(rrtype: str, rdata: str) -> int:
    """Bytes an answer's data carried on the wire (approximately: hex counts half)."""
    if rrtype in _TEXT_RDATA:
        return len(rdata)
    return len(rdata) // 2


def skip_reason(name: str, dest_port: int, allowlist: Sequence[str] = ()) -> str | None:
    """Why a query name is not judged as a possible tunnel, or None if it is."""
    if dest_port in LOCAL_PORTS:
        return "mdns-llmnr"
    if "." not in name:
        return "single-label"
    if name.endswith(_SKIP_SUFFIXES) or name in ("in-addr.arpa", "ip6.arpa"):
        return "reverse-or-local"
    if name.startswith("_") or "._" in name:
        return "service-name"
    for zone in allowlist:
        if name == zone or name.endswith("." + zone):
            return "allowlisted"
    return None


@dataclass(slots=True)
class PairAcc:
    """What one (host, parent domain) did in one window; bounded by `max_names`."""

    queries: int = 0
    data_queries: int = 0
    qname_len_sum: int = 0
    qname_len_max: int = 0
    name_bytes_out: int = 0
    rdata_bytes_in: int = 0
    first_ns: int = 0
    last_ns: int = 0
    #: Distinct subdomains seen (up to the cap), their total length and summed entropy.
    names: set[str] = field(default_factory=set)
    sub_bytes_out: int = 0
    sub_len_sum: int = 0
    entropy_sum: float = 0.0
    #: Distinct-looking names beyond the cap (counted, not remembered).
    overflow: int = 0

    def add(self, ev: DnsEvent, sub: str, qname_len: int, max_names: int) -> None:
        if self.queries == 0 or ev.ts_ns < self.first_ns:
            self.first_ns = ev.ts_ns
        self.last_ns = max(self.last_ns, ev.ts_ns)
        self.queries += 1
        t = ev.rrtype
        if t in DATA_QTYPES or t.startswith("TYPE"):
            self.data_queries += 1
        self.qname_len_sum += qname_len
        self.qname_len_max = max(self.qname_len_max, qname_len)
        self.name_bytes_out += qname_len
        for a in ev.answers:
            self.rdata_bytes_in += rdata_bytes(a.rrtype, a.rdata)
        if sub in self.names:
            return
        if len(self.names) >= max_names:
            self.overflow += 1
        else:
            self.names.add(sub)
        self.sub_bytes_out += len(sub)
        self.sub_len_sum += len(sub)
        self.entropy_sum += entropy_bits(sub.replace(".", ""))

    @property
    def distinct(self) -> int:
        return len(self.names) + self.overflow


#: Accumulators of one window: (host, parent domain) -> PairAcc.
PairMap = dict[tuple[str, str], PairAcc]


def accumulate(
    pairs: PairMap,
    events: Iterable[AppEvent],
    *,
    allowlist: Sequence[str] = (),
    max_pairs: int = 100_000,
    max_names: int = 20_000,
) -> tuple[int, int]:
    """Fold DNS events into `pairs`; (events skipped as not judged, events dropped at the cap)."""
    skipped = dropped = 0
    for ev in events:
        if not isinstance(ev, DnsEvent):
            continue
        name = normalize(ev.rrname)
        if skip_reason(name, ev.flow.dest_port, allowlist) is not None:
            skipped += 1
            continue
        reg = registered_domain(name)
        if not reg or reg == name:
            continue  # no subdomain: nothing can be encoded left of the parent
        key = (ev.flow.src_ip, reg)
        acc = pairs.get(key)
        if acc is None:
            if len(pairs) >= max_pairs:
                dropped += 1
                continue
            acc = pairs[key] = PairAcc()
        acc.add(ev, name[: -len(reg) - 1], len(name), max_names)
    return skipped, dropped


@dataclass(slots=True)
class TunnelRows:
    """One row per (host, parent domain) in a window: the detector's feature table."""

    host: list[str]
    domain: list[str]
    queries: np.ndarray
    distinct_subdomains: np.ndarray
    qname_len_mean: np.ndarray
    qname_len_max: np.ndarray
    #: Mean length and character entropy (bits/char) of the distinct subdomains.
    sub_len_mean: np.ndarray
    sub_entropy_mean: np.ndarray
    #: Share of queries of a data-carrying type (TXT, NULL, CNAME, MX, SRV, unknown).
    data_type_share: np.ndarray
    #: Bytes of all query names sent; characters of the distinct subdomains (encoded upstream
    #: data); bytes of answer data received (downstream).
    name_bytes_out: np.ndarray
    sub_bytes_out: np.ndarray
    rdata_bytes_in: np.ndarray
    #: Hosts that queried the same parent domain in this window (prevalence within the window).
    domain_hosts: np.ndarray
    first_ns: np.ndarray
    last_ns: np.ndarray

    def __len__(self) -> int:
        return len(self.host)

    def take(self, idx: np.ndarray) -> TunnelRows:
        return columns.take(self, idx)

    def shape(self, min_len: float, min_entropy: float) -> np.ndarray:
        """0..1: how much the subdomains look like encoded data (long and high-entropy)."""
        length = np.clip((self.sub_len_mean - 8.0) / max(min_len - 8.0, 1.0), 0.0, 1.0)
        ent = np.clip(self.sub_entropy_mean - (min_entropy - 1.0), 0.0, 1.0)
        return np.asarray(length * ent)


def rows_from(pairs: PairMap) -> TunnelRows:
    """Feature rows of one window's accumulators, in a stable (host, domain) order."""
    keys = sorted(pairs)
    n = len(keys)
    hosts_per_domain: dict[str, int] = {}
    for _, dom in keys:
        hosts_per_domain[dom] = hosts_per_domain.get(dom, 0) + 1
    f = np.zeros((n, 12), dtype=np.float64)
    ts = np.zeros((n, 2), dtype=np.int64)
    for k, key in enumerate(keys):
        a = pairs[key]
        d = max(a.distinct, 1)
        q = max(a.queries, 1)
        f[k] = (
            a.queries, a.distinct, a.qname_len_sum / q, a.qname_len_max, a.sub_len_sum / d,
            a.entropy_sum / d, a.data_queries / q, a.name_bytes_out, a.sub_bytes_out,
            a.rdata_bytes_in, hosts_per_domain[key[1]], 0.0,
        )  # fmt: skip
        ts[k] = (a.first_ns, a.last_ns)
    return TunnelRows(
        host=[h for h, _ in keys],
        domain=[d for _, d in keys],
        queries=f[:, 0].astype(np.int64),
        distinct_subdomains=f[:, 1].astype(np.int64),
        qname_len_mean=f[:, 2],
        qname_len_max=f[:, 3].astype(np.int64),
        sub_len_mean=f[:, 4],
        sub_entropy_mean=f[:, 5],
        data_type_share=f[:, 6],
        name_bytes_out=f[:, 7].astype(np.int64),
        sub_bytes_out=f[:, 8].astype(np.int64),
        rdata_bytes_in=f[:, 9].astype(np.int64),
        domain_hosts=f[:, 10].astype(np.int64),
        first_ns=ts[:, 0],
        last_ns=ts[:, 1],
    )


def tunnel_rows(
    events: Iterable[AppEvent],
    *,
    allowlist: Sequence[str] = (),
    max_pairs: int = 100_000,
    max_names: int = 20_000,
) -> TunnelRows:
    """Rows of these events taken as one window."""
    pairs: PairMap = {}
    accumulate(pairs, events, allowlist=allowlist, max_pairs=max_pairs, max_names=max_names)
    return rows_from(pairs)
