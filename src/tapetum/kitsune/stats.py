"""Kitsune's packet feature extractor (AfterImage): damped incremental statistics, compiled.

Mirsky et al., "Kitsune: An Ensemble of Autoencoders for Online Network Intrusion Detection",
NDSS 2018, section IV-B and Tables I/II. Every packet updates three streams, each at the five
decay rates lambda in (5, 3, 1, 0.1, 0.01) (a value's weight halves every 1/lambda seconds):

- host: packets sent by the source IP (the paper keys it by source MAC and IP; packet columns carry
  no MAC addresses, so the source IP alone is the key);
- channel: packets from the source IP to the destination IP (sizes, and inter-arrival times as
  "jitter"), with 2D statistics against the opposite direction (destination -> source);
- socket: packets from source IP:port to destination IP:port of one transport protocol (ports 0
  for protocols without ports), with 2D statistics against the opposite direction.

A damped stream keeps (w, LS, SS) and the time of its last value t_last. A value v at time t first
decays the stream by 2^(-lambda * (t - t_last)) when t > t_last (then t_last = t); a packet older
than t_last (out of order) is inserted without decay and leaves t_last alone, as in the published
code. Then w += 1, LS += v, SS += v^2; mean = LS / w, std = sqrt(|SS / w - mean^2|).
Jitter is v = t - t_last of the channel direction before the update, 0 for its first packet and
for out-of-order packets.
2D statistics between the direction i of this packet and the opposite direction j (Table I):
  magnitude = sqrt(mean_i^2 + mean_j^2), radius = sqrt(var_i^2 + var_j^2),
  cov = SR_ij / (w_i + w_j) with w_j decayed to t, pcc = cov / (std_i * std_j) (0 if that is 0),
where SR_ij, the damped sum of residual products, decays by its own t_last (any direction) and
then gains r_i * r_j: r_i = v - mean_i (after the insert), r_j = the residual of j's last value
(0 if j has none). An empty direction has w = mean = var = 0.
Differences from the published code (which the paper's formulas are preferred to): that code keys
the channel's 1D statistics by the source IP alone, returns the variance under the name "std",
uses sqrt(var_i + var_j) as radius and CF3 / w3 as covariance.

The 100 features per packet, in order (`FEATURE_NAMES`; `l<lambda>` is the decay rate):
  [0, 15)   host_l<L>_{weight_pkts, size_mean_bytes, size_std_bytes}          for L in lambdas
  [15, 50)  chan_l<L>_{weight_pkts, size_mean_bytes, size_std_bytes, radius_bytes2,
            magnitude_bytes, cov_bytes2, pcc}                                   for L in lambdas
  [50, 65)  jit_l<L>_{weight_pkts, iat_mean_s, iat_std_s}                      for L in lambdas
  [65, 100) sock_l<L>_{same 7 as chan}                                          for L in lambdas
which is the order of the published netStat (MI, HH, HH_jit, HpHp). Size is the wire length.

State lives in three open-addressing hash tables (linear probing, backward-shift deletion) over
fixed-size numpy pools: memory is bounded by the capacities; when a table is full the stalest
eighth of its entries (by last packet time) is evicted and counted.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from tapetum.sources.decode import (
    A_DST_HI,
    A_DST_LO,
    A_SRC_HI,
    A_SRC_LO,
    C_DPORT,
    C_IPVER,
    C_PROTO,
    C_SPORT,
    C_STATUS,
    C_TS,
    C_WIRELEN,
    S_OK,
    S_TRUNC_L4,
)
from tapetum.sources.pcap import PacketBatch

#: Decay rates of the paper (1/s): half-lives of 0.2 s, 0.33 s, 1 s, 10 s and 100 s.
LAMBDAS: tuple[float, ...] = (5.0, 3.0, 1.0, 0.1, 0.01)

_STAT_1D = ("weight_pkts", "size_mean_bytes", "size_std_bytes")
_STAT_2D = ("radius_bytes2", "magnitude_bytes", "cov_bytes2", "pcc")
_STAT_JIT = ("weight_pkts", "iat_mean_s", "iat_std_s")


def _lname(lam: float) -> str:
    return f"l{lam:g}"


def feature_names(lambdas: tuple[float, ...] = LAMBDAS) -> list[str]:
    """Names of the feature columns, in order (see the module docstring)."""
    out: list[str] = []
    for lam in lambdas:
        out += [f"host_{_lname(lam)}_{s}" for s in _STAT_1D]
    for lam in lambdas:
        out += [f"chan_{_lname(lam)}_{s}" for s in _STAT_1D + _STAT_2D]
    for lam in lambdas:
        out += [f"jit_{_lname(lam)}_{s}" for s in _STAT_JIT]
    for lam in lambdas:
        out += [f"sock_{_lname(lam)}_{s}" for s in _STAT_1D + _STAT_2D]
    return out


FEATURE_NAMES: tuple[str, ...] = tuple(feature_names())
N_FEATURES = len(FEATURE_NAMES)  # 100


def schema_hash(names: tuple[str, ...] | list[str] = FEATURE_NAMES) -> str:
    """A short hash of the feature names and order, stored with models trained on them."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


