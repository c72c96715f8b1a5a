"""Match network data against indicators at line rate.

Addresses: flows carry each address as two uint64 halves (IPv4 mapped into IPv6).
IPv4 indicators (exact and CIDR) are flattened once into disjoint address intervals, each with
the indicators covering it in order of preference (highest confidence, then most specific); a
batch of IPv4 addresses is one `np.searchsorted` over the interval starts, whatever the number
of prefix lengths. IPv6 indicators are kept per prefix length as sorted keys of the masked halves
and looked up once per length present, for IPv6 rows only. No Python runs per flow, except for
the rare matched address whose preferred indicator is outside its validity at the flow's time
(the next covering indicator is then tried).

Names: a domain indicator matches the name and every subdomain (evil.example matches
a.b.evil.example); URLs match exactly after normalisation, or without the query when the
indicator has none. JA3, JA4 and certificate SHA-1 are exact. Events are few: Python per event.

The same (type, value) listed by several sources is matched once, as the record with the highest
confidence (its validity widened to cover all of them); the others are named as well.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import numpy as np

from tapetum.intel.indicators import Indicator, merge, normalize_domain, normalize_url

_MUL = np.uint64(0x9E3779B97F4A7C15)  # odd: mixing hi into the key keeps keys distinct
_ALL = (1 << 64) - 1
_NEVER = np.iinfo(np.int64).max
_ALWAYS = np.iinfo(np.int64).min


def _masks(length: int) -> tuple[np.uint64, np.uint64]:
    """Masks of the hi and lo halves for an IPv6 prefix length."""
    hi_bits = min(length, 64)
    lo_bits = max(length - 64, 0)
    mhi = (_ALL << (64 - hi_bits)) & _ALL if hi_bits else 0
    mlo = (_ALL << (64 - lo_bits)) & _ALL if lo_bits else 0
    return np.uint64(mhi), np.uint64(mlo)


def _halves(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, int, int]:
    """(hi, lo, prefix length) of a network in the IPv4-mapped IPv6 space."""
    if net.version == 4:
        return 0, (0xFFFF << 32) | int(net.network_address), 96 + net.prefixlen
    v = int(net.network_address)
    return v >> 64, v & _ALL, net.prefixlen


class _Prefixes:
    """All address indicators of one prefix length."""

    __slots__ = ("his", "ids", "keys", "length", "los", "mhi", "mlo")

    def __init__(self, length: int, entries: list[tuple[int, int, int]]) -> None:
        self.length = length
        self.mhi, self.mlo = _masks(length)
        his = np.array([e[0] for e in entries], dtype=np.uint64) & self.mhi
        los = np.array([e[1] for e in entries], dtype=np.uint64) & self.mlo
        keys = (his * _MUL) ^ los
        order = np.argsort(keys, kind="stable")
        self.keys, self.his, self.los = keys[order], his[order], los[order]
        self.ids = np.array([e[2] for e in entries], dtype=np.int64)[order]

    def lookup(self, hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(hit mask, indicator ids) for each address."""
        qh = hi & self.mhi
        ql = lo & self.mlo
        qk = (qh * _MUL) ^ ql
        pos = np.searchsorted(self.keys, qk)
        np.minimum(pos, self.keys.shape[0] - 1, out=pos)
        hit = (self.keys[pos] == qk) & (self.his[pos] == qh) & (self.los[pos] == ql)
        return hit, self.ids[pos]


