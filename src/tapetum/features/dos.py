"""Flood and slow-DoS features: per victim and short window of data time, vectorised.

Pure functions over flow columns; no per-flow Python, so a SYN flood of half a million one-packet
flows is a handful of numpy passes.

Flood kinds, each measured toward one victim (the responder of the flows):
- SYN (per victim and port): half-open attempts — TCP flows whose originator sent a SYN but
  never completed the handshake and no payload moved (S0, REJ, RSTOS0, SH …); their SYNs per
  second, and their share of all SYNs to that port (a busy server's few failures stay a small
  share);
- UDP (per victim, all ports): datagrams in flows the victim (almost) never answered;
- ICMP (per victim): echo requests and replies sent to it (errors are reactions to other
  traffic and are left out).

A flow longer than a window is spread over the windows it spans in proportion to the overlap
(at most `max_spread` windows), so a long one-flow flood (hping3 -k) counts where it happened.

Per (kind, window, victim, port) group a *partial* keeps sums, the K smallest hashes of distinct
sources (a KMV sketch: exact below K sources, an estimate with ~3% error above) and the top
sources by packets, so partials from many batches merge in bounded memory.

Slow HTTP (slowloris, slow POST, slow read): established connections to a web port lasting at
least `min_duration_s` in which the client sent few bytes per second and the server answered
little; `slow_rows` counts, per source, victim and port, how many were open at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tapetum.features import columns
from tapetum.flows import table as T
from tapetum.flows.meter import FlowBatch

KIND_SYN, KIND_UDP, KIND_ICMP, KIND_SLOW = 0, 1, 2, 3
KIND_NAMES = ("syn", "udp", "icmp", "slow")
#: Distinct-source sketch size (KMV): exact below this many sources.
SKETCH_K = 1024
#: Top sources kept per group.
TOP_SOURCES = 4
#: ICMP types that count toward an ICMP flood (echo reply/request, v4 and v6).
ECHO_TYPES = (0, 8, 128, 129)
_U64 = np.uint64


def mix64(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """splitmix64 of an address: uniform 64-bit hashes for the distinct-source sketch."""
    with np.errstate(over="ignore"):
        x = (hi.astype(_U64) * _U64(0x9E3779B97F4A7C15)) ^ lo.astype(_U64)
        x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
        return np.asarray(x ^ (x >> _U64(31)))


def group_ids(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Groups of equal key tuples: (index of one row per group, group id of every row); groups
    are numbered in sorted key order."""
    n = keys[0].shape[0]
    if n == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z
    order = np.lexsort(keys[::-1])
    new = np.zeros(n, dtype=bool)
    new[0] = True
    for k in keys:
        ks = k[order]
        new[1:] |= ks[1:] != ks[:-1]
    gid_sorted = np.cumsum(new) - 1
    gid = np.empty(n, dtype=np.int64)
    gid[order] = gid_sorted
    return order[new], gid