# -- hash tables ----------------------------------------------------------------------------

_NEVER = np.iinfo(np.int64).min  # t_last of a direction that has no value yet
_KEYW = 5  # key words per entry (unused words are 0)

# meta[] fields of a table.
M_FREE_TOP = 0
M_HIGH = 1
M_ACTIVE = 2
M_EVICTED = 3
M_EVICTIONS = 4  # eviction rounds
N_META = 5

# Time columns (int64) of the pair tables: t_last of direction 0, of direction 1, of SR.
T_D0 = 0
T_D1 = 1
T_SR = 2


@njit(cache=True, inline="always")
def _mix(h: np.uint64) -> np.uint64:
    # splitmix64 finaliser: avalanche so that linear probing sees uniform homes.
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@njit(cache=True, inline="always")
def _hash5(k0: np.uint64, k1: np.uint64, k2: np.uint64, k3: np.uint64, k4: np.uint64) -> np.uint64:
    h = _mix(k0 ^ np.uint64(0x9E3779B97F4A7C15))
    h = _mix(h ^ k1)
    h = _mix(h ^ k2)
    h = _mix(h ^ k3)
    return _mix(h ^ k4)


@njit(cache=True)
def _ht_remove(ht: np.ndarray, hsh: np.ndarray, s: int) -> None:
    """Remove slot s from the index (backward-shift deletion keeps probe chains intact)."""
    mask = ht.shape[0] - 1
    j = np.int64(np.uint64(hsh[s]) & np.uint64(mask))
    while ht[j] != s + 1:
        if ht[j] == 0:
            return
        j = (j + 1) & mask
    i = j
    while True:
        j = (j + 1) & mask
        if ht[j] == 0:
            break
        t = ht[j] - 1
        home = np.int64(np.uint64(hsh[t]) & np.uint64(mask))
        if (j > i and (home <= i or home > j)) or (j < i and (home <= i and home > j)):
            ht[i] = ht[j]
            i = j
    ht[i] = 0