class _Intervals:
    """IPv4 indicators flattened into disjoint intervals [first, last], each with the
    indicators covering it, preferred first. CIDR blocks either nest or are disjoint, so one
    sweep with a stack of open blocks yields them."""

    def __init__(self, blocks: list[tuple[int, int, int]], confidence: np.ndarray) -> None:
        # Outer blocks before the blocks they contain.
        blocks = sorted(blocks, key=lambda b: (b[0], -b[1]))
        starts: list[int] = []
        ends: list[int] = []
        chains: list[tuple[int, ...]] = []
        stack: list[tuple[int, int, int]] = []
        cursor = 0

        def emit(upto: int) -> None:
            if stack and cursor <= upto:
                # Preferred: highest confidence, then the innermost (most specific) block.
                order = sorted(range(len(stack)), key=lambda j: (-int(confidence[stack[j][2]]), -j))
                starts.append(cursor)
                ends.append(upto)
                chains.append(tuple(stack[j][2] for j in order))

        for first, last, k in blocks:
            while stack and stack[-1][1] < first:
                emit(stack[-1][1])
                cursor = stack.pop()[1] + 1
            emit(first - 1)
            cursor = first
            stack.append((first, last, k))
        while stack:
            emit(stack[-1][1])
            cursor = stack.pop()[1] + 1
        self.starts = np.array(starts, dtype=np.int64)
        self.ends = np.array(ends, dtype=np.int64)
        self.best = np.array([c[0] for c in chains], dtype=np.int64)
        self.chains = chains

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def lookup(self, addr: np.ndarray, ts: np.ndarray, m: Matcher) -> np.ndarray:
        out = np.full(addr.shape[0], -1, dtype=np.int64)
        seg = np.searchsorted(self.starts, addr, side="right") - 1
        inside = seg >= 0
        seg = np.maximum(seg, 0)
        inside &= addr <= self.ends[seg]
        ids = self.best[seg]
        ok = inside & m._valid(ids, ts)
        out[ok] = ids[ok]
        # The preferred indicator is outside its validity here: try the others (rare).
        for r in np.flatnonzero(inside & ~ok).tolist():
            for k in self.chains[int(seg[r])][1:]:
                if m.indicators[k].valid_at(int(ts[r])):
                    out[r] = k
                    break
        return out


