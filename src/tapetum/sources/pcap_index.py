"""Compiled record walkers for classic pcap and pcapng.

They turn a chunk of file bytes into record offsets, lengths and raw timestamps without creating a
Python object per packet. They stop (with a status) at whatever needs Python: the end of the data
in the chunk, a full output array, a corrupt record, or a pcapng block that changes the context
(section or interface description).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from tapetum.sources.decode import C_CAPLEN, C_FILEOFF, C_LINKTYPE, C_OFF, C_TS, C_WIRELEN

# Walker status codes.
NEED_MORE = 0  # a partial record at the end of the chunk
OUT_FULL = 1  # the output arrays are full
BAD_RECORD = 2  # the record header at `pos` is implausible
CONTEXT_BLOCK = 3  # pcapng: a block Python must interpret (SHB, IDB) starts at `pos`

PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 0x00000001
PCAPNG_OPB = 0x00000002
PCAPNG_SPB = 0x00000003
PCAPNG_EPB = 0x00000006


@njit(cache=True, inline="always")
def _u32(buf: np.ndarray, pos: int, swapped: bool) -> int:
    if swapped:
        return int(
            (np.uint32(buf[pos]) << 24)
            | (np.uint32(buf[pos + 1]) << 16)
            | (np.uint32(buf[pos + 2]) << 8)
            | np.uint32(buf[pos + 3])
        )
    return int(
        np.uint32(buf[pos])
        | (np.uint32(buf[pos + 1]) << 8)
        | (np.uint32(buf[pos + 2]) << 16)
        | (np.uint32(buf[pos + 3]) << 24)
    )


@njit(cache=True, inline="always")
def _u16(buf: np.ndarray, pos: int, swapped: bool) -> int:
    if swapped:
        return int((np.uint32(buf[pos]) << 8) | np.uint32(buf[pos + 1]))
    return int(np.uint32(buf[pos]) | (np.uint32(buf[pos + 1]) << 8))


@njit(cache=True)
def index_pcap_rows(
    buf: np.ndarray,
    end: int,
    pos: int,
    swapped: bool,
    max_caplen: int,
    nanos: bool,
    linktype: int,
    base: int,
    cols: np.ndarray,
) -> tuple[int, int, int, int]:
    """Like `index_pcap`, writing straight into packet rows (C_TS, C_WIRELEN, C_CAPLEN, C_OFF,
    C_LINKTYPE, C_FILEOFF). Returns (n, pos, status, seconds of the last record)."""
    n = 0
    cap = cols.shape[0]
    last_sec = 0
    mult = 1 if nanos else 1000
    while True:
        if pos + 16 > end:
            return n, pos, NEED_MORE, last_sec
        caplen = _u32(buf, pos + 8, swapped)
        if caplen > max_caplen:
            return n, pos, BAD_RECORD, last_sec
        if pos + 16 + caplen > end:
            return n, pos, NEED_MORE, last_sec
        if n >= cap:
            return n, pos, OUT_FULL, last_sec
        last_sec = _u32(buf, pos, swapped)
        cols[n, C_TS] = last_sec * 1_000_000_000 + _u32(buf, pos + 4, swapped) * mult
        cols[n, C_WIRELEN] = _u32(buf, pos + 12, swapped)
        cols[n, C_CAPLEN] = caplen
        cols[n, C_OFF] = pos + 16
        cols[n, C_LINKTYPE] = linktype
        cols[n, C_FILEOFF] = base + pos + 16
        n += 1
        pos += 16 + caplen


@njit(cache=True)
def resync_pcap(
    buf: np.ndarray, end: int, pos: int, swapped: bool, max_caplen: int, last_sec: int
) -> int:
    """Find the next plausible record header after a corrupt one, or -1.

    Plausible: caplen <= max_caplen and <= wirelen + 64 KiB slack, microsecond field < 1e9, a
    timestamp within a day of the last good one (when known), and the header that follows it is
    plausible too (or it ends exactly at the end of the data).
    """
    p = pos + 1
    while p + 16 <= end:
        sec = _u32(buf, p, swapped)
        frac = _u32(buf, p + 4, swapped)
        caplen = _u32(buf, p + 8, swapped)
        wirelen = _u32(buf, p + 12, swapped)
        ok = caplen <= max_caplen and frac < 1_000_000_000 and caplen <= wirelen + 65536
        if ok and last_sec > 0:
            ok = abs(sec - last_sec) < 86400
        if ok:
            q = p + 16 + caplen
            if q == end:
                return p
            if q + 16 <= end:
                c2 = _u32(buf, q + 8, swapped)
                f2 = _u32(buf, q + 4, swapped)
                s2 = _u32(buf, q, swapped)
                if c2 <= max_caplen and f2 < 1_000_000_000 and abs(s2 - sec) < 86400:
                    return p
        p += 1
    return -1


@njit(cache=True)
def index_pcapng(
    buf: np.ndarray,
    end: int,
    pos: int,
    swapped: bool,
    max_caplen: int,
    spb_snaplen: int,
    out_off: np.ndarray,
    out_caplen: np.ndarray,
    out_wirelen: np.ndarray,
    out_ts: np.ndarray,
    out_iface: np.ndarray,
    n0: int,
    skipped: np.ndarray,
) -> tuple[int, int, int]:
    """Index pcapng packet blocks (EPB, SPB, OPB) in buf[pos:end]. Returns (n, pos, status).

    Other blocks (name resolution, statistics, decryption secrets, custom) are skipped and counted
    in skipped[0]. SHB and IDB stop the walk so Python can update byte order and interfaces.
    """
    n = n0
    cap = out_off.shape[0]
    while True:
        if pos + 12 > end:
            return n, pos, NEED_MORE
        btype = _u32(buf, pos, swapped)
        if btype == PCAPNG_SHB or btype == PCAPNG_IDB:
            return n, pos, CONTEXT_BLOCK
        blen = _u32(buf, pos + 4, swapped)
        if blen < 12 or (blen & 3) != 0 or blen > max_caplen + 4096:
            return n, pos, BAD_RECORD
        if pos + blen > end:
            return n, pos, NEED_MORE
        if _u32(buf, pos + blen - 4, swapped) != blen:
            return n, pos, BAD_RECORD
        if btype == PCAPNG_EPB or btype == PCAPNG_SPB or btype == PCAPNG_OPB:
            if n >= cap:
                return n, pos, OUT_FULL
            if btype == PCAPNG_EPB or btype == PCAPNG_OPB:
                # Same layout, except that the obsolete block has a 16-bit interface id
                # followed by a drop count.
                if blen < 32:
                    return n, pos, BAD_RECORD
                caplen = _u32(buf, pos + 20, swapped)
                if 28 + caplen > blen - 4:
                    return n, pos, BAD_RECORD
                if btype == PCAPNG_EPB:
                    out_iface[n] = _u32(buf, pos + 8, swapped)
                else:
                    out_iface[n] = _u16(buf, pos + 8, swapped)
                out_ts[n] = (np.int64(_u32(buf, pos + 12, swapped)) << 32) | np.int64(
                    _u32(buf, pos + 16, swapped)
                )
                out_caplen[n] = caplen
                out_wirelen[n] = _u32(buf, pos + 24, swapped)
                out_off[n] = pos + 28
            else:
                if blen < 16:
                    return n, pos, BAD_RECORD
                wirelen = _u32(buf, pos + 8, swapped)
                caplen = min(wirelen, blen - 16)
                if spb_snaplen > 0:
                    caplen = min(caplen, spb_snaplen)
                out_iface[n] = 0
                out_ts[n] = -1  # SPB has no timestamp: Python fills the last known one
                out_caplen[n] = caplen
                out_wirelen[n] = wirelen
                out_off[n] = pos + 12
            n += 1
        else:
            skipped[0] += 1
        pos += blen


@njit(cache=True)
def resync_pcapng(buf: np.ndarray, end: int, pos: int, swapped: bool, max_len: int) -> int:
    """Find the next well-formed block (known type, length repeated at its end), or -1.

    Every byte offset is tried: garbage of any length may precede the next block.
    """
    p = pos + 1
    while p + 12 <= end:
        btype = _u32(buf, p, swapped)
        if (btype >= 1 and btype <= 10) or btype == PCAPNG_SHB:
            blen = _u32(buf, p + 4, swapped)
            if (
                blen >= 12
                and (blen & 3) == 0
                and blen <= max_len
                and p + blen <= end
                and _u32(buf, p + blen - 4, swapped) == blen
            ):
                return p
        p += 1
    return -1
