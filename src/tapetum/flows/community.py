"""Community ID v1 for whole flow batches, compiled.

SHA-1 and base64 in numba for every exported flow at once, because a hashlib call per flow cost
as much as metering the packets (`tapetum.flows.key.community_id` wraps this for one flow; the
spec's test vectors check it). Every
Community ID message (at most 2+16+16+2+4 = 40 bytes) fits in one SHA-1 block.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from tapetum.flows.table import _icmp_counterpart

_V4_PREFIX = np.uint64(0xFFFF) << np.uint64(32)
_B64 = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", np.uint8)
_MASK32 = np.uint64(0xFFFFFFFF)


@njit(cache=True, inline="always")
def _rotl(x: np.uint64, n: int) -> np.uint64:
    return ((x << np.uint64(n)) | (x >> np.uint64(32 - n))) & _MASK32


@njit(cache=True)
def _sha1_block(msg: np.ndarray, length: int, out: np.ndarray) -> None:
    """SHA-1 of msg[:length] (length <= 55) into out[0:20]."""
    block = np.zeros(64, dtype=np.uint8)
    block[:length] = msg[:length]
    block[length] = 0x80
    bits = length * 8
    block[62] = (bits >> 8) & 0xFF
    block[63] = bits & 0xFF
    w = np.zeros(80, dtype=np.uint64)
    for t in range(16):
        w[t] = (
            (np.uint64(block[4 * t]) << np.uint64(24))
            | (np.uint64(block[4 * t + 1]) << np.uint64(16))
            | (np.uint64(block[4 * t + 2]) << np.uint64(8))
            | np.uint64(block[4 * t + 3])
        )
    for t in range(16, 80):
        w[t] = _rotl(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1)
    h0 = np.uint64(0x67452301)
    h1 = np.uint64(0xEFCDAB89)
    h2 = np.uint64(0x98BADCFE)
    h3 = np.uint64(0x10325476)
    h4 = np.uint64(0xC3D2E1F0)
    a, b, c, d, e = h0, h1, h2, h3, h4
    for t in range(80):
        if t < 20:
            f = (b & c) | ((~b & _MASK32) & d)
            k = np.uint64(0x5A827999)
        elif t < 40:
            f = b ^ c ^ d
            k = np.uint64(0x6ED9EBA1)
        elif t < 60:
            f = (b & c) | (b & d) | (c & d)
            k = np.uint64(0x8F1BBCDC)
        else:
            f = b ^ c ^ d
            k = np.uint64(0xCA62C1D6)
        tmp = (_rotl(a, 5) + f + e + k + w[t]) & _MASK32
        e = d
        d = c
        c = _rotl(b, 30)
        b = a
        a = tmp
    hs = (
        (h0 + a) & _MASK32,
        (h1 + b) & _MASK32,
        (h2 + c) & _MASK32,
        (h3 + d) & _MASK32,
        (h4 + e) & _MASK32,
    )
    for i in range(5):
        v = hs[i]
        out[4 * i] = (v >> np.uint64(24)) & np.uint64(0xFF)
        out[4 * i + 1] = (v >> np.uint64(16)) & np.uint64(0xFF)
        out[4 * i + 2] = (v >> np.uint64(8)) & np.uint64(0xFF)
        out[4 * i + 3] = v & np.uint64(0xFF)


@njit(cache=True, inline="always")
def _put_addr(msg: np.ndarray, p: int, hi: np.uint64, lo: np.uint64, v4: bool) -> int:
    if v4:
        for k in range(4):
            msg[p + k] = (lo >> np.uint64(24 - 8 * k)) & np.uint64(0xFF)
        return p + 4
    for k in range(8):
        msg[p + k] = (hi >> np.uint64(56 - 8 * k)) & np.uint64(0xFF)
        msg[p + 8 + k] = (lo >> np.uint64(56 - 8 * k)) & np.uint64(0xFF)
    return p + 16


@njit(cache=True)
def community_ids(
    src_hi: np.ndarray,
    src_lo: np.ndarray,
    dst_hi: np.ndarray,
    dst_lo: np.ndarray,
    proto: np.ndarray,
    sport: np.ndarray,
    dport: np.ndarray,
    seed: int,
    b64: np.ndarray,
    out: np.ndarray,
) -> None:
    """Write "1:" + base64(SHA-1) for each flow into out[i, 0:30] (ASCII)."""
    msg = np.zeros(64, dtype=np.uint8)
    digest = np.zeros(21, dtype=np.uint8)  # one spare byte so base64 groups read 3 at a time
    for i in range(src_hi.shape[0]):
        s_hi, s_lo, d_hi, d_lo = src_hi[i], src_lo[i], dst_hi[i], dst_lo[i]
        sp, dp, pr = sport[i], dport[i], proto[i]
        one_way = False
        if pr == 1 or pr == 58:
            cp = _icmp_counterpart(pr, sp)
            if cp >= 0:
                dp = cp
            else:
                one_way = True
        swap = False
        if not one_way:
            if s_hi != d_hi:
                swap = s_hi > d_hi
            elif s_lo != d_lo:
                swap = s_lo > d_lo
            else:
                swap = sp > dp
        if swap:
            s_hi, s_lo, d_hi, d_lo, sp, dp = d_hi, d_lo, s_hi, s_lo, dp, sp
        v4 = s_hi == 0 and (s_lo & ~_MASK32) == _V4_PREFIX
        msg[0] = (seed >> 8) & 0xFF
        msg[1] = seed & 0xFF
        p = _put_addr(msg, 2, s_hi, s_lo, v4)
        p = _put_addr(msg, p, d_hi, d_lo, v4)
        msg[p] = pr
        msg[p + 1] = 0
        p += 2
        if pr == 1 or pr == 6 or pr == 17 or pr == 58 or pr == 132:
            msg[p] = (sp >> 8) & 0xFF
            msg[p + 1] = sp & 0xFF
            msg[p + 2] = (dp >> 8) & 0xFF
            msg[p + 3] = dp & 0xFF
            p += 4
        _sha1_block(msg, p, digest)
        digest[20] = 0
        out[i, 0] = 49  # "1"
        out[i, 1] = 58  # ":"
        q = 2
        for g in range(7):  # 20 bytes: 6 full groups of 3, then 2 bytes and one "="
            b0 = digest[3 * g]
            b1 = digest[3 * g + 1]
            b2 = digest[3 * g + 2] if g < 6 else 0
            out[i, q] = b64[b0 >> 2]
            out[i, q + 1] = b64[((b0 & 3) << 4) | (b1 >> 4)]
            out[i, q + 2] = b64[((b1 & 15) << 2) | (b2 >> 6)]
            out[i, q + 3] = b64[b2 & 63] if g < 6 else 61  # "="
            q += 4


def community_id_array(
    src_hi: np.ndarray,
    src_lo: np.ndarray,
    dst_hi: np.ndarray,
    dst_lo: np.ndarray,
    proto: np.ndarray,
    sport: np.ndarray,
    dport: np.ndarray,
    seed: int = 0,
) -> list[str]:
    n = src_hi.shape[0]
    out = np.zeros((n, 30), dtype=np.uint8)
    if n:
        community_ids(
            np.ascontiguousarray(src_hi, dtype=np.uint64),
            np.ascontiguousarray(src_lo, dtype=np.uint64),
            np.ascontiguousarray(dst_hi, dtype=np.uint64),
            np.ascontiguousarray(dst_lo, dtype=np.uint64),
            np.ascontiguousarray(proto, dtype=np.int64),
            np.ascontiguousarray(sport, dtype=np.int64),
            np.ascontiguousarray(dport, dtype=np.int64),
            seed & 0xFFFF,
            _B64,
            out,
        )
    ids: list[str] = out.view("S30")[:, 0].astype(str).tolist()
    return ids