class Matcher:
    def __init__(self, indicators: Iterable[Indicator], min_confidence: int = 0) -> None:
        best: dict[tuple[str, str], Indicator] = {}
        others: dict[tuple[str, str], list[str]] = {}
        for ind in indicators:
            if ind.confidence < min_confidence:
                continue
            key = (ind.type, ind.value)
            old = best.get(key)
            if old is None:
                best[key] = ind
                continue
            keep, other = (old, ind) if old.confidence >= ind.confidence else (ind, old)
            others.setdefault(key, []).append(other.source)
            best[key] = merge(keep, other)  # keep's source; validity widened to cover both
        #: Indicator records by id (one per (type, value)).
        self.indicators: list[Indicator] = list(best.values())
        #: Other sources listing the same (type, value), by id.
        self.also: dict[int, list[str]] = {}
        self.confidence = np.array([i.confidence for i in self.indicators], dtype=np.int64)
        self.valid_from = np.array(
            [_ALWAYS if i.valid_from_ns is None else i.valid_from_ns for i in self.indicators],
            dtype=np.int64,
        )
        self.valid_until = np.array(
            [_NEVER if i.valid_until_ns is None else i.valid_until_ns for i in self.indicators],
            dtype=np.int64,
        )
        by_length: dict[int, list[tuple[int, int, int]]] = {}
        v4: list[tuple[int, int, int]] = []  # (first, last, id)
        self.names: dict[str, dict[str, int]] = {t: {} for t in ("domain", "url", "ja3", "ja4")}
        self.names["x509-sha1"] = {}
        for k, ind in enumerate(self.indicators):
            if (ind.type, ind.value) in others:
                self.also[k] = sorted(set(others[(ind.type, ind.value)]))
            if ind.type in ("ip", "cidr"):
                net = ipaddress.ip_network(ind.value, strict=False)
                if net.version == 4:
                    v4.append((int(net.network_address), int(net.broadcast_address), k))
                else:
                    hi, lo, length = _halves(net)
                    by_length.setdefault(length, []).append((hi, lo, k))
            else:
                self.names[ind.type][ind.value] = k
        # Longest prefixes first: on equal confidence the most specific indicator wins.
        self.prefixes = [_Prefixes(n, by_length[n]) for n in sorted(by_length, reverse=True)]
        self.v4 = _Intervals(v4, self.confidence)

    @property
    def has_addresses(self) -> bool:
        return bool(self.prefixes) or len(self.v4) > 0

    def __len__(self) -> int:
        return len(self.indicators)

    def _valid(self, ids: np.ndarray, ts: np.ndarray) -> np.ndarray:
        return np.asarray((self.valid_from[ids] <= ts) & (ts < self.valid_until[ids]))

    def match_addresses(self, hi: np.ndarray, lo: np.ndarray, ts_ns: np.ndarray) -> np.ndarray:
        """Indicator id per address (-1: none), judged at each row's time."""
        best = np.full(hi.shape[0], -1, dtype=np.int64)
        if not self.has_addresses or hi.shape[0] == 0:
            return best
        hi = hi.astype(np.uint64, copy=False)
        lo = lo.astype(np.uint64, copy=False)
        ts = ts_ns.astype(np.int64, copy=False)
        is_v4 = (hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))
        if len(self.v4):
            rows = np.flatnonzero(is_v4) if not is_v4.all() else None
            addr = (lo if rows is None else lo[rows]) & np.uint64(0xFFFFFFFF)
            t = ts if rows is None else ts[rows]
            got = self.v4.lookup(addr.astype(np.int64), t, self)
            if rows is None:
                best = got
            else:
                best[rows] = got
        if self.prefixes and not is_v4.all():
            rows = np.flatnonzero(~is_v4)
            h, lw, t = hi[rows], lo[rows], ts[rows]
            sub = np.full(rows.shape[0], -1, dtype=np.int64)
            for p in self.prefixes:
                hit, ids = p.lookup(h, lw)
                if not hit.any():
                    continue
                hit &= self._valid(ids, t)
                better = hit & ((sub < 0) | (self.confidence[ids] > self.confidence[sub]))
                sub[better] = ids[better]
            best[rows] = sub
        return best

    def match_ip_text(self, text: str, ts_ns: int) -> int:
        try:
            a = ipaddress.ip_address(text)
        except ValueError:
            return -1
        hi, lo, _ = _halves(ipaddress.ip_network(a))
        got = self.match_addresses(
            np.array([hi], dtype=np.uint64),
            np.array([lo], dtype=np.uint64),
            np.array([ts_ns], dtype=np.int64),
        )
        return int(got[0])

    def _exact(self, kind: str, value: str | None, ts_ns: int) -> int:
        if not value:
            return -1
        k = self.names[kind].get(value, -1)
        return k if k >= 0 and self.indicators[k].valid_at(ts_ns) else -1

    def match_domain(self, name: str | None, ts_ns: int) -> int:
        """The most specific valid domain indicator covering `name` (itself or a parent)."""
        if not name or not self.names["domain"]:
            return -1
        d = normalize_domain(name)
        if d is None:
            return -1
        labels = d.split(".")
        for k in range(len(labels) - 1):
            got = self._exact("domain", ".".join(labels[k:]), ts_ns)
            if got >= 0:
                return got
        return -1

    def match_url(self, url: str | None, ts_ns: int) -> int:
        if not url or not self.names["url"]:
            return -1
        u = normalize_url(url)
        if u is None:
            return -1
        got = self._exact("url", u, ts_ns)
        if got < 0 and "?" in u:
            got = self._exact("url", u.split("?", 1)[0], ts_ns)
        return got

    def match_ja3(self, value: str | None, ts_ns: int) -> int:
        return self._exact("ja3", value.lower() if value else None, ts_ns)

    def match_ja4(self, value: str | None, ts_ns: int) -> int:
        return self._exact("ja4", value, ts_ns)

    def match_certificate(self, fingerprint: str | None, ts_ns: int) -> int:
        fp = fingerprint.replace(":", "").lower() if fingerprint else None
        return self._exact("x509-sha1", fp, ts_ns)
