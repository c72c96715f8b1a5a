"""Live capture from a network interface (Linux AF_PACKET, needs root or CAP_NET_RAW).

Two capture paths, both producing the same `PacketBatch` as the capture-file reader and decoded
by the same compiled `decode_batch` (there is no second decoder):

- ``ring`` (default): a TPACKET_V3 receive ring. The kernel writes packets into blocks of a
  memory-mapped ring and hands over a block when it is full or `retire_ms` after its first
  packet; a compiled walker indexes the ready blocks (offset, length, time of every packet) and
  the batch's buffer *is* the ring, so frames are never copied. The blocks go back to the kernel
  when the next batch is requested (the batch is valid until then, like the file reader's).
- ``recv``: a plain AF_PACKET socket read with `recvmsg_into` one frame at a time into a batch
  buffer (kernel time stamps from SO_TIMESTAMPNS). One Python call per packet: simpler, slower;
  kept for kernels or sandboxes without PACKET_RX_RING and as the benchmark's baseline.

Batches are handed out at least every `flush_ms` (250 ms by default) — empty ones while the
interface is idle, so the caller can advance its clock — and sooner when there is traffic: the
ring path hands over whatever blocks are ready (up to `batch_packets` packets), the recv path
at `batch_packets` packets. Kernel drop counters (PACKET_STATISTICS, which reset on every
read) are accumulated in `LiveCounters.kernel_drops`.

BPF: the filter expression is compiled by ``tcpdump -i IF -ddd EXPR`` (tcpdump knows the link
type of the interface) and attached with SO_ATTACH_FILTER (a `struct sock_fprog` built with
ctypes). The socket is created with protocol 0, which receives nothing, and bound to the
interface only after the filter is attached, so no unfiltered packet slips in.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import select
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from tapetum.errors import InputError, InputWarning
from tapetum.sources.decode import (
    C_CAPLEN,
    C_FILEOFF,
    C_LINKTYPE,
    C_OFF,
    C_TS,
    C_VLAN,
    C_VLANCOUNT,
    C_WIRELEN,
    LT_ETHERNET,
    LT_RAW,
    N_COLS,
    decode_batch,
)
from tapetum.sources.pcap import PacketBatch, ReaderCounters

# <linux/if_packet.h>, <linux/if_ether.h>, <asm-generic/socket.h>
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
PACKET_MR_PROMISC = 1
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 0x10
PACKET_OUTGOING = 4

#: Interface types (/sys/class/net/IF/type, ARPHRD_*) and the link type of their frames.
ARPHRD_LINKTYPES = {1: LT_ETHERNET, 772: LT_ETHERNET, 65534: LT_RAW}

DEFAULT_FLUSH_MS = 250
DEFAULT_BATCH_PACKETS = 16_384
DEFAULT_SNAPLEN = 262_144
#: Ring geometry: 64 blocks of 1 MiB. At 50 k packets/s of ~800 bytes a block fills in ~20 ms,
#: so the ring holds ~1.3 s of traffic while the pipeline is busy.
DEFAULT_BLOCK_BYTES = 1 << 20
DEFAULT_BLOCKS = 64
#: The kernel hands over a block that is not full this long after its first packet.
DEFAULT_RETIRE_MS = 50


class LiveCaptureError(InputError):
    """The interface cannot be captured from (not root, no such interface, bad filter …)."""

    def __init__(self, interface: str, message: str) -> None:
        super().__init__(f"interface {interface}", None, message)


@dataclass(slots=True)
class LiveCounters(ReaderCounters):
    """The file reader's counters (the pipeline reads them) plus the kernel's."""

    #: Packets the kernel dropped because the ring (or socket buffer) was full.
    kernel_drops: int = 0
    #: Packets the kernel passed the filter (PACKET_STATISTICS tp_packets).
    kernel_packets: int = 0
    #: Ring blocks the kernel filled while none was free (TPACKET_V3 tp_freeze_q_cnt).
    kernel_freezes: int = 0
    batches: int = 0
    empty_batches: int = 0
    blocks: int = 0
    vlan_tags_restored: int = 0
    #: Loopback: the copy of each packet seen leaving (it is seen again arriving).
    outgoing_skipped: int = 0


def compile_bpf(interface: str, expression: str) -> list[tuple[int, int, int, int]]:
    """Classic BPF instructions for a tcpdump filter expression on this interface."""
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        raise LiveCaptureError(
            interface, "--bpf needs tcpdump to compile the filter (apt install tcpdump)"
        )
    proc = subprocess.run(
        [tcpdump, "-i", interface, "-ddd", expression],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if proc.returncode != 0:
        msg = proc.stderr.strip().splitlines()
        raise LiveCaptureError(
            interface, f"bad BPF filter {expression!r}: {msg[-1] if msg else 'tcpdump failed'}"
        )
    lines = [ln.split() for ln in proc.stdout.splitlines() if ln.strip()]
    try:
        count = int(lines[0][0])
        prog = [(int(a), int(b), int(c), int(d)) for a, b, c, d in lines[1:]]
    except (IndexError, ValueError):
        raise LiveCaptureError(
            interface, f"tcpdump -ddd gave unexpected output: {proc.stdout[:200]!r}"
        ) from None
    if count != len(prog) or not prog:
        raise LiveCaptureError(interface, "tcpdump -ddd output is inconsistent")
    return prog


def attach_bpf(sock: socket.socket, prog: list[tuple[int, int, int, int]]) -> None:
    """SO_ATTACH_FILTER: the kernel copies the program out of our buffer during the call."""
    insns = (ctypes.c_uint8 * (8 * len(prog)))()
    for k, (code, jt, jf, kk) in enumerate(prog):
        struct.pack_into("=HBBI", insns, 8 * k, code, jt, jf, kk)
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; } (pointer aligned).
    fprog = struct.pack("HxxxxxxQ", len(prog), ctypes.addressof(insns))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def interface_linktype(interface: str) -> int:
    path = Path("/sys/class/net") / interface
    if not path.exists():
        known = (
            sorted(p.name for p in Path("/sys/class/net").iterdir())
            if Path("/sys/class/net").exists()
            else []
        )
        raise LiveCaptureError(
            interface, f"no such interface (this namespace has: {', '.join(known) or 'none'})"
        )
    try:
        arphrd = int((path / "type").read_text().strip())
    except (OSError, ValueError):
        arphrd = 1
    lt = ARPHRD_LINKTYPES.get(arphrd)
    if lt is None:
        raise LiveCaptureError(
            interface,
            f"interface type {arphrd} (ARPHRD) is not supported: Ethernet, loopback "
            "and raw-IP (tun) interfaces are",
        )
    return lt


@njit(cache=True)
def _walk_block(
    ring: np.ndarray,
    start: int,
    cols: np.ndarray,
    k0: int,
    vlan: np.ndarray,
    skip_outgoing: bool,
    skipped: np.ndarray,
) -> int:
    """Index the packets of one TPACKET_V3 block at ring[start:] into rows k0.. of cols (C_OFF,
    C_CAPLEN, C_WIRELEN, C_TS) and vlan (the tag the kernel took off, -1 none). Returns the row
    count after the block. Little-endian host assumed (x86, arm64).

    Layout (<linux/if_packet.h>): block header u32 version, u32 offset_to_priv, then
    tpacket_hdr_v1 (u32 block_status @8, u32 num_pkts @12, u32 offset_to_first_pkt @16 …);
    per packet tpacket3_hdr (u32 next_offset, sec, nsec, snaplen, len, status, u16 mac, net,
    u32 rxhash, u32 vlan_tci @32 …) followed at 48 by a sockaddr_ll (pkttype @10)."""
    num = _le32(ring, start + 12)
    p = start + _le32(ring, start + 16)
    k = k0
    for _ in range(num):
        nxt = _le32(ring, p)
        sec = _le32(ring, p + 4)
        nsec = _le32(ring, p + 8)
        snap = _le32(ring, p + 12)
        wire = _le32(ring, p + 16)
        status = _le32(ring, p + 20)
        mac = int(ring[p + 24]) | (int(ring[p + 25]) << 8)
        if skip_outgoing and ring[p + 48 + 10] == PACKET_OUTGOING:
            skipped[0] += 1
            if nxt == 0:
                break
            p += nxt
            continue
        cols[k, C_OFF] = p + mac
        cols[k, C_CAPLEN] = snap
        cols[k, C_WIRELEN] = wire
        cols[k, C_TS] = sec * 1_000_000_000 + nsec
        cols[k, C_FILEOFF] = 0
        if status & TP_STATUS_VLAN_VALID:
            vlan[k] = _le32(ring, p + 32) & 0x0FFF
        else:
            vlan[k] = -1
        k += 1
        if nxt == 0:
            break
        p += nxt
    return k


@njit(cache=True, inline="always")
def _le32(buf: np.ndarray, p: int) -> int:
    return int(buf[p]) | (int(buf[p + 1]) << 8) | (int(buf[p + 2]) << 16) | (int(buf[p + 3]) << 24)


def restore_vlan_tags(cols: np.ndarray, vlan: np.ndarray) -> int:
    """Put the VLAN tag the kernel stripped (hardware offload) back as the outer tag, as the
    decoder would have read it from the frame (outer * 4096 + inner)."""
    tagged = vlan >= 0
    if not tagged.any():
        return 0
    idx = np.flatnonzero(tagged)
    inner = cols[idx, C_VLAN] // 4096  # a tag left in the frame becomes the inner one
    cols[idx, C_VLAN] = vlan[idx] * 4096 + inner
    cols[idx, C_VLANCOUNT] += 1
    return int(idx.shape[0])


class LiveCapture:
    """Iterate `PacketBatch`es captured on `interface` until `close()`. A `Source`.

    Each batch is valid until the next one is requested. Empty batches (n == 0) come out at
    least every `flush_ms` while the interface is idle.
    """

    def __init__(
        self,
        interface: str,
        *,
        bpf: str | None = None,
        mode: str = "ring",
        promiscuous: bool = True,
        flush_ms: int = DEFAULT_FLUSH_MS,
        batch_packets: int = DEFAULT_BATCH_PACKETS,
        snaplen: int = DEFAULT_SNAPLEN,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        blocks: int = DEFAULT_BLOCKS,
        retire_ms: int = DEFAULT_RETIRE_MS,
        tunnels: int = 0,
    ) -> None:
        if mode not in ("ring", "recv"):
            raise ValueError(f"unknown capture mode {mode!r}")
        self.interface = interface
        self.path = f"live:{interface}"
        self.format = f"af_packet-{'tpacket_v3' if mode == 'ring' else 'recv'}"
        self.mode = mode
        self.flush_ns = max(1, flush_ms) * 1_000_000
        self.batch_packets = batch_packets
        self.snaplen = snaplen
        self.tunnels = tunnels
        self.counters = LiveCounters()
        self.warnings: list[InputWarning] = []
        self.total_bytes = 0
        self._closed = False
        self.linktype = interface_linktype(interface)
        # Loopback shows every packet twice (leaving and arriving): keep one, as libpcap does.
        self.skip_outgoing = Path(f"/sys/class/net/{interface}/type").read_text().strip() == "772"
        prog = compile_bpf(interface, bpf) if bpf else None
        try:
            # Protocol 0: receives nothing until bound, so the filter is in place first.
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError:
            raise LiveCaptureError(
                interface,
                "live capture needs root (or CAP_NET_RAW): run as root, or "
                "`setcap cap_net_raw,cap_net_admin=eip` on the Python interpreter",
            ) from None
        except OSError as exc:
            raise LiveCaptureError(interface, f"cannot open an AF_PACKET socket: {exc}") from None
        try:
            if prog is not None:
                attach_bpf(self.sock, prog)
            self.ifindex = socket.if_nametoindex(interface)
            if promiscuous:
                mreq = struct.pack("iHH8s", self.ifindex, PACKET_MR_PROMISC, 0, b"")
                self.sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            self._ring: mmap.mmap | None = None
            if mode == "ring":
                self._setup_ring(block_bytes, blocks, retire_ms)
            else:
                self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                # A socket buffer that holds a pipeline pause (~1 s at 50 k packets/s): the
                # plain SO_RCVBUF is capped by net.core.rmem_max (~200 KiB); root may force it.
                try:
                    self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
                except OSError:
                    with contextlib.suppress(OSError):
                        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
            self.sock.bind((interface, ETH_P_ALL))
        except OSError as exc:
            self.sock.close()
            raise LiveCaptureError(interface, f"cannot capture: {exc}") from None
        self._poll = select.poll()
        self._poll.register(self.sock.fileno(), select.POLLIN | select.POLLERR)
        self._cols = np.zeros((batch_packets, N_COLS), dtype=np.int64)
        self._addr = np.zeros((batch_packets, 4), dtype=np.uint64)
        self._vlan = np.full(batch_packets, -1, dtype=np.int64)

    # -- setup ------------------------------------------------------------------------------

    def _setup_ring(self, block_bytes: int, blocks: int, retire_ms: int) -> None:
        page = mmap.PAGESIZE
        block_bytes = max(page, (block_bytes // page) * page)
        self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        frame = 2048  # V3 packs packets of any size into blocks; frame_nr only sanity-checks
        # struct tpacket_req3: block_size, block_nr, frame_size, frame_nr, retire_blk_tov,
        # sizeof_priv, feature_req_word.
        req = struct.pack(
            "IIIIIII", block_bytes, blocks, frame, block_bytes * blocks // frame, retire_ms, 0, 0
        )
        self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self.block_bytes = block_bytes
        self.blocks = blocks
        self._ring = mmap.mmap(
            self.sock.fileno(), block_bytes * blocks, mmap.MAP_SHARED,
            mmap.PROT_READ | mmap.PROT_WRITE,
        )  # fmt: skip
        self._ring_arr = np.frombuffer(self._ring, dtype=np.uint8)
        # Block status words (u32 at byte 8 of each block), as one strided view.
        self._status = np.ndarray(
            (blocks,), dtype=np.uint32, buffer=self._ring, offset=8, strides=(block_bytes,)
        )
        self._num = np.ndarray(
            (blocks,), dtype=np.uint32, buffer=self._ring, offset=12, strides=(block_bytes,)
        )
        self._skipped = np.zeros(1, dtype=np.int64)
        self._next_block = 0
        self._held: list[int] = []

    # -- Source plumbing --------------------------------------------------------------------

    @property
    def progress_bytes(self) -> int:
        return self.counters.bytes_captured

    def kernel_stats(self) -> tuple[int, int, int]:
        """Accumulated (packets, drops, freezes) from PACKET_STATISTICS (read-and-reset)."""
        if self._closed:
            c = self.counters
            return c.kernel_packets, c.kernel_drops, c.kernel_freezes
        size = 12 if self.mode == "ring" else 8
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, size)
        vals = struct.unpack("III"[: len(raw) // 4], raw)
        c = self.counters
        c.kernel_packets += vals[0]
        c.kernel_drops += vals[1]
        if len(vals) > 2:
            c.kernel_freezes += vals[2]
        return c.kernel_packets, c.kernel_drops, c.kernel_freezes

    def close(self) -> None:
        if self._closed:
            return
        with contextlib.suppress(OSError):
            self.kernel_stats()
        self._closed = True
        if self._ring is not None:
            self._release()
            # Views into the ring must go before the map can be closed.
            del self._ring_arr, self._status, self._num
            with contextlib.suppress(BufferError):
                self._ring.close()
        self.sock.close()

    def __enter__(self) -> LiveCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- batches ----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[PacketBatch]:
        if self.mode == "ring":
            yield from self._iter_ring()
        else:
            yield from self._iter_recv()

    def _finish(self, buf: np.ndarray, n: int) -> PacketBatch:
        c = self.counters
        c.batches += 1
        if n == 0:
            c.empty_batches += 1
            return PacketBatch(buf=buf, cols=self._cols[:0], addr=self._addr[:0], n=0,
                               path=self.path)  # fmt: skip
        cols = self._cols[:n]
        addr = self._addr[:n]
        cols[:, C_LINKTYPE] = self.linktype
        decode_batch(buf, cols, addr, n, self.tunnels)
        if self.mode == "ring":
            c.vlan_tags_restored += restore_vlan_tags(cols, self._vlan[:n])
            c.outgoing_skipped = int(self._skipped[0])
        c.packets += n
        c.bytes_captured += int(cols[:, C_CAPLEN].sum())
        c.bytes_on_wire += int(cols[:, C_WIRELEN].sum())
        return PacketBatch(buf=buf, cols=cols, addr=addr, n=n, path=self.path)

    def _release(self) -> None:
        """Hand the blocks of the previous batch back to the kernel."""
        for b in self._held:
            self._status[b] = TP_STATUS_KERNEL
        self._held = []

    def _iter_ring(self) -> Iterator[PacketBatch]:
        status = self._status
        ring = self._ring_arr
        nb = self.blocks
        # Worst case rows per block: every packet a minimal 60-byte frame behind its header.
        per_block_max = self.block_bytes // 64
        while not self._closed:
            deadline = time.monotonic_ns() + self.flush_ns
            n = 0
            while True:
                b = self._next_block
                if status[b] & TP_STATUS_USER:
                    num = int(self._num[b])
                    if n and n + num > self.batch_packets:
                        break  # this block starts the next batch
                    if n + max(num, 1) > self._cols.shape[0]:
                        self._grow(n + max(num, per_block_max // 8))
                    n = _walk_block(ring, b * self.block_bytes, self._cols, n, self._vlan,
                                    self.skip_outgoing, self._skipped)  # fmt: skip
                    self._held.append(b)
                    self.counters.blocks += 1
                    self._next_block = (b + 1) % nb
                    if n >= self.batch_packets:
                        break
                    continue
                # Hand over what is ready rather than wait for more: while we hold blocks the
                # kernel reports the socket readable (poll checks the block before its
                # current one), so waiting here would spin.
                if n:
                    break
                left_ms = (deadline - time.monotonic_ns()) // 1_000_000
                if left_ms <= 0 or self._closed:
                    break
                self._poll.poll(left_ms)
            if self._closed:
                return
            yield self._finish(ring, n)
            self._release()

    def _grow(self, rows: int) -> None:
        rows = max(rows, 2 * self._cols.shape[0])
        cols = np.zeros((rows, N_COLS), dtype=np.int64)
        cols[: self._cols.shape[0]] = self._cols
        vlan = np.full(rows, -1, dtype=np.int64)
        vlan[: self._vlan.shape[0]] = self._vlan
        self._cols, self._vlan = cols, vlan
        self._addr = np.zeros((rows, 4), dtype=np.uint64)

    def _iter_recv(self) -> Iterator[PacketBatch]:
        snap = self.snaplen
        buf = np.empty(self.batch_packets * 2048 + snap, dtype=np.uint8)
        view = memoryview(buf)  # type: ignore[arg-type]
        cols = self._cols
        sock = self.sock
        sock.setblocking(False)
        anc = socket.CMSG_SPACE(16)
        recv = sock.recvmsg_into
        while not self._closed:
            deadline = time.monotonic_ns() + self.flush_ns
            n = 0
            pos = 0
            while n < self.batch_packets and pos + snap <= buf.shape[0]:
                try:
                    got, ancdata, _flags, src = recv(
                        [view[pos : pos + snap]], anc, socket.MSG_TRUNC
                    )
                except BlockingIOError:
                    left_ms = (deadline - time.monotonic_ns()) // 1_000_000
                    if left_ms <= 0 or self._closed:
                        break
                    self._poll.poll(left_ms)
                    continue
                if self.skip_outgoing and src[2] == PACKET_OUTGOING:
                    self.counters.outgoing_skipped += 1
                    continue
                ts = 0
                for level, kind, data in ancdata:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = struct.unpack("qq", data[:16])
                        ts = sec * 1_000_000_000 + nsec
                if ts == 0:
                    ts = time.time_ns()
                cap = min(got, snap)
                cols[n, C_OFF] = pos
                cols[n, C_CAPLEN] = cap
                cols[n, C_WIRELEN] = got
                cols[n, C_TS] = ts
                cols[n, C_FILEOFF] = 0
                pos += (cap + 7) & ~7
                n += 1
                if time.monotonic_ns() >= deadline:
                    break
            if self._closed:
                return
            yield self._finish(buf, n)