@njit(cache=True)
def _evict_stalest(
    ht: np.ndarray,
    hsh: np.ndarray,
    used: np.ndarray,
    last: np.ndarray,
    free: np.ndarray,
    meta: np.ndarray,
) -> None:
    """Free the stalest eighth of a full table (at least one entry), counting what is lost."""
    high = meta[M_HIGH]
    times = last[:high].copy()
    k = max(1, high // 8)
    cut = np.partition(times, k - 1)[k - 1]
    for s in range(high):
        if used[s] == 1 and last[s] <= cut:
            _ht_remove(ht, hsh, s)
            used[s] = 0
            free[meta[M_FREE_TOP]] = s
            meta[M_FREE_TOP] += 1
            meta[M_ACTIVE] -= 1
            meta[M_EVICTED] += 1
    meta[M_EVICTIONS] += 1


@njit(cache=True)
def _find(
    ht: np.ndarray,
    keys: np.ndarray,
    hsh: np.ndarray,
    used: np.ndarray,
    last: np.ndarray,
    free: np.ndarray,
    meta: np.ndarray,
    k0: np.uint64,
    k1: np.uint64,
    k2: np.uint64,
    k3: np.uint64,
    k4: np.uint64,
) -> tuple[int, bool]:
    """Slot of the key, inserting it (evicting the stalest entries if full). (slot, is new)."""
    h = _hash5(k0, k1, k2, k3, k4)
    mask = ht.shape[0] - 1
    j = np.int64(h & np.uint64(mask))
    while ht[j] != 0:
        t = ht[j] - 1
        if (
            hsh[t] == np.int64(h)
            and keys[t, 0] == k0
            and keys[t, 1] == k1
            and keys[t, 2] == k2
            and keys[t, 3] == k3
            and keys[t, 4] == k4
        ):
            return t, False
        j = (j + 1) & mask
    if meta[M_FREE_TOP] == 0:
        _evict_stalest(ht, hsh, used, last, free, meta)
        # Entries moved: find the insertion point again.
        j = np.int64(h & np.uint64(mask))
        while ht[j] != 0:
            j = (j + 1) & mask
    meta[M_FREE_TOP] -= 1
    s = free[meta[M_FREE_TOP]]
    if s >= meta[M_HIGH]:
        meta[M_HIGH] = s + 1
    ht[j] = s + 1
    hsh[s] = np.int64(h)
    keys[s, 0] = k0
    keys[s, 1] = k1
    keys[s, 2] = k2
    keys[s, 3] = k3
    keys[s, 4] = k4
    used[s] = 1
    meta[M_ACTIVE] += 1
    return s, True


# -- damped statistics ----------------------------------------------------------------------


@njit(cache=True, inline="always")
def _insert(
    f: np.ndarray, s: int, off: int, nl: int, lnl: np.ndarray, dt_s: float, v: float
) -> None:
    """Decay (dt_s > 0) then insert v into the nl streams (w, LS, SS) at f[s, off:off+3nl]."""
    for k in range(nl):
        b = off + 3 * k
        if dt_s > 0.0:
            g = math.exp(-lnl[k] * dt_s)
            f[s, b] *= g
            f[s, b + 1] *= g
            f[s, b + 2] *= g
        f[s, b] += 1.0
        f[s, b + 1] += v
        f[s, b + 2] += v * v


@njit(cache=True, inline="always")
def _out_1d(f: np.ndarray, s: int, off: int, k: int, out: np.ndarray, r: int, c: int) -> None:
    b = off + 3 * k
    w = f[s, b]
    mean = f[s, b + 1] / w
    out[r, c] = w
    out[r, c + 1] = mean
    out[r, c + 2] = math.sqrt(abs(f[s, b + 2] / w - mean * mean))


@njit(cache=True)
def _pair_update(
    f: np.ndarray,
    tl: np.ndarray,
    s: int,
    d: int,
    ts: int,
    v: float,
    nl: int,
    lnl: np.ndarray,
    size_off: int,
    res_off: int,
    sr_off: int,
    out: np.ndarray,
    r: int,
    col: int,
) -> float:
    """Insert v into direction d of pair entry s and write its 7 x nl features at out[r, col:].

    Layout of f[s]: size stats of direction 0 then 1 (3 nl each) at size_off, last residuals of
    direction 0 then 1 (nl each) at res_off, SR (nl) at sr_off. Returns the jitter (s) of this
    packet, computed from the direction's t_last before the update.
    """
    o = 1 - d
    t_i = tl[s, T_D0 + d]
    dt = 0.0
    jit = 0.0
    if t_i != _NEVER and ts > t_i:
        dt = (ts - t_i) * 1e-9
        jit = dt
    if t_i == _NEVER or ts > t_i:
        tl[s, T_D0 + d] = ts
    off_i = size_off + 3 * nl * d
    off_j = size_off + 3 * nl * o
    _insert(f, s, off_i, nl, lnl, dt, v)
    t_j = tl[s, T_D0 + o]
    dt_j = (ts - t_j) * 1e-9 if (t_j != _NEVER and ts > t_j) else 0.0
    t_sr = tl[s, T_SR]
    dt_sr = (ts - t_sr) * 1e-9 if (t_sr != _NEVER and ts > t_sr) else 0.0
    if t_sr == _NEVER or ts > t_sr:
        tl[s, T_SR] = ts
    for k in range(nl):
        bi = off_i + 3 * k
        w_i = f[s, bi]
        mean_i = f[s, bi + 1] / w_i
        var_i = abs(f[s, bi + 2] / w_i - mean_i * mean_i)
        bj = off_j + 3 * k
        w_j = f[s, bj]
        mean_j = 0.0
        var_j = 0.0
        w_jd = 0.0
        if w_j > 0.0:
            mean_j = f[s, bj + 1] / w_j
            var_j = abs(f[s, bj + 2] / w_j - mean_j * mean_j)
            w_jd = w_j * math.exp(-lnl[k] * dt_j) if dt_j > 0.0 else w_j
        sr = f[s, sr_off + k]
        if dt_sr > 0.0:
            sr *= math.exp(-lnl[k] * dt_sr)
        r_i = v - mean_i
        sr += r_i * f[s, res_off + nl * o + k]
        f[s, sr_off + k] = sr
        f[s, res_off + nl * d + k] = r_i
        std_i = math.sqrt(var_i)
        cov = sr / (w_i + w_jd)
        ss = std_i * math.sqrt(var_j)
        c = col + 7 * k
        out[r, c] = w_i
        out[r, c + 1] = mean_i
        out[r, c + 2] = std_i
        out[r, c + 3] = math.sqrt(var_i * var_i + var_j * var_j)
        out[r, c + 4] = math.sqrt(mean_i * mean_i + mean_j * mean_j)
        out[r, c + 5] = cov
        out[r, c + 6] = cov / ss if ss != 0.0 else 0.0
    return jit


@njit(cache=True)
def _new_pair(f: np.ndarray, tl: np.ndarray, s: int) -> None:
    f[s, :] = 0.0
    tl[s, T_D0] = _NEVER
    tl[s, T_D1] = _NEVER
    tl[s, T_SR] = _NEVER


@njit(cache=True)
def extract(
    ts_ns: np.ndarray,
    src_hi: np.ndarray,
    src_lo: np.ndarray,
    dst_hi: np.ndarray,
    dst_lo: np.ndarray,
    sport: np.ndarray,
    dport: np.ndarray,
    proto: np.ndarray,
    size: np.ndarray,
    lnl: np.ndarray,
    h_ht: np.ndarray,
    h_keys: np.ndarray,
    h_hsh: np.ndarray,
    h_used: np.ndarray,
    h_last: np.ndarray,
    h_free: np.ndarray,
    h_meta: np.ndarray,
    h_f: np.ndarray,
    h_tl: np.ndarray,
    c_ht: np.ndarray,
    c_keys: np.ndarray,
    c_hsh: np.ndarray,
    c_used: np.ndarray,
    c_last: np.ndarray,
    c_free: np.ndarray,
    c_meta: np.ndarray,
    c_f: np.ndarray,
    c_tl: np.ndarray,
    s_ht: np.ndarray,
    s_keys: np.ndarray,
    s_hsh: np.ndarray,
    s_used: np.ndarray,
    s_last: np.ndarray,
    s_free: np.ndarray,
    s_meta: np.ndarray,
    s_f: np.ndarray,
    s_tl: np.ndarray,
    out: np.ndarray,
) -> None:
    """Update the statistics with packets 0..n-1 (in the given order) and write their features.

    `lnl` is lambda * ln 2 per decay rate. Channel entries (c_*) hold, per unordered IP pair:
    size stats per direction, jitter stats per direction, residuals, SR; socket entries (s_*)
    the same without jitter.
    """
    nl = lnl.shape[0]
    z = np.uint64(0)
    # Offsets in the channel / socket float rows.
    c_size = 0
    c_jit = 6 * nl
    c_res = 12 * nl
    c_sr = 14 * nl
    s_size = 0
    s_res = 6 * nl
    s_sr = 8 * nl
    col_chan = 3 * nl
    col_jit = 10 * nl
    col_sock = 13 * nl
    for r in range(ts_ns.shape[0]):
        ts = ts_ns[r]
        v = float(size[r])
        a_hi = src_hi[r]
        a_lo = src_lo[r]
        b_hi = dst_hi[r]
        b_lo = dst_lo[r]
        # host: the source IP's packets
        s, new = _find(h_ht, h_keys, h_hsh, h_used, h_last, h_free, h_meta, a_hi, a_lo, z, z, z)
        if new:
            h_f[s, :] = 0.0
            h_tl[s, 0] = _NEVER
        t0 = h_tl[s, 0]
        dt = 0.0
        if t0 != _NEVER and ts > t0:
            dt = (ts - t0) * 1e-9
        if t0 == _NEVER or ts > t0:
            h_tl[s, 0] = ts
            h_last[s] = ts
        _insert(h_f, s, 0, nl, lnl, dt, v)
        for k in range(nl):
            _out_1d(h_f, s, 0, k, out, r, 3 * k)
        # channel: unordered IP pair, direction 0 = from the smaller address
        fwd = a_hi < b_hi or (a_hi == b_hi and a_lo <= b_lo)
        if fwd:
            s, new = _find(
                c_ht, c_keys, c_hsh, c_used, c_last, c_free, c_meta, a_hi, a_lo, b_hi, b_lo, z
            )
        else:
            s, new = _find(
                c_ht, c_keys, c_hsh, c_used, c_last, c_free, c_meta, b_hi, b_lo, a_hi, a_lo, z
            )
        if new:
            _new_pair(c_f, c_tl, s)
        d = 0 if fwd else 1
        jit = _pair_update(c_f, c_tl, s, d, ts, v, nl, lnl, c_size, c_res, c_sr, out, r, col_chan)
        if ts > c_last[s] or new:
            c_last[s] = ts
        # jitter: the direction's inter-arrival time, which is also its decay interval
        _insert(c_f, s, c_jit + 3 * nl * d, nl, lnl, jit, jit)
        for k in range(nl):
            _out_1d(c_f, s, c_jit + 3 * nl * d, k, out, r, col_jit + 3 * k)
        # socket: unordered (IP, port) pair of one protocol
        p = proto[r]
        pa = sport[r]
        pb = dport[r]
        if p != 6 and p != 17 and p != 132 and p != 136:
            pa = 0
            pb = 0
        sfwd = a_hi < b_hi or (a_hi == b_hi and (a_lo < b_lo or (a_lo == b_lo and pa <= pb)))
        if sfwd:
            tail = (
                (np.uint64(p) << np.uint64(32)) | (np.uint64(pa) << np.uint64(16)) | np.uint64(pb)
            )
            s, new = _find(
                s_ht, s_keys, s_hsh, s_used, s_last, s_free, s_meta, a_hi, a_lo, b_hi, b_lo, tail
            )
        else:
            tail = (
                (np.uint64(p) << np.uint64(32)) | (np.uint64(pb) << np.uint64(16)) | np.uint64(pa)
            )
            s, new = _find(
                s_ht, s_keys, s_hsh, s_used, s_last, s_free, s_meta, b_hi, b_lo, a_hi, a_lo, tail
            )
        if new:
            _new_pair(s_f, s_tl, s)
        d = 0 if sfwd else 1
        _pair_update(s_f, s_tl, s, d, ts, v, nl, lnl, s_size, s_res, s_sr, out, r, col_sock)
        if ts > s_last[s] or new:
            s_last[s] = ts


@njit(cache=True)
def _ip_rows(cols: np.ndarray, n: int) -> np.ndarray:
    """Indices of the IP packets of a batch (transport header cut or not)."""
    idx = np.empty(n, np.int64)
    m = 0
    for i in range(n):
        st = cols[i, C_STATUS]
        if cols[i, C_IPVER] != 0 and (st == S_OK or st == S_TRUNC_L4):
            idx[m] = i
            m += 1
    return idx[:m]


def _pow2_at_least(n: int) -> int:
    return 1 << max(4, (n - 1).bit_length())


class _Table:
    """Arrays of one bounded hash table with `nf` float and `nt` int64 state columns per entry."""

    def __init__(self, capacity: int, nf: int, nt: int) -> None:
        if capacity < 1:
            raise ValueError("table capacity must be >= 1")
        self.capacity = capacity
        self.ht = np.zeros(_pow2_at_least(2 * capacity), np.int64)
        self.keys = np.zeros((capacity, _KEYW), np.uint64)
        self.hsh = np.zeros(capacity, np.int64)
        self.used = np.zeros(capacity, np.int8)
        self.last = np.full(capacity, _NEVER, np.int64)
        self.free = np.arange(capacity - 1, -1, -1, dtype=np.int64)  # pops 0, 1, 2 …
        self.meta = np.zeros(N_META, np.int64)
        self.meta[M_FREE_TOP] = capacity
        self.f = np.zeros((capacity, nf), np.float64)
        self.tl = np.zeros((capacity, nt), np.int64)

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.ht, self.keys, self.hsh, self.used, self.last, self.free, self.meta)

    @property
    def active(self) -> int:
        return int(self.meta[M_ACTIVE])

    @property
    def evicted(self) -> int:
        return int(self.meta[M_EVICTED])


