"""The flow meter: packets in, finished bidirectional flows out, as column batches.

Keyed by the canonical 5-tuple plus VLAN ids; the originator is the first packet's sender, except
that a first packet carrying SYN+ACK makes its receiver the originator (history starts with '^',
as in Zeek). Memory grows with the number of active flows only: expired flows leave the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tapetum.flows import table as T
from tapetum.flows.community import community_id_array
from tapetum.flows.key import addr_text_array, proto_name
from tapetum.flows.state import conn_state_codes, conn_state_names
from tapetum.sources.decode import N_COLS
from tapetum.sources.pcap import PacketBatch

NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class MeterConfig:
    """Flow expiry. Defaults follow Zeek: TCP 5 min, UDP/ICMP/other 1 min idle; closed TCP
    connections leave 5 s after the close; no active timeout unless set (NFStream uses 1800 s)."""

    tcp_idle_s: float = 300.0
    tcp_closed_s: float = 5.0
    udp_idle_s: float = 60.0
    icmp_idle_s: float = 60.0
    other_idle_s: float = 60.0
    active_s: float = 0.0
    #: How often (in data time) the whole table is swept for expired flows.
    sweep_s: float = 1.0
    initial_flows: int = 1 << 14
    #: Hard cap on concurrent flows; beyond it the least recently active flows are evicted.
    max_flows: int = 4_000_000
    seed: int = 0
    #: ICMP flows are keyed by ICMP type and its counterpart (echo request/reply share a flow, as
    #: in Community ID); False keys them by the two addresses only (NFStream).
    icmp_type_in_key: bool = True
    #: IP fragments after the first join their flow (by fragment id); False leaves them out of
    #: every flow, counted in `MeterCounters.skipped_packets` (NFStream).
    meter_later_fragments: bool = True
    #: A TCP connection closed by FIN from both sides or RST ends after `tcp_closed_s`, and a new
    #: SYN on its 5-tuple starts a new flow; False ignores FIN/RST for expiry (NFStream).
    tcp_close_ends_flow: bool = True
    #: Timeouts compare millisecond-truncated times and fire at the limit (NFStream) instead of
    #: nanosecond times past the limit.
    timeouts_in_ms: bool = False

    @classmethod
    def nfstream(cls, **overrides: Any) -> MeterConfig:
        """NFStream's flow semantics (NFStreamer defaults): 120 s idle and 1800 s active timeouts
        for every protocol, FIN/RST ignored, ICMP keyed by addresses, later fragments dropped.

        Pair it with `CaptureReader(path, tunnels=TUNNELS_ALL)` (NFStream's decode_tunnels=True
        and its unconditional IP-in-IP decapsulation). See docs/flow-accuracy.md.
        """
        base: dict[str, Any] = dict(
            tcp_idle_s=120.0,
            tcp_closed_s=120.0,
            udp_idle_s=120.0,
            icmp_idle_s=120.0,
            other_idle_s=120.0,
            active_s=1800.0,
            icmp_type_in_key=False,
            meter_later_fragments=False,
            tcp_close_ends_flow=False,
            timeouts_in_ms=True,
        )
        base.update(overrides)
        return cls(**base)

    def params(self) -> np.ndarray:
        p = np.zeros(T.N_PARAMS, dtype=np.int64)
        p[T.P_TCP_IDLE] = int(self.tcp_idle_s * NS)
        p[T.P_TCP_CLOSED] = int(self.tcp_closed_s * NS)
        p[T.P_UDP_IDLE] = int(self.udp_idle_s * NS)
        p[T.P_ICMP_IDLE] = int(self.icmp_idle_s * NS)
        p[T.P_OTHER_IDLE] = int(self.other_idle_s * NS)
        p[T.P_ACTIVE] = int(self.active_s * NS)
        p[T.P_SWEEP] = max(1, int(self.sweep_s * NS))
        p[T.P_SEED] = self.seed
        flags = 0
        if not self.icmp_type_in_key:
            flags |= T.F_ICMP_HOSTS_ONLY
        if not self.meter_later_fragments:
            flags |= T.F_SKIP_LATER_FRAGMENTS
        if not self.tcp_close_ends_flow:
            flags |= T.F_TCP_NO_CLOSE
        if self.timeouts_in_ms:
            flags |= T.F_TIMEOUT_MS
        p[T.P_FLAGS] = flags
        idle = (p[T.P_TCP_IDLE], p[T.P_TCP_CLOSED], p[T.P_UDP_IDLE], p[T.P_ICMP_IDLE],
                p[T.P_OTHER_IDLE])  # fmt: skip
        # Millisecond expiry rounds: keep a millisecond of margin below the shortest limit.
        p[T.P_MIN_IDLE] = max(-1, int(min(idle)) - 1_000_000)
        return p


# Column names of FlowBatch.num (int64), in order.
FLOW_INT_COLUMNS = (
    "flow_id",
    "uid",
    "start_ns",
    "end_ns",
    "ip_version",
    "proto",
    "vlan",
    "tunnel",
    "src_port",
    "dest_port",
    "pkts_toserver",
    "pkts_toclient",
    "bytes_toserver",
    "bytes_toclient",
    "ip_bytes_toserver",
    "ip_bytes_toclient",
    "payload_bytes_toserver",
    "payload_bytes_toclient",
    "state_bits",
    "reason",
)
_FLAG_NAMES = ("fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr")


@dataclass(slots=True)
class FlowBatch:
    """Finished flows, oriented originator (src) -> responder (dest)."""

    num: dict[str, np.ndarray]
    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    #: TCP flag counts [n, 16]: originator fin..cwr then responder fin..cwr.
    tcp_flags: np.ndarray
    #: First packets: IP length, direction (0 orig, 1 resp), ns since flow start; [n, 32].
    seq_size: np.ndarray
    seq_dir: np.ndarray
    seq_ts: np.ndarray
    seq_n: np.ndarray
    history: list[str]
    src_ip: list[str] = field(default_factory=list)
    dest_ip: list[str] = field(default_factory=list)
    community_id: list[str] = field(default_factory=list)
    conn_state: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.num["flow_id"].shape[0])

    @property
    def duration_s(self) -> np.ndarray:
        return np.asarray((self.num["end_ns"] - self.num["start_ns"]) / 1e9)

    def proto_names(self) -> list[str]:
        return [proto_name(p) for p in self.num["proto"].tolist()]

    def flow_state(self) -> list[str]:
        """Suricata's flow.state: new, established or closed."""
        out = []
        for proto, st, cs in zip(
            self.num["proto"].tolist(),
            self.num["state_bits"].tolist(),
            self.conn_state,
            strict=True,
        ):
            if proto == 6:
                if st & (T.ST_ORIG_RST | T.ST_RESP_RST) or cs in ("SF", "S2", "S3", "SH", "SHR"):
                    out.append("closed")
                elif st & T.ST_RESP_SYNACK:
                    out.append("established")
                else:
                    out.append("new")
            else:
                out.append("established" if cs == "SF" else "new")
        return out

    def reason_names(self) -> list[str]:
        return [T.REASON_NAMES[r] for r in self.num["reason"].tolist()]

    def take(self, idx: np.ndarray) -> FlowBatch:
        """Rows idx (a sorted index array) as a new batch."""
        lst = idx.tolist()
        return FlowBatch(
            num={k: v[idx] for k, v in self.num.items()},
            src_hi=self.src_hi[idx],
            src_lo=self.src_lo[idx],
            dst_hi=self.dst_hi[idx],
            dst_lo=self.dst_lo[idx],
            tcp_flags=self.tcp_flags[idx],
            seq_size=self.seq_size[idx],
            seq_dir=self.seq_dir[idx],
            seq_ts=self.seq_ts[idx],
            seq_n=self.seq_n[idx],
            history=[self.history[i] for i in lst],
            src_ip=[self.src_ip[i] for i in lst],
            dest_ip=[self.dest_ip[i] for i in lst],
            community_id=[self.community_id[i] for i in lst],
            conn_state=[self.conn_state[i] for i in lst],
        )


