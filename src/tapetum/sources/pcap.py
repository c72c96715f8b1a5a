"""Capture file source: classic pcap (µs/ns, both byte orders) and pcapng, plain or gzip.

The file is read in large chunks into numpy buffers; compiled walkers index the records and
`decode_batch` fills header columns, so no Python object is created per packet. Corrupt records
are reported with the file and byte offset (in the decompressed stream for .gz), skipped by
resynchronising on the next plausible record, and counted; everything readable is kept.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BufferedReader

import numpy as np

from tapetum.errors import CaptureFormatError, InputWarning
from tapetum.sources import pcap_index as ix
from tapetum.sources.decode import (
    C_CAPLEN,
    C_FILEOFF,
    C_LINKTYPE,
    C_OFF,
    C_TS,
    C_WIRELEN,
    N_COLS,
    SUPPORTED_LINKTYPES,
    decode_batch,
)

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_BOM = 0x1A2B3C4D

#: Small enough that a chunk stays in the CPU cache between reading and decoding it.
DEFAULT_CHUNK_BYTES = 2 << 20
DEFAULT_BATCH_PACKETS = 16_384
#: Larger records are corrupt: the largest snaplen any libpcap uses is 256 KiB.
DEFAULT_MAX_CAPLEN = 262_144
MAX_WARNINGS_PER_KIND = 20


@dataclass(slots=True)
class PacketBatch:
    """Decoded packets: header columns over a buffer holding the raw frames.

    Like libpcap's packet data, a batch from `CaptureReader` is valid only until the next batch
    is requested: the reader reuses its buffers (fresh memory per batch costs page faults that
    dominate the read). Use `copy()` to keep one.
    """

    buf: np.ndarray
    cols: np.ndarray
    addr: np.ndarray
    n: int
    path: str

    def copy(self) -> PacketBatch:
        return PacketBatch(self.buf.copy(), self.cols.copy(), self.addr.copy(), self.n, self.path)


@dataclass(slots=True)
class ReaderCounters:
    packets: int = 0
    bytes_captured: int = 0
    bytes_on_wire: int = 0
    corrupt_records: int = 0
    skipped_bytes: int = 0
    truncated_records: int = 0
    skipped_blocks: int = 0
    warnings_by_kind: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Interface:
    linktype: int
    snaplen: int
    tsresol_num: int  # units per second
    tsoffset_s: int


class _GzipStream:
    """Incremental gzip decompression (all members) that hands out every byte decoded before a
    damaged or truncated part, then raises on the next read.

    `gzip.GzipFile.readinto` raises as soon as the stream ends early and loses what it had decoded
    in that call, which for a small damaged file is everything.
    """

    _IN = 1 << 20

    def __init__(self, raw: BufferedReader) -> None:
        self._raw = raw
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._started = False  # the current member has consumed input
        self._out = bytearray()
        self._error: Exception | None = None
        self._done = False

    def readinto(self, view: memoryview) -> int:
        want = len(view)
        while len(self._out) < want and not self._done:
            self._decode_more(want - len(self._out))
        n = min(want, len(self._out))
        if n == 0 and self._error is not None:
            err, self._error = self._error, None
            raise err
        view[:n] = self._out[:n]
        del self._out[:n]
        return n

    def _decode_more(self, need: int) -> None:
        if self._d.eof:  # a member ended; another may follow
            data = self._d.unused_data
            self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self._started = False
        else:
            data = self._d.unconsumed_tail
        if not data:
            data = self._raw.read(self._IN)
            if not data:
                if self._started:
                    self._error = EOFError("compressed stream ends before its end marker")
                self._done = True
                return
        self._started = True
        try:
            self._out += self._d.decompress(data, max(need, 1 << 16))
        except zlib.error as exc:
            self._error = exc
            self._done = True

    def close(self) -> None:
        self._done = True


def _tsresol(value: int) -> int:
    if value & 0x80:
        return int(2 ** (value & 0x7F))
    return int(10 ** (value & 0x7F))


class CaptureReader:
    """Iterate `PacketBatch`es from one capture file. A `Source`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        batch_packets: int = DEFAULT_BATCH_PACKETS,
        max_caplen: int = DEFAULT_MAX_CAPLEN,
        tunnels: int = 0,
    ) -> None:
        """`tunnels`: `decode.TUNNEL_*` bits; packets of those tunnels are decoded as their inner
        packet (C_TUNNEL tells which). Default none: a tunnel is a flow between its endpoints."""
        self.path = os.fspath(path)
        self.tunnels = tunnels
        self.chunk_bytes = chunk_bytes
        self.batch_packets = batch_packets
        self.max_caplen = max_caplen
        self.counters = ReaderCounters()
        self.warnings: list[InputWarning] = []
        self.format = ""
        self.linktypes: set[int] = set()
        try:
            self.total_bytes = os.path.getsize(self.path)
            raw = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise CaptureFormatError(self.path, None, exc.strerror or str(exc)) from None
        self._raw = raw
        head = raw.read(2)
        raw.seek(0)
        self.compressed = head == b"\x1f\x8b"
        self._f: BufferedReader | _GzipStream = _GzipStream(raw) if self.compressed else raw
        self._eof = False
        self._cols_buf: np.ndarray | None = None
        self._addr_buf: np.ndarray | None = None
        self._rec_buf: np.ndarray | None = None
        self._bad_detail = ""
        self._snaplen = 0
        self._record_header = 16  # bytes before a packet's data: 16 pcap, 28 pcapng EPB
        self._stream_pos = 0  # bytes consumed from the (decompressed) stream into buffers

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def progress_bytes(self) -> int:
        """Position in the file on disk (compressed bytes for .gz), for progress bars."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return self.total_bytes

    def warn(self, offset: int | None, kind: str, message: str) -> None:
        seen = self.counters.warnings_by_kind.get(kind, 0)
        self.counters.warnings_by_kind[kind] = seen + 1
        if seen < MAX_WARNINGS_PER_KIND:
            self.warnings.append(InputWarning(self.path, offset, kind, message))

    def _read_into(self, buf: np.ndarray, start: int) -> int:
        """Fill buf[start:] from the stream; return the new fill level."""
        view = buf.data[start:]
        fill = start
        while fill < buf.shape[0] and not self._eof:
            try:
                got = self._f.readinto(view[fill - start :])
            except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
                self.warn(
                    self._stream_pos + fill - start,
                    "compressed_stream",
                    f"compressed stream is damaged or ends early ({exc}); "
                    "keeping the packets before it",
                )
                self._eof = True
                break
            if not got:
                self._eof = True
                break
            fill += got
        self._stream_pos += fill - start
        return fill

    def close(self) -> None:
        try:
            if self._f is not self._raw:
                self._f.close()
        finally:
            self._raw.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- format dispatch --------------------------------------------------------------------

    def __iter__(self) -> Iterator[PacketBatch]:
        buf = np.empty(max(self.chunk_bytes, self.max_caplen + 64, 64), dtype=np.uint8)
        fill = self._read_into(buf, 0)
        if fill < 4:
            if fill == 0:
                raise CaptureFormatError(self.path, 0, "empty file: not a pcap or pcapng capture")
            raise CaptureFormatError(self.path, 0, f"file too short ({fill} bytes) for a capture")
        magic_le = struct.unpack_from("<I", buf.data, 0)[0]
        magic_be = struct.unpack_from(">I", buf.data, 0)[0]
        if magic_le == ix.PCAPNG_SHB:
            self.format = "pcapng"
            self._record_header = 28
            yield from self._iter_pcapng(buf, fill)
        elif magic_le in (PCAP_MAGIC_US, PCAP_MAGIC_NS) or magic_be in (
            PCAP_MAGIC_US,
            PCAP_MAGIC_NS,
        ):
            yield from self._iter_pcap(buf, fill)
        else:
            raise CaptureFormatError(
                self.path,
                0,
                f"unknown file magic 0x{magic_le:08x}: not a pcap or pcapng capture",
            )

    def _new_buffer(self, buf: np.ndarray, pos: int, fill: int, need: int = 0) -> np.ndarray:
        """The chunk buffer with the unconsumed tail buf[pos:fill] moved to its start.

        Reused in place (batches from it have been consumed by then); replaced by a larger one
        only when a record does not fit.
        """
        tail = fill - pos
        size = max(self.chunk_bytes, tail + need + 64)
        if size <= buf.shape[0]:
            buf[:tail] = buf[pos:fill].copy()
            return buf
        nb = np.empty(size, dtype=np.uint8)
        nb[:tail] = buf[pos:fill]
        return nb

    def _advance(
        self, buf: np.ndarray, keep: int, fill: int, need: int = 0
    ) -> tuple[np.ndarray, int]:
        """Drop buf[:keep], read more behind the rest; returns the buffer and its fill level."""
        buf = self._new_buffer(buf, keep, fill, need)
        return buf, self._read_into(buf, fill - keep)

    def _columns(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        # Reused across batches; decode_batch resets each row it fills.
        if self._cols_buf is None:
            self._cols_buf = np.zeros((n, N_COLS), dtype=np.int64)
            self._addr_buf = np.zeros((n, 4), dtype=np.uint64)
        assert self._addr_buf is not None
        return self._cols_buf[:n], self._addr_buf[:n]

    def _record_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._rec_buf is None:
            self._rec_buf = np.empty((5, self.batch_packets), dtype=np.int64)
        return self._rec_buf[0], self._rec_buf[1], self._rec_buf[2]

    def _finish_batch(
        self,
        buf: np.ndarray,
        cols: np.ndarray,
        addr: np.ndarray,
        n: int,
        base: int,
        fileoff_done: bool = False,
    ) -> PacketBatch:
        cols = cols[:n]
        addr = addr[:n]
        if not fileoff_done:
            cols[:, C_FILEOFF] = cols[:, C_OFF] + base
        self._check_lengths(cols)
        decode_batch(buf, cols, addr, n, self.tunnels)
        self.counters.packets += n
        self.counters.bytes_captured += int(cols[:, C_CAPLEN].sum())
        self.counters.bytes_on_wire += int(cols[:, C_WIRELEN].sum())
        return PacketBatch(buf=buf, cols=cols, addr=addr, n=n, path=self.path)

    def _check_lengths(self, cols: np.ndarray) -> None:
        """Records longer than the file's snaplen or than the packet itself are kept as
        recorded (libpcap tolerates both), but counted and reported."""
        caplen = cols[:, C_CAPLEN]
        checks = [("caplen_over_wirelen", caplen > cols[:, C_WIRELEN], "its original length")]
        if self._snaplen > 0:
            checks.append(("caplen_over_snaplen", caplen > self._snaplen, "the file's snaplen"))
        for kind, bad, what in checks:
            if bad.any():
                first = int(np.argmax(bad))
                count = int(bad.sum())
                self.warn(
                    int(cols[first, C_FILEOFF]) - self._record_header,
                    kind,
                    f"{count} record(s) in this batch capture more bytes than {what}; "
                    "kept as recorded",
                )

    # -- classic pcap -----------------------------------------------------------------------

    def _iter_pcap(self, buf: np.ndarray, fill: int) -> Iterator[PacketBatch]:
        if fill < 24:
            raise CaptureFormatError(self.path, 0, "pcap global header truncated")
        magic_le = struct.unpack_from("<I", buf.data, 0)[0]
        swapped = magic_le not in (PCAP_MAGIC_US, PCAP_MAGIC_NS)
        order = ">" if swapped else "<"
        magic, _vmaj, _vmin, _tz, _sig, snaplen, network = struct.unpack_from(
            order + "IHHiIII", buf.data, 0
        )
        nanos = magic == PCAP_MAGIC_NS
        self.format = "pcap-ns" if nanos else "pcap"
        # The upper bits of the link type carry FCS info (LINKTYPE_* spec); keep the type.
        linktype = network & 0x0FFFFFFF
        self.linktypes.add(linktype)
        if linktype not in SUPPORTED_LINKTYPES:
            self.warn(
                20,
                "unknown_link_type",
                f"link type {linktype} is not supported; its packets are counted, not decoded",
            )
        max_caplen = self.max_caplen
        self._snaplen = snaplen
        pos = 24
        base = 0  # file offset of buf[0]
        last_sec = 0
        bad_at = -1  # file offset of a corrupt region being skipped, or -1
        while True:
            if bad_at >= 0:
                nxt = ix.resync_pcap(buf, fill, pos, swapped, max_caplen, last_sec)
                if nxt < 0:
                    if self._eof:
                        self._corrupt(bad_at, base + fill, "no valid record follows")
                        return
                    # Keep enough tail to check a header and the one after it.
                    keep = max(pos + 1, fill - (max_caplen + 32))
                    base += keep
                    buf, fill = self._advance(buf, keep, fill)
                    pos = -1
                    continue
                self._corrupt(bad_at, base + nxt, "resynchronised on the next valid record")
                bad_at = -1
                pos = nxt
            cols, addr = self._columns(self.batch_packets)
            n, pos, status, sec = ix.index_pcap_rows(
                buf, fill, pos, swapped, max_caplen, nanos, linktype, base, cols
            )
            if n:
                last_sec = sec
                yield self._finish_batch(buf, cols, addr, n, base, fileoff_done=True)
            if status == ix.OUT_FULL:
                continue
            if status == ix.BAD_RECORD:
                claimed = struct.unpack_from(order + "I", buf.data, pos + 8)[0]
                self._bad_detail = f"record header claims {claimed} bytes (limit {max_caplen})"
                bad_at = base + pos
                continue
            # NEED_MORE
            if self._eof:
                if pos < fill:
                    self._truncated(buf, base, pos, fill, order, 16, 8)
                return
            need = 0
            if pos + 16 <= fill:
                need = 16 + struct.unpack_from(order + "I", buf.data, pos + 8)[0]
            base += pos
            buf, fill = self._advance(buf, pos, fill, need)
            pos = 0

    def _corrupt(self, start: int, stop: int, outcome: str) -> None:
        self.counters.corrupt_records += 1
        self.counters.skipped_bytes += max(0, stop - start)
        self.warn(
            start,
            "corrupt_record",
            f"corrupt {self.format} record ({self._bad_detail}); "
            f"skipped {stop - start} bytes, {outcome}",
        )

    def _truncated(
        self, buf: np.ndarray, base: int, pos: int, fill: int, order: str, hdr: int, len_at: int
    ) -> None:
        have = fill - pos
        if have >= hdr:
            want = hdr + struct.unpack_from(order + "I", buf.data, pos + len_at)[0]
            msg = f"final record truncated: {have} of {want} bytes present"
        else:
            msg = f"final record header truncated: {have} of {hdr} bytes present"
        self.counters.truncated_records += 1
        self.counters.skipped_bytes += have
        self.warn(base + pos, "truncated_record", msg)

    # -- pcapng -----------------------------------------------------------------------------

    def _iter_pcapng(self, buf: np.ndarray, fill: int) -> Iterator[PacketBatch]:
        pos = 0
        base = 0
        swapped = False
        order = "<"
        ifaces: list[_Interface] = []
        last_ts = 0
        skipped = np.zeros(1, dtype=np.int64)
        bad_at = -1
        max_block = self.max_caplen + 4096
        while True:
            if bad_at >= 0:
                nxt = ix.resync_pcapng(buf, fill, pos, swapped, max_block)
                if nxt < 0:
                    if self._eof:
                        self._corrupt(bad_at, base + fill, "no valid block follows")
                        break
                    # Keep what may hold the start of a block not yet read in full.
                    keep = max(pos + 1, fill - max_block)
                    base += keep
                    buf, fill = self._advance(buf, keep, fill)
                    pos = -1
                    continue
                self._corrupt(bad_at, base + nxt, "resynchronised on the next valid block")
                bad_at = -1
                pos = nxt
            cols, addr = self._columns(self.batch_packets)
            spb_snap = ifaces[0].snaplen if ifaces else 0
            off, caplen, wirelen = self._record_arrays()
            assert self._rec_buf is not None
            ts_raw, iface = self._rec_buf[3], self._rec_buf[4]
            n, pos, status = ix.index_pcapng(
                buf, fill, pos, swapped, self.max_caplen, spb_snap,
                off, caplen, wirelen, ts_raw, iface, 0, skipped,
            )  # fmt: skip
            if n:
                cols[:n, C_OFF] = off[:n]
                cols[:n, C_CAPLEN] = caplen[:n]
                cols[:n, C_WIRELEN] = wirelen[:n]
                last_ts = self._pcapng_times(cols, ts_raw[:n], iface[:n], ifaces, n, last_ts, base)
                yield self._finish_batch(buf, cols, addr, n, base)
            if status == ix.OUT_FULL:
                continue
            if status == ix.CONTEXT_BLOCK:
                got = (
                    self._context_block(buf, pos, fill, ifaces, base) if pos + 12 <= fill else None
                )
                if got is None:
                    status = ix.NEED_MORE
                elif got[0] < 0:
                    status = ix.BAD_RECORD
                else:
                    pos, new_order = got
                    if new_order:
                        order = new_order
                        swapped = order == ">"
                        ifaces.clear()
                    continue
            if status == ix.BAD_RECORD:
                self._bad_detail = "block length or type is inconsistent"
                bad_at = base + pos
                continue
            # NEED_MORE
            if self._eof:
                if pos < fill:
                    self._truncated(buf, base, pos, fill, order, 12, 4)
                break
            need = 0
            if pos + 8 <= fill:
                need = struct.unpack_from(order + "I", buf.data, pos + 4)[0]
                if need > max_block:
                    need = 0
            base += pos
            buf, fill = self._advance(buf, pos, fill, need)
            pos = 0
        self.counters.skipped_blocks += int(skipped[0])

    def _context_block(
        self, buf: np.ndarray, pos: int, fill: int, ifaces: list[_Interface], base: int
    ) -> tuple[int, str] | None:
        """Interpret an SHB or IDB at pos. None: need more data; (-1, ''): corrupt."""
        btype_le = struct.unpack_from("<I", buf.data, pos)[0]
        if btype_le == ix.PCAPNG_SHB:
            bom = struct.unpack_from("<I", buf.data, pos + 8)[0]
            if bom == PCAPNG_BOM:
                order = "<"
            elif bom == 0x4D3C2B1A:
                order = ">"
            else:
                self.warn(base + pos, "corrupt_block", "section header with a bad byte-order mark")
                return -1, ""
            blen = struct.unpack_from(order + "I", buf.data, pos + 4)[0]
            if blen < 28 or blen % 4 or blen > (1 << 24):
                return -1, ""
            if pos + blen > fill:
                return None
            return pos + blen, order
        order = "<" if struct.unpack_from("<I", buf.data, pos)[0] == ix.PCAPNG_IDB else ">"
        blen = struct.unpack_from(order + "I", buf.data, pos + 4)[0]
        if blen < 20 or blen % 4 or blen > (1 << 24):
            return -1, ""
        if pos + blen > fill:
            return None
        if struct.unpack_from(order + "I", buf.data, pos + blen - 4)[0] != blen:
            return -1, ""
        linktype, _res, snaplen = struct.unpack_from(order + "HHI", buf.data, pos + 8)
        tsresol = 1_000_000
        tsoffset = 0
        opt = pos + 16
        end = pos + blen - 4
        while opt + 4 <= end:
            code, olen = struct.unpack_from(order + "HH", buf.data, opt)
            if code == 0:
                break
            val = opt + 4
            if val + olen > end:
                break
            if code == 9 and olen >= 1:
                tsresol = _tsresol(int(buf[val]))
            elif code == 14 and olen >= 8:
                tsoffset = struct.unpack_from(order + "q", buf.data, val)[0]
            opt = val + ((olen + 3) & ~3)
        if tsresol <= 0 or tsresol > 10**18:
            self.warn(base + pos, "bad_tsresol", "interface with an unusable time resolution")
            tsresol = 1_000_000
        ifaces.append(_Interface(linktype, snaplen, tsresol, tsoffset))
        self.linktypes.add(linktype)
        if linktype not in SUPPORTED_LINKTYPES:
            self.warn(
                base + pos,
                "unknown_link_type",
                f"interface {len(ifaces) - 1} has link type {linktype}, which is not supported; "
                "its packets are counted, not decoded",
            )
        return pos + blen, ""

    def _pcapng_times(
        self,
        cols: np.ndarray,
        ts_raw: np.ndarray,
        iface: np.ndarray,
        ifaces: list[_Interface],
        n: int,
        last_ts: int,
        base: int,
    ) -> int:
        ts = np.zeros(n, dtype=np.int64)
        lt = np.full(n, -1, dtype=np.int64)
        for k, itf in enumerate(ifaces):
            m = iface == k
            if not m.any():
                continue
            lt[m] = itf.linktype
            raw = ts_raw[m]
            r = itf.tsresol_num
            secs = raw // r
            rem = raw % r
            # Exact integer ns for decimal resolutions up to ns; others via float (sub-ns).
            if r <= 1_000_000_000 and 1_000_000_000 % r == 0:
                nsec = rem * (1_000_000_000 // r)
            else:
                nsec = (rem.astype(np.float64) * (1e9 / r)).astype(np.int64)
            ts[m] = (secs + itf.tsoffset_s) * 1_000_000_000 + nsec
        unknown = (iface < 0) | (iface >= len(ifaces))
        if unknown.any():
            first = int(np.argmax(unknown))
            self.warn(
                base + int(cols[first, C_OFF]),
                "unknown_interface",
                f"{int(unknown.sum())} packets name an interface that was never described",
            )
        # Simple packet blocks carry no time: they take the previous packet's time.
        no_ts = ts_raw < 0
        if no_ts.any():
            idx = np.where(~no_ts, np.arange(n), -1)
            np.maximum.accumulate(idx, out=idx)
            prev = np.where(idx >= 0, ts[np.maximum(idx, 0)], last_ts)
            ts = np.where(no_ts, prev, ts)
        cols[:n, C_TS] = ts
        cols[:n, C_LINKTYPE] = lt
        return int(ts[n - 1]) if n else last_ts