@dataclass(frozen=True, slots=True)
class ExtractorCounters:
    packets: int
    skipped_not_ip: int
    hosts: int
    channels: int
    sockets: int
    evicted_hosts: int
    evicted_channels: int
    evicted_sockets: int


class AfterImage:
    """Stateful extractor: feed packets in capture order, get 100 features per IP packet.

    Capacities bound memory (about 0.2 KB per host, 0.7 KB per channel, 0.4 KB per socket
    with five decay rates); entries beyond them evict the stalest eighth of the table.
    """

    def __init__(
        self,
        *,
        lambdas: tuple[float, ...] = LAMBDAS,
        max_hosts: int = 65_536,
        max_channels: int = 262_144,
        max_sockets: int = 1_048_576,
    ) -> None:
        if not lambdas or any(not (lam > 0 and math.isfinite(lam)) for lam in lambdas):
            raise ValueError("decay rates must be positive and finite")
        self.lambdas = tuple(float(lam) for lam in lambdas)
        self.names = tuple(feature_names(self.lambdas))
        nl = len(self.lambdas)
        self._lnl = np.array(self.lambdas, np.float64) * math.log(2.0)
        self.hosts = _Table(max_hosts, 3 * nl, 1)
        self.channels = _Table(max_channels, 15 * nl, 3)
        self.sockets = _Table(max_sockets, 9 * nl, 3)
        self.packets = 0
        self.skipped = 0

    @property
    def n_features(self) -> int:
        return len(self.names)

    def update(
        self,
        ts_ns: np.ndarray,
        src_hi: np.ndarray,
        src_lo: np.ndarray,
        dst_hi: np.ndarray,
        dst_lo: np.ndarray,
        sport: np.ndarray,
        dport: np.ndarray,
        proto: np.ndarray,
        size: np.ndarray,
    ) -> np.ndarray:
        """Features [n, 100] of n packets given as columns (addresses as uint64 halves)."""
        n = len(ts_ns)
        out = np.empty((n, self.n_features), np.float64)
        if n == 0:
            return out
        h, c, s = self.hosts, self.channels, self.sockets
        extract(  # type: ignore[call-arg]
            np.ascontiguousarray(ts_ns, np.int64),
            np.ascontiguousarray(src_hi, np.uint64),
            np.ascontiguousarray(src_lo, np.uint64),
            np.ascontiguousarray(dst_hi, np.uint64),
            np.ascontiguousarray(dst_lo, np.uint64),
            np.ascontiguousarray(sport, np.int64),
            np.ascontiguousarray(dport, np.int64),
            np.ascontiguousarray(proto, np.int64),
            np.ascontiguousarray(size, np.float64),
            self._lnl,
            *h.arrays(),
            h.f,
            h.tl,
            *c.arrays(),
            c.f,
            c.tl,
            *s.arrays(),
            s.f,
            s.tl,
            out,
        )
        self.packets += n
        return out

    def process(self, batch: PacketBatch) -> tuple[np.ndarray, np.ndarray]:
        """(features [m, 100], packet indices [m]) of the IP packets of a batch."""
        cols = batch.cols
        idx = _ip_rows(cols, batch.n)
        self.skipped += batch.n - len(idx)
        c = cols[idx]
        a = batch.addr[idx]
        x = self.update(
            c[:, C_TS],
            a[:, A_SRC_HI],
            a[:, A_SRC_LO],
            a[:, A_DST_HI],
            a[:, A_DST_LO],
            c[:, C_SPORT],
            c[:, C_DPORT],
            c[:, C_PROTO],
            c[:, C_WIRELEN],
        )
        return x, idx

    def counters(self) -> ExtractorCounters:
        return ExtractorCounters(
            packets=self.packets,
            skipped_not_ip=self.skipped,
            hosts=self.hosts.active,
            channels=self.channels.active,
            sockets=self.sockets.active,
            evicted_hosts=self.hosts.evicted,
            evicted_channels=self.channels.evicted,
            evicted_sockets=self.sockets.evicted,
        )


def features_from_batch(batch: PacketBatch, extractor: AfterImage | None = None) -> np.ndarray:
    """Features [m, 100] of the IP packets of a batch (non-IP rows skipped), in batch order.

    Pass the same `extractor` for consecutive batches of one capture; without one, a fresh
    extractor sees only this batch.
    """
    ext = extractor if extractor is not None else AfterImage()
    return ext.process(batch)[0]
