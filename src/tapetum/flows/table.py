"""Compiled bidirectional flow table: open addressing (linear probing) over a pool of flow slots.

Per packet: canonical key -> lookup/insert -> expiry check -> counters, TCP state, Zeek-style
history, the first 32 packets' sizes/directions/times. Expired flows are appended to an export
list; their slots are released only after Python has copied them out (so a batch can expire and
create flows freely). When no slot is free the kernel returns, and Python harvests, grows the
pool (up to its cap) or evicts the least recently active flows.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from tapetum.sources.decode import (
    A_DST_HI,
    A_DST_LO,
    A_SRC_HI,
    A_SRC_LO,
    C_DPORT,
    C_FLAGS,
    C_FRAG,
    C_IPID,
    C_IPLEN,
    C_IPVER,
    C_PAYLEN,
    C_PROTO,
    C_SPORT,
    C_STATUS,
    C_TS,
    C_TUNNEL,
    C_VLAN,
    C_WIRELEN,
    S_OK,
    S_TRUNC_L4,
)

SEQ_LEN = 32
HIST_LEN = 32

# Columns of the int64 pool array `pi`.
# One 256-byte row per flow slot, laid out so the fields read by the hash lookup share the first
# cache lines; the key words (PK_*) live in the same row (the `pk` array is a view of it).
PI_HASH = 0
PI_PORTA = 1
PI_PORTB = 2
PI_PROTO = 3
PI_VLAN = 4
PI_KEY = 5  # 5..8: the key words, see PK_*
PI_ORIG_IS_A = 9
PI_LAST = 10
PI_FIRST = 11
PI_STATE = 12
PI_NSEQ = 13
PI_UID = 14
PI_FLOWID = 15
PI_PKTS = 16  # +0 originator, +1 responder
PI_BYTES = 18
PI_IPBYTES = 20
PI_PAYBYTES = 22
PI_PAYPKTS = 24
PI_HISTLEN = 26
PI_HISTSEEN = 27
PI_REASON = 28
PI_USED = 29
PI_IPVER = 30
N_PI = 32

# Columns of the uint64 key array `pk`.
PK_A_HI = 0
PK_A_LO = 1
PK_B_HI = 2
PK_B_LO = 3

# TCP state bits (PI_STATE).
ST_ORIG_SYN = 1
ST_RESP_SYNACK = 2
ST_ORIG_FIN = 4
ST_RESP_FIN = 8
ST_ORIG_RST = 16
ST_RESP_RST = 32
ST_RESP_SYN = 64
ST_ORIG_SYNACK = 128
ST_FLIPPED = 256
ST_ESTABLISHED = 512
ST_ORIG_ACK_AFTER_SYNACK = 1024

# End reasons (PI_REASON).
R_ACTIVE = 0
R_IDLE = 1
R_ACTIVE_TIMEOUT = 2
R_TCP_CLOSED = 3
R_TCP_REUSE = 4
R_EVICTED = 5
R_END = 6
REASON_NAMES = (
    "active",
    "timeout",
    "active_timeout",
    "tcp_closed",
    "tcp_reuse",
    "evicted",
    "shutdown",
)

# Scalars in the int64 `meta` array.
M_FREE_TOP = 0
M_EXP_N = 1
M_NEXT_UID = 2
M_NEXT_SWEEP = 3
M_ACTIVE = 4
M_EVICTED = 5
M_HIGH = 6
M_FRAG_MISS = 7
M_NOW = 8
M_SKIPPED = 9  # packets left out by configuration (F_SKIP_LATER_FRAGMENTS)
N_META = 10

# Parameters in the int64 `params` array (all times in ns).
P_TCP_IDLE = 0
P_TCP_CLOSED = 1
P_UDP_IDLE = 2
P_ICMP_IDLE = 3
P_OTHER_IDLE = 4
P_ACTIVE = 5  # 0 disables the active timeout
P_SWEEP = 6
P_SEED = 7
P_FLAGS = 8  # F_* bits
P_MIN_IDLE = 9  # the shortest idle limit: flows seen more recently cannot have expired
N_PARAMS = 10

# Behaviour bits (P_FLAGS); all clear is Tapetum's (Zeek-like) behaviour.
F_ICMP_HOSTS_ONLY = 1  # ICMP flows keyed by addresses only, not by type/counterpart type
F_SKIP_LATER_FRAGMENTS = 2  # IP fragments after the first are not metered (counted in M_SKIPPED)
F_TCP_NO_CLOSE = 4  # FIN/RST do not end a TCP flow: no closed timeout, no split on a new SYN
F_TIMEOUT_MS = 8  # timeouts compare times truncated to ms and expire at >= the limit

# The VLAN key field holds VLAN ids in its low 24 bits and the tunnel id above them.
VLAN_BITS = 24
VLAN_MASK = (1 << VLAN_BITS) - 1

# Kernel status.
K_DONE = 0
K_NEED_SLOTS = 1

# History letters, indexed by event; upper case for the originator, lower for the responder.
H_SYN = 0  # S
H_SYNACK = 1  # H
H_ACK = 2  # A
H_DATA = 3  # D
H_FIN = 4  # F
H_RST = 5  # R
H_MULTI = 6  # Q
H_FINRST = 7  # I
HIST_UPPER = np.frombuffer(b"SHADFRQI", dtype=np.uint8).copy()
HIST_FLIP = ord("^")

_FRAG_SLOTS = 4096
_U64_MASK53 = np.uint64((1 << 53) - 1)


@njit(cache=True, inline="always")
def _mix(h: np.uint64) -> np.uint64:
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@njit(cache=True, inline="always")
def _key_hash(
    a_hi: np.uint64,
    a_lo: np.uint64,
    b_hi: np.uint64,
    b_lo: np.uint64,
    pa: int,
    pb: int,
    proto: int,
    vlan: int,
) -> np.uint64:
    h = _mix(a_hi ^ np.uint64(0x9E3779B97F4A7C15))
    h = _mix(h ^ a_lo)
    h = _mix(h ^ b_hi)
    h = _mix(h ^ b_lo)
    tail = (np.uint64(pa) << np.uint64(48)) | (np.uint64(pb) << np.uint64(32))
    tail |= (np.uint64(proto) << np.uint64(24)) | np.uint64(vlan & 0xFFFFFF)
    return _mix(h ^ tail ^ (np.uint64(vlan >> 24) << np.uint64(56)))


@njit(cache=True, inline="always")
def _icmp_counterpart(proto: int, t: int) -> int:
    """Counterpart ICMP type for request/reply pairs (community_id spec), else -1."""
    if proto == 1:
        if t == 8:
            return 0
        if t == 0:
            return 8
        if t == 13:
            return 14
        if t == 14:
            return 13
        if t == 15:
            return 16
        if t == 16:
            return 15
        if t == 10:
            return 9
        if t == 9:
            return 10
        if t == 17:
            return 18
        if t == 18:
            return 17
    else:
        if t == 128:
            return 129
        if t == 129:
            return 128
        if t == 133:
            return 134
        if t == 134:
            return 133
        if t == 135:
            return 136
        if t == 136:
            return 135
        if t == 130:
            return 131
        if t == 131:
            return 130
        if t == 144:
            return 145
        if t == 145:
            return 144
        if t == 139:
            return 140
        if t == 140:
            return 139
    return -1


@njit(cache=True)
def _idle_limit(pi: np.ndarray, s: int, params: np.ndarray) -> int:
    proto = pi[s, PI_PROTO]
    if proto == 6 and (params[P_FLAGS] & F_TCP_NO_CLOSE) == 0:
        st = pi[s, PI_STATE]
        closed = (st & (ST_ORIG_RST | ST_RESP_RST)) != 0 or (
            (st & ST_ORIG_FIN) != 0 and (st & ST_RESP_FIN) != 0
        )
        return int(params[P_TCP_CLOSED] if closed else params[P_TCP_IDLE])
    if proto == 17:
        return int(params[P_UDP_IDLE])
    if proto == 1 or proto == 58:
        return int(params[P_ICMP_IDLE])
    return int(params[P_OTHER_IDLE])


@njit(cache=True)
def _expired(pi: np.ndarray, s: int, now: int, params: np.ndarray) -> int:
    """The end reason if flow s has expired at time `now`, else R_ACTIVE."""
    if (params[P_FLAGS] & F_TIMEOUT_MS) != 0:
        # Millisecond clock, limits inclusive (NFStream's flow_expiration_handler).
        now_ms = now // 1_000_000
        if now_ms - pi[s, PI_LAST] // 1_000_000 >= _idle_limit(pi, s, params) // 1_000_000:
            return R_IDLE
        act = params[P_ACTIVE]
        if act > 0 and now_ms - pi[s, PI_FIRST] // 1_000_000 >= act // 1_000_000:
            return R_ACTIVE_TIMEOUT
        return R_ACTIVE
    if now - pi[s, PI_LAST] > _idle_limit(pi, s, params):
        if pi[s, PI_PROTO] == 6 and (params[P_FLAGS] & F_TCP_NO_CLOSE) == 0:
            st = pi[s, PI_STATE]
            if (st & (ST_ORIG_RST | ST_RESP_RST)) != 0 or (
                (st & ST_ORIG_FIN) != 0 and (st & ST_RESP_FIN) != 0
            ):
                return R_TCP_CLOSED
        return R_IDLE
    act = params[P_ACTIVE]
    if act > 0 and now - pi[s, PI_FIRST] > act:
        return R_ACTIVE_TIMEOUT
    return R_ACTIVE


@njit(cache=True)
def _ht_remove(ht: np.ndarray, pi: np.ndarray, s: int) -> None:
    """Remove slot s from the hash table (backward-shift deletion keeps probing valid)."""
    mask = ht.shape[0] - 1
    j = np.int64(np.uint64(pi[s, PI_HASH]) & np.uint64(mask))
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
        home = np.int64(np.uint64(pi[t, PI_HASH]) & np.uint64(mask))
        # Move t back to the hole at i if its home is not in (i, j] cyclically.
        if (j > i and (home <= i or home > j)) or (j < i and (home <= i and home > j)):
            ht[i] = ht[j]
            i = j
    ht[i] = 0


@njit(cache=True)
def _export(
    ht: np.ndarray, pi: np.ndarray, meta: np.ndarray, exp: np.ndarray, s: int, reason: int
) -> None:
    _ht_remove(ht, pi, s)
    pi[s, PI_REASON] = reason
    pi[s, PI_USED] = 2  # exported, waiting for harvest
    exp[meta[M_EXP_N]] = s
    meta[M_EXP_N] += 1
    meta[M_ACTIVE] -= 1


@njit(cache=True)
def sweep(
    ht: np.ndarray,
    pi: np.ndarray,
    meta: np.ndarray,
    exp: np.ndarray,
    params: np.ndarray,
    now: int,
    seen: np.ndarray,
) -> None:
    """Export every flow expired at `now`.

    `seen` mirrors each slot's last packet time densely (free slots: int64 max), so the sweep
    reads 8 bytes per slot and touches a flow's row only when it may have expired.
    """
    min_idle = params[P_MIN_IDLE] if params[P_ACTIVE] == 0 else -1
    for s in range(meta[M_HIGH]):
        if now - seen[s] <= min_idle:
            continue
        if pi[s, PI_USED] == 1:
            r = _expired(pi, s, now, params)
            if r != R_ACTIVE:
                _export(ht, pi, meta, exp, s, r)


@njit(cache=True)
def flush_all(ht: np.ndarray, pi: np.ndarray, meta: np.ndarray, exp: np.ndarray) -> None:
    """Export every active flow (end of input)."""
    for s in range(meta[M_HIGH]):
        if pi[s, PI_USED] == 1:
            _export(ht, pi, meta, exp, s, R_END)


@njit(cache=True)
def evict_oldest(
    ht: np.ndarray, pi: np.ndarray, meta: np.ndarray, exp: np.ndarray, fraction: float
) -> None:
    """Export the least recently active flows: those in the oldest `fraction` of the time span."""
    lo = np.iinfo(np.int64).max
    hi = np.iinfo(np.int64).min
    for s in range(meta[M_HIGH]):
        if pi[s, PI_USED] == 1:
            t = pi[s, PI_LAST]
            lo = min(lo, t)
            hi = max(hi, t)
    if lo > hi:
        return
    cut = lo + np.int64((hi - lo) * fraction)
    for s in range(meta[M_HIGH]):
        if pi[s, PI_USED] == 1 and pi[s, PI_LAST] <= cut:
            _export(ht, pi, meta, exp, s, R_EVICTED)
            meta[M_EVICTED] += 1


@njit(cache=True)
def release(
    pi: np.ndarray, meta: np.ndarray, free: np.ndarray, exp: np.ndarray, n: int, seen: np.ndarray
) -> None:
    """Return harvested export slots to the free stack."""
    for k in range(n):
        s = exp[k]
        pi[s, PI_USED] = 0
        seen[s] = np.iinfo(np.int64).max
        free[meta[M_FREE_TOP]] = s
        meta[M_FREE_TOP] += 1
    meta[M_EXP_N] = 0


@njit(cache=True)
def rehash(ht: np.ndarray, pi: np.ndarray, meta: np.ndarray) -> None:
    mask = ht.shape[0] - 1
    ht[:] = 0
    for s in range(meta[M_HIGH]):
        if pi[s, PI_USED] == 1:
            j = np.int64(np.uint64(pi[s, PI_HASH]) & np.uint64(mask))
            while ht[j] != 0:
                j = (j + 1) & mask
            ht[j] = s + 1


@njit(cache=True, inline="always")
def _hist(pi: np.ndarray, hist: np.ndarray, s: int, ev: int, d: int) -> None:
    bit = np.int64(1) << (ev * 2 + d)
    if (pi[s, PI_HISTSEEN] & bit) == 0:
        pi[s, PI_HISTSEEN] |= bit
        n = pi[s, PI_HISTLEN]
        if n < HIST_LEN:
            c = HIST_UPPER[ev]
            hist[s, n] = c if d == 0 else c + 32
            pi[s, PI_HISTLEN] = n + 1


@njit(cache=True)
def meter_batch(
    cols: np.ndarray,
    addr: np.ndarray,
    start: int,
    n: int,
    ht: np.ndarray,
    pk: np.ndarray,
    pi: np.ndarray,
    flags: np.ndarray,
    hist: np.ndarray,
    seq_size: np.ndarray,
    seq_dir: np.ndarray,
    seq_ts: np.ndarray,
    free: np.ndarray,
    meta: np.ndarray,
    exp: np.ndarray,
    params: np.ndarray,
    frag: np.ndarray,
    out_uid: np.ndarray,
    out_dir: np.ndarray,
    out_payord: np.ndarray,
    out_fid: np.ndarray,
    seen: np.ndarray,
) -> tuple[int, int]:
    """Meter packets start..n-1. Returns (next packet index, status)."""
    mask = ht.shape[0] - 1
    pflags = params[P_FLAGS]
    for i in range(start, n):
        st = cols[i, C_STATUS]
        skip = st != S_OK and st != S_TRUNC_L4
        if not skip and cols[i, C_FRAG] == 2 and (pflags & F_SKIP_LATER_FRAGMENTS) != 0:
            skip = True
            meta[M_SKIPPED] += 1
        if skip:
            out_uid[i] = -1
            out_fid[i] = -1
            out_dir[i] = 0
            out_payord[i] = -1
            continue
        # A flow needs at most one slot per packet; ask for more before touching state.
        if meta[M_FREE_TOP] == 0:
            return i, K_NEED_SLOTS
        ts = cols[i, C_TS]
        if ts > meta[M_NOW]:
            meta[M_NOW] = ts
        now = meta[M_NOW]
        if now >= meta[M_NEXT_SWEEP]:
            sweep(ht, pi, meta, exp, params, now, seen)
            meta[M_NEXT_SWEEP] = now + params[P_SWEEP]
        proto = cols[i, C_PROTO]
        sport = cols[i, C_SPORT]
        dport = cols[i, C_DPORT]
        fr = cols[i, C_FRAG]
        s_hi = addr[i, A_SRC_HI]
        s_lo = addr[i, A_SRC_LO]
        d_hi = addr[i, A_DST_HI]
        d_lo = addr[i, A_DST_LO]
        if fr != 0:
            # Later fragments carry no ports: borrow them from the first fragment.
            fh = _mix(s_lo ^ _mix(d_lo ^ np.uint64(cols[i, C_IPID] * 256 + proto)) ^ s_hi ^ d_hi)
            fslot = np.int64(fh & np.uint64(_FRAG_SLOTS - 1))
            if fr == 1:
                frag[fslot, 0] = np.int64(fh)
                frag[fslot, 1] = sport
                frag[fslot, 2] = dport
                frag[fslot, 3] = ts
            elif frag[fslot, 0] == np.int64(fh) and ts - frag[fslot, 3] < 60_000_000_000:
                sport = frag[fslot, 1]
                dport = frag[fslot, 2]
            else:
                meta[M_FRAG_MISS] += 1
        if (proto == 1 or proto == 58) and (pflags & F_ICMP_HOSTS_ONLY) != 0:
            sport = 0
            dport = 0
        pa = sport
        pb = dport
        one_way = False
        if (proto == 1 or proto == 58) and (pflags & F_ICMP_HOSTS_ONLY) == 0:
            cp = _icmp_counterpart(proto, sport)
            if cp >= 0:
                pb = cp
            else:
                one_way = True
        if one_way:
            src_is_a = True
        else:
            src_is_a = s_hi < d_hi or (
                s_hi == d_hi and (s_lo < d_lo or (s_lo == d_lo and pa <= pb))
            )
        if src_is_a:
            a_hi, a_lo, b_hi, b_lo, qa, qb = s_hi, s_lo, d_hi, d_lo, pa, pb
        else:
            a_hi, a_lo, b_hi, b_lo, qa, qb = d_hi, d_lo, s_hi, s_lo, pb, pa
        vlan = (cols[i, C_VLAN] & VLAN_MASK) | (cols[i, C_TUNNEL] << VLAN_BITS)
        h = _key_hash(a_hi, a_lo, b_hi, b_lo, qa, qb, proto, vlan)
        j = np.int64(h & np.uint64(mask))
        s = -1
        while ht[j] != 0:
            t = ht[j] - 1
            if (
                pi[t, PI_HASH] == np.int64(h)
                and pk[t, PK_A_LO] == a_lo
                and pk[t, PK_B_LO] == b_lo
                and pk[t, PK_A_HI] == a_hi
                and pk[t, PK_B_HI] == b_hi
                and pi[t, PI_PORTA] == qa
                and pi[t, PI_PORTB] == qb
                and pi[t, PI_PROTO] == proto
                and pi[t, PI_VLAN] == vlan
            ):
                s = t
                break
            j = (j + 1) & mask
        tcp_flags = cols[i, C_FLAGS] if proto == 6 else 0
        if s >= 0:
            # Judged by this packet's own time, so packets slightly out of order (merged
            # interfaces) do not end their flow; the sweep uses the capture's clock.
            r = _expired(pi, s, ts, params)
            if (
                r == R_ACTIVE
                and proto == 6
                and (tcp_flags & 0x12) == 0x02
                and (pflags & F_TCP_NO_CLOSE) == 0
            ):
                # A fresh SYN on a finished connection starts a new one (port reuse).
                fst = pi[s, PI_STATE]
                if (fst & (ST_ORIG_RST | ST_RESP_RST)) != 0 or (
                    (fst & ST_ORIG_FIN) != 0 and (fst & ST_RESP_FIN) != 0
                ):
                    r = R_TCP_REUSE
            if r != R_ACTIVE:
                _export(ht, pi, meta, exp, s, r)
                s = -1
                # The table changed under the probe: find the insertion point again.
                j = np.int64(h & np.uint64(mask))
                while ht[j] != 0:
                    j = (j + 1) & mask
        if s < 0:
            meta[M_FREE_TOP] -= 1
            s = free[meta[M_FREE_TOP]]
            if s >= meta[M_HIGH]:
                meta[M_HIGH] = s + 1
            ht[j] = s + 1
            meta[M_ACTIVE] += 1
            for c in range(N_PI):
                pi[s, c] = 0
            pk[s, PK_A_HI] = a_hi
            pk[s, PK_A_LO] = a_lo
            pk[s, PK_B_HI] = b_hi
            pk[s, PK_B_LO] = b_lo
            pi[s, PI_PORTA] = qa
            pi[s, PI_PORTB] = qb
            pi[s, PI_PROTO] = proto
            pi[s, PI_VLAN] = vlan
            pi[s, PI_IPVER] = cols[i, C_IPVER]
            pi[s, PI_HASH] = np.int64(h)
            pi[s, PI_FIRST] = ts
            pi[s, PI_LAST] = ts
            seen[s] = ts
            pi[s, PI_USED] = 1
            pi[s, PI_UID] = meta[M_NEXT_UID]
            meta[M_NEXT_UID] += 1
            fid = _mix(h ^ np.uint64(ts) ^ np.uint64(params[P_SEED])) & _U64_MASK53
            pi[s, PI_FLOWID] = np.int64(fid)
            orig_is_a = src_is_a
            if proto == 6 and (tcp_flags & 0x12) == 0x12:
                # First packet seen is a SYN-ACK: its receiver opened the connection.
                orig_is_a = not src_is_a
                pi[s, PI_STATE] |= ST_FLIPPED
                hist[s, 0] = HIST_FLIP
                pi[s, PI_HISTLEN] = 1
            pi[s, PI_ORIG_IS_A] = 1 if orig_is_a else 0
            for c in range(16):
                flags[s, c] = 0
        d = 0 if (pi[s, PI_ORIG_IS_A] == 1) == src_is_a else 1
        if ts > pi[s, PI_LAST]:
            pi[s, PI_LAST] = ts
            seen[s] = ts
        pi[s, PI_PKTS + d] += 1
        pi[s, PI_BYTES + d] += cols[i, C_WIRELEN]
        pi[s, PI_IPBYTES + d] += cols[i, C_IPLEN]
        paylen = cols[i, C_PAYLEN]
        pi[s, PI_PAYBYTES + d] += paylen
        out_uid[i] = pi[s, PI_UID]
        out_fid[i] = pi[s, PI_FLOWID]
        out_dir[i] = d
        if paylen > 0:
            out_payord[i] = pi[s, PI_PAYPKTS + d]
            pi[s, PI_PAYPKTS + d] += 1
        else:
            out_payord[i] = -1
        k = pi[s, PI_NSEQ]
        if k < SEQ_LEN:
            seq_size[s, k] = cols[i, C_IPLEN]
            seq_dir[s, k] = d
            seq_ts[s, k] = ts - pi[s, PI_FIRST]
            pi[s, PI_NSEQ] = k + 1
        if proto == 6:
            if cols[i, C_STATUS] == S_OK:
                for b in range(8):
                    if tcp_flags & (1 << b):
                        flags[s, d * 8 + b] += 1
                fst = pi[s, PI_STATE]
                syn = (tcp_flags & 0x02) != 0
                ack = (tcp_flags & 0x10) != 0
                fin = (tcp_flags & 0x01) != 0
                rst = (tcp_flags & 0x04) != 0
                if syn:
                    if d == 0:
                        fst |= ST_ORIG_SYNACK if ack else ST_ORIG_SYN
                    else:
                        fst |= ST_RESP_SYNACK if ack else ST_RESP_SYN
                if fin:
                    fst |= ST_ORIG_FIN if d == 0 else ST_RESP_FIN
                if rst:
                    fst |= ST_ORIG_RST if d == 0 else ST_RESP_RST
                if d == 0 and ack and not syn and (fst & ST_RESP_SYNACK) != 0:
                    fst |= ST_ORIG_ACK_AFTER_SYNACK
                pi[s, PI_STATE] = fst
                nbits = (1 if syn else 0) + (1 if fin else 0) + (1 if rst else 0)
                if nbits > 1:
                    _hist(pi, hist, s, H_FINRST if (fin and rst) else H_MULTI, d)
                elif nbits == 1:
                    if syn:
                        _hist(pi, hist, s, H_SYNACK if ack else H_SYN, d)
                    if fin:
                        _hist(pi, hist, s, H_FIN, d)
                    if rst:
                        _hist(pi, hist, s, H_RST, d)
                elif paylen > 0:
                    _hist(pi, hist, s, H_DATA, d)
                elif ack:
                    _hist(pi, hist, s, H_ACK, d)
        elif paylen > 0:
            _hist(pi, hist, s, H_DATA, d)
    return n, K_DONE