@dataclass(slots=True)
class FloodPartial:
    """Flood aggregates per (kind, window, victim, port) group, mergeable across batches."""

    kind: np.ndarray  # int64
    window: np.ndarray  # int64 window index
    dst_hi: np.ndarray  # uint64
    dst_lo: np.ndarray
    port: np.ndarray  # int64; -1 for per-victim kinds
    pkts: np.ndarray  # float64: flood-shaped packets toward the victim
    bytes: np.ndarray  # float64: their bytes
    total: np.ndarray  # float64: all packets of that kind toward the victim (share's denominator)
    flows: np.ndarray  # float64: flood-shaped flows (fractional when spread)
    first_ns: np.ndarray  # int64
    last_ns: np.ndarray
    sk_group: np.ndarray  # int64 group index of each sketch hash
    sk_hash: np.ndarray  # uint64
    top_group: np.ndarray  # int64
    top_hi: np.ndarray  # uint64
    top_lo: np.ndarray
    top_pkts: np.ndarray  # float64

    GROUP_FIELDS = (
        "kind",
        "window",
        "dst_hi",
        "dst_lo",
        "port",
        "pkts",
        "bytes",
        "total",
        "flows",
        "first_ns",
        "last_ns",
    )

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    @staticmethod
    def empty() -> FloodPartial:
        i, u, f = np.zeros(0, np.int64), np.zeros(0, _U64), np.zeros(0, np.float64)
        return FloodPartial(i, i, u, u, i, f, f, f, f, i, i, i, u, i, u, u, f)

    def select(self, m: np.ndarray) -> FloodPartial:
        """The groups where m holds, with their sketches and top sources."""
        remap = np.cumsum(m) - 1
        sk = m[self.sk_group]
        top = m[self.top_group]
        g = {f: getattr(self, f)[m] for f in FloodPartial.GROUP_FIELDS}
        return FloodPartial(
            **g,
            sk_group=remap[self.sk_group[sk]],
            sk_hash=self.sk_hash[sk],
            top_group=remap[self.top_group[top]],
            top_hi=self.top_hi[top],
            top_lo=self.top_lo[top],
            top_pkts=self.top_pkts[top],
        )

    def sources(self) -> np.ndarray:
        """Distinct sources per group: exact below SKETCH_K, a KMV estimate above."""
        n = len(self)
        kept = np.bincount(self.sk_group, minlength=n)
        est = kept.astype(np.float64)
        full = np.flatnonzero(kept >= SKETCH_K)
        if full.size:
            order = np.lexsort((self.sk_hash, self.sk_group))
            starts = np.concatenate([[0], np.cumsum(kept)[:-1]])
            kth = self.sk_hash[order][starts[full] + SKETCH_K - 1].astype(np.float64)
            est[full] = (SKETCH_K - 1) / np.maximum(kth / 2.0**64, 1e-300)
        return est

    def top(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per group: the top source (hi, lo) and its packets."""
        n = len(self)
        hi, lo, pk = np.zeros(n, _U64), np.zeros(n, _U64), np.zeros(n, np.float64)
        if self.top_group.size:
            order = np.lexsort((-self.top_pkts, self.top_group))
            g = self.top_group[order]
            first = np.ones(g.size, dtype=bool)
            first[1:] = g[1:] != g[:-1]
            sel = order[first]
            hi[self.top_group[sel]] = self.top_hi[sel]
            lo[self.top_group[sel]] = self.top_lo[sel]
            pk[self.top_group[sel]] = self.top_pkts[sel]
        return hi, lo, pk


def _summarise(
    kind: np.ndarray,
    window: np.ndarray,
    dst_hi: np.ndarray,
    dst_lo: np.ndarray,
    port: np.ndarray,
    src_hi: np.ndarray,
    src_lo: np.ndarray,
    pkts: np.ndarray,
    nbytes: np.ndarray,
    total: np.ndarray,
    flows: np.ndarray,
    first_ns: np.ndarray,
    last_ns: np.ndarray,
    src_rows: np.ndarray,
) -> FloodPartial:
    """Group contribution rows into a partial; rows in `src_rows` feed the source sketch."""
    if kind.size == 0:
        return FloodPartial.empty()
    rep, gid = group_ids(kind, window, dst_hi, dst_lo, port)
    ng = rep.size
    # Times of the flood-shaped rows only (every group has some).
    first = np.full(ng, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, gid[src_rows], first_ns[src_rows])
    last = np.full(ng, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last, gid[src_rows], last_ns[src_rows])
    part = FloodPartial(
        kind=kind[rep],
        window=window[rep],
        dst_hi=dst_hi[rep],
        dst_lo=dst_lo[rep],
        port=port[rep],
        pkts=np.bincount(gid, pkts, ng),
        bytes=np.bincount(gid, nbytes, ng),
        total=np.bincount(gid, total, ng),
        flows=np.bincount(gid, flows, ng),
        first_ns=first,
        last_ns=last,
        sk_group=gid[src_rows],
        sk_hash=mix64(src_hi[src_rows], src_lo[src_rows]),
        top_group=gid[src_rows],
        top_hi=src_hi[src_rows],
        top_lo=src_lo[src_rows],
        top_pkts=pkts[src_rows],
    )
    return _trim(part)


def _trim(p: FloodPartial) -> FloodPartial:
    """Keep the K smallest distinct source hashes and the top sources of each group."""
    if p.sk_hash.size:
        first, _ = group_ids(p.sk_group, p.sk_hash)  # distinct, sorted by (group, hash)
        g = p.sk_group[first]
        rank = np.arange(g.size) - np.searchsorted(g, g)
        keep = first[rank < SKETCH_K]
        p.sk_group, p.sk_hash = p.sk_group[keep], p.sk_hash[keep]
    if p.top_group.size:
        rep, gid = group_ids(p.top_group, p.top_hi, p.top_lo)
        sums = np.bincount(gid, p.top_pkts, rep.size)
        g = p.top_group[rep]
        order = np.lexsort((-sums, g))
        gs = g[order]
        rank = np.arange(gs.size) - np.searchsorted(gs, gs)
        keep = order[rank < TOP_SOURCES]
        p.top_group, p.top_hi, p.top_lo = g[keep], p.top_hi[rep[keep]], p.top_lo[rep[keep]]
        p.top_pkts = sums[keep]
    return p


def merge(parts: list[FloodPartial]) -> FloodPartial:
    parts = [p for p in parts if len(p)]
    if not parts:
        return FloodPartial.empty()
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0] + [len(p) for p in parts[:-1]])
    cat = {f: np.concatenate([getattr(p, f) for p in parts]) for f in FloodPartial.GROUP_FIELDS}
    rep, gid = group_ids(cat["kind"], cat["window"], cat["dst_hi"], cat["dst_lo"], cat["port"])
    ng = rep.size
    first = np.full(ng, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, gid, cat["first_ns"])
    last = np.full(ng, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last, gid, cat["last_ns"])
    sk_group = np.concatenate([gid[p.sk_group + o] for p, o in zip(parts, offsets, strict=True)])
    top_group = np.concatenate([gid[p.top_group + o] for p, o in zip(parts, offsets, strict=True)])
    out = FloodPartial(
        kind=cat["kind"][rep],
        window=cat["window"][rep],
        dst_hi=cat["dst_hi"][rep],
        dst_lo=cat["dst_lo"][rep],
        port=cat["port"][rep],
        pkts=np.bincount(gid, cat["pkts"], ng),
        bytes=np.bincount(gid, cat["bytes"], ng),
        total=np.bincount(gid, cat["total"], ng),
        flows=np.bincount(gid, cat["flows"], ng),
        first_ns=first,
        last_ns=last,
        sk_group=sk_group,
        sk_hash=np.concatenate([p.sk_hash for p in parts]),
        top_group=top_group,
        top_hi=np.concatenate([p.top_hi for p in parts]),
        top_lo=np.concatenate([p.top_lo for p in parts]),
        top_pkts=np.concatenate([p.top_pkts for p in parts]),
    )
    return _trim(out)


def flood_partial(
    fb: FlowBatch,
    window_ns: int,
    *,
    udp_max_reply_share: float = 0.1,
    max_spread: int = 360,
) -> FloodPartial:
    """Flood aggregates of these flows per (kind, window, victim, port)."""
    if len(fb) == 0:
        return FloodPartial.empty()
    num = fb.num
    proto = num["proto"]
    up_pkts, down_pkts = num["pkts_toserver"], num["pkts_toclient"]
    no_data = (num["payload_bytes_toserver"] == 0) & (num["payload_bytes_toclient"] == 0)
    syns = fb.tcp_flags[:, 1].astype(np.int64)
    st = num["state_bits"]
    attempt = (proto == 6) & ((st & T.ST_ORIG_SYN) != 0) & (syns > 0)
    half_open = attempt & ((st & T.ST_ORIG_ACK_AFTER_SYNACK) == 0) & no_data
    udp = proto == 17
    unanswered = udp & (down_pkts <= udp_max_reply_share * up_pkts)
    icmp = ((proto == 1) | (proto == 58)) & np.isin(num["src_port"], ECHO_TYPES)
    # Every flow takes part in at most one kind.
    m = attempt | udp | icmp
    idx = np.flatnonzero(m)
    if idx.size == 0:
        return FloodPartial.empty()
    kind = np.where(attempt[idx], KIND_SYN, np.where(udp[idx], KIND_UDP, KIND_ICMP))
    port = np.where(kind == KIND_SYN, num["dest_port"][idx], -1).astype(np.int64)
    # Packets of the kind toward the victim: SYNs for TCP, originator packets otherwise.
    total = np.where(kind == KIND_SYN, syns[idx], up_pkts[idx]).astype(np.float64)
    flood = np.where(
        kind == KIND_SYN, half_open[idx], np.where(kind == KIND_UDP, unanswered[idx], True)
    )
    pkts = np.where(flood, total, 0.0)
    nbytes = np.where(flood, num["bytes_toserver"][idx], 0).astype(np.float64)
    flows = flood.astype(np.float64)
    start, end = num["start_ns"][idx], num["end_ns"][idx]
    w0 = start // window_ns
    nwin = np.minimum(end // window_ns - w0 + 1, max_spread)
    rows = np.arange(idx.size)
    window = w0
    frac = np.ones(idx.size)
    if (nwin > 1).any():
        # Spread long flows over the windows they span, in proportion to the overlap.
        rows = np.repeat(rows, nwin)
        offs = np.arange(rows.size) - np.repeat(np.cumsum(nwin) - nwin, nwin)
        window = w0[rows] + offs
        lo = np.maximum(start[rows], window * window_ns)
        hi = np.minimum(end[rows], (window + 1) * window_ns)
        overlap = np.maximum(hi - lo, 0).astype(np.float64)
        span = np.bincount(rows, overlap, idx.size)
        frac = np.where(span[rows] > 0, overlap / np.maximum(span[rows], 1.0), 1.0 / nwin[rows])
    src_hi, src_lo = fb.src_hi[idx][rows], fb.src_lo[idx][rows]
    keep = pkts[rows] > 0
    if not keep.any():
        return FloodPartial.empty()
    # Groups without any flood-shaped packet are dropped; their totals only matter beside some.
    grp, gid = group_ids(kind[rows], window, fb.dst_hi[idx][rows], fb.dst_lo[idx][rows], port[rows])
    has_flood = np.bincount(gid, keep, grp.size) > 0
    sel = has_flood[gid]
    r = rows[sel]
    f = frac[sel]
    return _summarise(
        kind[r],
        window[sel],
        fb.dst_hi[idx][r],
        fb.dst_lo[idx][r],
        port[r],
        src_hi[sel],
        src_lo[sel],
        pkts[r] * f,
        nbytes[r] * f,
        total[r] * f,
        flows[r] * f,
        np.maximum(start[r], window[sel] * window_ns),
        np.minimum(end[r], (window[sel] + 1) * window_ns - 1),
        keep[sel],
    )


@dataclass(slots=True)
class SlowFlows:
    """Candidate slow-HTTP connections (few: long, near-silent ones)."""

    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    port: np.ndarray
    start_ns: np.ndarray
    end_ns: np.ndarray
    bytes_up: np.ndarray
    bytes_down: np.ndarray

    def __len__(self) -> int:
        return int(self.port.shape[0])

    @staticmethod
    def empty() -> SlowFlows:
        z, u = np.zeros(0, np.int64), np.zeros(0, _U64)
        return SlowFlows(u, u, u, u, z, z, z, z, z)

    @staticmethod
    def concat(parts: list[SlowFlows]) -> SlowFlows:
        if not parts:
            return SlowFlows.empty()
        return columns.concat(SlowFlows, parts)

    def take(self, m: np.ndarray) -> SlowFlows:
        return columns.take(self, m)


def slow_flows(
    fb: FlowBatch,
    ports: np.ndarray,
    *,
    min_duration_s: float = 10.0,
    max_bytes_per_s: float = 100.0,
    max_response_bytes: int = 2000,
) -> SlowFlows:
    """Established TCP connections to a web port that stayed open long while moving little."""
    if len(fb) == 0:
        return SlowFlows.empty()
    num = fb.num
    dur_s = (num["end_ns"] - num["start_ns"]) / 1e9
    up, down = num["payload_bytes_toserver"], num["payload_bytes_toclient"]
    established = (num["state_bits"] & T.ST_ORIG_ACK_AFTER_SYNACK) != 0
    m = (
        (num["proto"] == 6)
        & established
        & np.isin(num["dest_port"], ports)
        & (dur_s >= min_duration_s)
        & (up > 0)
        & (up <= max_bytes_per_s * dur_s)
        & (down <= max_response_bytes)
    )
    return SlowFlows(
        fb.src_hi[m],
        fb.src_lo[m],
        fb.dst_hi[m],
        fb.dst_lo[m],
        num["dest_port"][m],
        num["start_ns"][m],
        num["end_ns"][m],
        up[m],
        down[m],
    )


def peak_concurrency(start: np.ndarray, end: np.ndarray, gid: np.ndarray, ng: int) -> np.ndarray:
    """Most intervals open at once per group (vectorised sweep over start/end events)."""
    if gid.size == 0:
        return np.zeros(ng, dtype=np.int64)
    g = np.concatenate([gid, gid])
    t = np.concatenate([start, end])
    step = np.concatenate([np.ones_like(gid), -np.ones_like(gid)])
    order = np.lexsort((-step, t, g))  # an end at the same instant closes after a start opens
    g, step = g[order], step[order]
    run = np.cumsum(step)
    base = np.concatenate([[0], run])[np.searchsorted(g, g)]  # running total before the group
    level = run - base
    out = np.zeros(ng, dtype=np.int64)
    np.maximum.at(out, g, level)
    return out