@dataclass(frozen=True, slots=True)
class PacketFlows:
    """Per packet of a batch: which flow it joined and how."""

    #: Flow serial number in this meter (-1: the packet is not part of any flow).
    uid: np.ndarray
    #: The flow's flow_id, as in the flow record.
    flow_id: np.ndarray
    #: 0 from the originator, 1 from the responder.
    direction: np.ndarray
    #: Ordinal among the flow's packets with payload in that direction (-1: no payload).
    payload_ordinal: np.ndarray


@dataclass(slots=True)
class MeterCounters:
    flows: int = 0
    evicted: int = 0
    fragments_unmatched: int = 0
    peak_active_flows: int = 0
    grows: int = 0
    #: Packets left out of every flow by configuration (`meter_later_fragments=False`).
    skipped_packets: int = 0


class FlowMeter:
    """Stateful meter. `process(batch)` returns per-packet flow uid/direction/payload ordinal and
    the flows that finished; `flush()` returns the rest at end of input."""

    def __init__(self, config: MeterConfig | None = None) -> None:
        self.config = config or MeterConfig()
        self.params = self.config.params()
        self.counters = MeterCounters()
        self._addr_cache: dict[tuple[int, int], str] = {}
        cap = max(64, self.config.initial_flows)
        self._alloc(cap)
        self.meta = np.zeros(T.N_META, dtype=np.int64)
        self.meta[T.M_FREE_TOP] = cap
        self.meta[T.M_NEXT_UID] = 1
        self.meta[T.M_NEXT_SWEEP] = np.iinfo(np.int64).min
        self.meta[T.M_NOW] = np.iinfo(np.int64).min
        self._out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self.frag = np.zeros((4096, 4), dtype=np.int64)
        self.frag[:, 0] = -1

    def _alloc(self, cap: int) -> None:
        self.cap = cap
        self.ht = np.zeros(_pow2(cap * 2), dtype=np.int32)
        # Rows aligned to 64 bytes so a slot's 256-byte row is exactly four cache lines.
        raw = np.zeros(cap * T.N_PI + 8, dtype=np.uint64)
        shift = (-raw.ctypes.data // 8) % 8
        rows = raw[shift : shift + cap * T.N_PI].reshape(cap, T.N_PI)
        self.pi = rows.view(np.int64)
        self.pk = rows[:, T.PI_KEY : T.PI_KEY + 4]
        self.seen = np.full(cap, np.iinfo(np.int64).max, dtype=np.int64)
        self.flags = np.zeros((cap, 16), dtype=np.uint32)
        self.hist = np.zeros((cap, T.HIST_LEN), dtype=np.uint8)
        self.seq_size = np.zeros((cap, T.SEQ_LEN), dtype=np.int32)
        self.seq_dir = np.zeros((cap, T.SEQ_LEN), dtype=np.int8)
        self.seq_ts = np.zeros((cap, T.SEQ_LEN), dtype=np.int64)
        # Slots are handed out lowest first so the sweep's high-water mark stays tight.
        self.free = np.arange(cap - 1, -1, -1, dtype=np.int64)
        self.exp = np.zeros(cap + 16, dtype=np.int64)

    def _grow(self) -> None:
        old = (
            self.pi, self.flags, self.hist, self.seq_size, self.seq_dir, self.seq_ts, self.seen,
        )  # fmt: skip
        old_cap = self.cap
        old_free = self.free[: self.meta[T.M_FREE_TOP]].copy()
        old_exp = self.exp[: self.meta[T.M_EXP_N]].copy()
        new_cap = min(self.config.max_flows, old_cap * 2)
        self._alloc(new_cap)
        new: tuple[np.ndarray, ...] = (
            self.pi, self.flags, self.hist, self.seq_size, self.seq_dir, self.seq_ts, self.seen,
        )  # fmt: skip
        for dst, src in zip(new, old, strict=True):
            dst[:old_cap] = src
        # Free stack: the new slots (lowest on top), then whatever was free before.
        new_slots = np.arange(new_cap - 1, old_cap - 1, -1, dtype=np.int64)
        free = np.concatenate([old_free, new_slots])
        self.free[: free.shape[0]] = free
        self.meta[T.M_FREE_TOP] = free.shape[0]
        self.exp[: old_exp.shape[0]] = old_exp
        T.rehash(self.ht, self.pi, self.meta)
        self.counters.grows += 1

    @property
    def now_ns(self) -> int | None:
        """The capture clock: the latest packet time seen (None before the first packet)."""
        v = int(self.meta[T.M_NOW])
        return None if v == np.iinfo(np.int64).min else v

    def restart_clock(self) -> None:
        """Forget the capture clock (after `flush`): the next packet sets it again."""
        assert self.active_flows == 0, "restart_clock needs an empty table: flush first"
        self.meta[T.M_NOW] = np.iinfo(np.int64).min
        self.meta[T.M_NEXT_SWEEP] = np.iinfo(np.int64).min

    @property
    def active_flows(self) -> int:
        return int(self.meta[T.M_ACTIVE])

    def process(self, batch: PacketBatch) -> tuple[PacketFlows, list[FlowBatch]]:
        n = batch.n
        # Reused across batches (fresh arrays per batch cost page faults): like the batch
        # itself, the returned PacketFlows is valid until the next call.
        if self._out is None or self._out[0].shape[0] < n:
            size = max(n, 1 << 14)
            self._out = (
                np.empty(size, dtype=np.int64),
                np.empty(size, dtype=np.int64),
                np.empty(size, dtype=np.int8),
                np.empty(size, dtype=np.int32),
            )
        out_uid, out_fid, out_dir, out_payord = (a[:n] for a in self._out)
        finished: list[FlowBatch] = []
        assert batch.cols.shape[1] == N_COLS
        i = 0
        while True:
            i, status = T.meter_batch(
                batch.cols, batch.addr, i, n, self.ht, self.pk, self.pi, self.flags, self.hist,
                self.seq_size, self.seq_dir, self.seq_ts, self.free, self.meta, self.exp,
                self.params, self.frag, out_uid, out_dir, out_payord, out_fid, self.seen,
            )  # fmt: skip
            self.counters.peak_active_flows = max(
                self.counters.peak_active_flows, self.active_flows
            )
            if status == T.K_DONE:
                break
            # No free slot: harvest exports; grow while under the cap, else evict the oldest.
            fb = self._harvest()
            if fb is not None:
                finished.append(fb)
            if self.meta[T.M_FREE_TOP] < self.cap // 4:
                if self.cap < self.config.max_flows:
                    self._grow()
                else:
                    T.evict_oldest(self.ht, self.pi, self.meta, self.exp, 0.1)
                    fb = self._harvest()
                    if fb is not None:
                        finished.append(fb)
        fb = self._harvest()
        if fb is not None:
            finished.append(fb)
        self.counters.evicted = int(self.meta[T.M_EVICTED])
        self.counters.fragments_unmatched = int(self.meta[T.M_FRAG_MISS])
        self.counters.skipped_packets = int(self.meta[T.M_SKIPPED])
        return PacketFlows(out_uid, out_fid, out_dir, out_payord), finished

    def expire(self, now_ns: int) -> list[FlowBatch]:
        """Export flows expired at data time `now_ns` (live mode: called on idle ticks)."""
        T.sweep(self.ht, self.pi, self.meta, self.exp, self.params, now_ns, self.seen)
        fb = self._harvest()
        return [] if fb is None else [fb]

    def flush(self) -> list[FlowBatch]:
        """Export every active flow (end of input)."""
        T.flush_all(self.ht, self.pi, self.meta, self.exp)
        fb = self._harvest()
        return [] if fb is None else [fb]

    def _harvest(self) -> FlowBatch | None:
        n = int(self.meta[T.M_EXP_N])
        if n == 0:
            return None
        idx = self.exp[:n].copy()
        # Deterministic output order: by start time, then flow id (then slot, for ties).
        rows = self.pi[idx]
        idx = idx[np.lexsort((idx, rows[:, T.PI_FLOWID], rows[:, T.PI_FIRST]))]
        fb = self._build(idx)
        T.release(self.pi, self.meta, self.free, self.exp, n, self.seen)
        self.counters.flows += n
        return fb

    def _build(self, idx: np.ndarray) -> FlowBatch:
        pi = self.pi[idx]
        pk = self.pk[idx]
        orig_a = pi[:, T.PI_ORIG_IS_A] == 1
        a_hi, a_lo, b_hi, b_lo = pk[:, 0], pk[:, 1], pk[:, 2], pk[:, 3]
        src_hi = np.where(orig_a, a_hi, b_hi)
        src_lo = np.where(orig_a, a_lo, b_lo)
        dst_hi = np.where(orig_a, b_hi, a_hi)
        dst_lo = np.where(orig_a, b_lo, a_lo)
        sport = np.where(orig_a, pi[:, T.PI_PORTA], pi[:, T.PI_PORTB])
        dport = np.where(orig_a, pi[:, T.PI_PORTB], pi[:, T.PI_PORTA])
        proto = pi[:, T.PI_PROTO]
        num = {
            "flow_id": pi[:, T.PI_FLOWID],
            "uid": pi[:, T.PI_UID],
            "start_ns": pi[:, T.PI_FIRST],
            "end_ns": pi[:, T.PI_LAST],
            "ip_version": pi[:, T.PI_IPVER],
            "proto": proto,
            "vlan": pi[:, T.PI_VLAN] & T.VLAN_MASK,
            "tunnel": pi[:, T.PI_VLAN] >> T.VLAN_BITS,
            "src_port": sport,
            "dest_port": dport,
            "pkts_toserver": pi[:, T.PI_PKTS],
            "pkts_toclient": pi[:, T.PI_PKTS + 1],
            "bytes_toserver": pi[:, T.PI_BYTES],
            "bytes_toclient": pi[:, T.PI_BYTES + 1],
            "ip_bytes_toserver": pi[:, T.PI_IPBYTES],
            "ip_bytes_toclient": pi[:, T.PI_IPBYTES + 1],
            "payload_bytes_toserver": pi[:, T.PI_PAYBYTES],
            "payload_bytes_toclient": pi[:, T.PI_PAYBYTES + 1],
            "state_bits": pi[:, T.PI_STATE],
            "reason": pi[:, T.PI_REASON],
        }
        num = {k: np.ascontiguousarray(v, dtype=np.int64) for k, v in num.items()}
        # History letters are non-zero bytes followed by zeros: a fixed-width byte string each.
        hist = np.ascontiguousarray(self.hist[idx])
        hist[np.arange(T.HIST_LEN)[None, :] >= pi[:, T.PI_HISTLEN][:, None]] = 0  # reused slots
        history = hist.view(f"S{T.HIST_LEN}")[:, 0].astype(str).tolist()
        src_ip = addr_text_array(src_hi, src_lo, self._addr_cache)
        dest_ip = addr_text_array(dst_hi, dst_lo, self._addr_cache)
        cids = community_id_array(
            src_hi, src_lo, dst_hi, dst_lo, proto, sport, dport, self.config.seed
        )
        fb = FlowBatch(
            num=num,
            src_hi=src_hi,
            src_lo=src_lo,
            dst_hi=dst_hi,
            dst_lo=dst_lo,
            tcp_flags=self.flags[idx],
            seq_size=self.seq_size[idx],
            seq_dir=self.seq_dir[idx],
            seq_ts=self.seq_ts[idx],
            seq_n=pi[:, T.PI_NSEQ].copy(),
            history=history,
            src_ip=src_ip,
            dest_ip=dest_ip,
            community_id=cids,
        )
        codes = conn_state_codes(
            proto, num["state_bits"], num["pkts_toserver"], num["pkts_toclient"],
            num["payload_bytes_toserver"], num["payload_bytes_toclient"], hist,
            np.ascontiguousarray(pi[:, T.PI_HISTLEN]),
        )  # fmt: skip
        fb.conn_state = conn_state_names(codes)
        return fb


def _pow2(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p
