"""FlowBatch from flow records made elsewhere (Zeek conn.log, NetFlow/IPFIX, Suricata EVE flow):
the same columns the meter produces, so detectors cannot tell where a flow came from.

What a record does not carry is filled conservatively: first-packet sequences are empty
(`seq_n` 0), TCP flag counts zero, and the meter's state bits are derived from Zeek's
conn_state, or from the TCP flags seen (NetFlow's OR of flags) when there is no conn_state.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence

import numpy as np

from tapetum.flows import table as T
from tapetum.flows.community import community_id_array
from tapetum.flows.meter import FLOW_INT_COLUMNS, FlowBatch

SEQ_LEN = T.SEQ_LEN
_MAPPED = 0xFFFF << 32

#: The meter's state bits that a Zeek conn_state implies (what detectors read: a SYN-ACK seen,
#: FINs, resets). Unknown states give no bits.
CONN_STATE_BITS: dict[str, int] = {
    "S0": T.ST_ORIG_SYN,
    "S1": T.ST_ORIG_SYN | T.ST_RESP_SYNACK | T.ST_ESTABLISHED,
    "SF": T.ST_ORIG_SYN | T.ST_RESP_SYNACK | T.ST_ESTABLISHED | T.ST_ORIG_FIN | T.ST_RESP_FIN,
    "REJ": T.ST_ORIG_SYN | T.ST_RESP_RST,
    "S2": T.ST_ORIG_SYN | T.ST_RESP_SYNACK | T.ST_ESTABLISHED | T.ST_ORIG_FIN,
    "S3": T.ST_ORIG_SYN | T.ST_RESP_SYNACK | T.ST_ESTABLISHED | T.ST_RESP_FIN,
    "RSTO": T.ST_ORIG_SYN | T.ST_RESP_SYNACK | T.ST_ESTABLISHED | T.ST_ORIG_RST,
    "RSTR": T.ST_ORIG_SYN | T.ST_RESP_SYNACK | T.ST_ESTABLISHED | T.ST_RESP_RST,
    "RSTOS0": T.ST_ORIG_SYN | T.ST_ORIG_RST,
    "RSTRH": T.ST_RESP_SYNACK | T.ST_RESP_RST,
    "SH": T.ST_ORIG_SYN | T.ST_ORIG_FIN,
    "SHR": T.ST_RESP_SYNACK | T.ST_RESP_FIN,
    "OTH": 0,
}

# TCP flag bits (RFC 9293) as NetFlow/IPFIX report them (OR over the flow, per direction).
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10


def state_bits_from_flags(orig_flags: int, resp_flags: int) -> int:
    """Meter state bits from the TCP flags each side sent (for flow exporters' records)."""
    bits = 0
    if orig_flags & SYN:
        bits |= T.ST_ORIG_SYN
    if resp_flags & SYN and resp_flags & ACK:
        bits |= T.ST_RESP_SYNACK
    if orig_flags & FIN:
        bits |= T.ST_ORIG_FIN
    if resp_flags & FIN:
        bits |= T.ST_RESP_FIN
    if orig_flags & RST:
        bits |= T.ST_ORIG_RST
    if resp_flags & RST:
        bits |= T.ST_RESP_RST
    if bits & T.ST_RESP_SYNACK and orig_flags & ACK:
        bits |= T.ST_ESTABLISHED
    return bits


def addr_halves(ip: str) -> tuple[int, int]:
    """An address as the meter's two uint64 halves (IPv4 mapped into IPv6). ValueError if bad."""
    a = ipaddress.ip_address(ip)
    if a.version == 4:
        return 0, _MAPPED | int(a)
    v = int(a)
    return v >> 64, v & 0xFFFFFFFFFFFFFFFF


def _flow_id(key: str) -> int:
    """A 53-bit id (fits a JSON number exactly), stable for the same record key."""
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") & ((1 << 53) - 1)


def flow_batch(
    *,
    start_ns: Sequence[int],
    end_ns: Sequence[int],
    proto: Sequence[int],
    src_ip: Sequence[str],
    dest_ip: Sequence[str],
    src_port: Sequence[int],
    dest_port: Sequence[int],
    pkts_toserver: Sequence[int],
    pkts_toclient: Sequence[int],
    bytes_toserver: Sequence[int],
    bytes_toclient: Sequence[int],
    payload_bytes_toserver: Sequence[int] | None = None,
    payload_bytes_toclient: Sequence[int] | None = None,
    ip_bytes_toserver: Sequence[int] | None = None,
    ip_bytes_toclient: Sequence[int] | None = None,
    conn_state: Sequence[str] | None = None,
    history: Sequence[str] | None = None,
    state_bits: Sequence[int] | None = None,
    uid: Sequence[str] | None = None,
    vlan: Sequence[int] | None = None,
    community_id_seed: int = 0,
) -> FlowBatch:
    """Build a FlowBatch from per-flow columns (originator = src). Addresses must be valid
    (check with `addr_halves` first; a bad one raises ValueError). Byte counts default: IP bytes
    = bytes, payload bytes = bytes minus 40 per packet (floored at 0) when not given."""
    n = len(start_ns)

    def col(v: Sequence[int] | None, default: np.ndarray | int = 0) -> np.ndarray:
        if v is None:
            return np.broadcast_to(np.asarray(default, dtype=np.int64), (n,)).copy()
        return np.asarray(v, dtype=np.int64).reshape(n)

    halves_src = np.array([addr_halves(x) for x in src_ip], dtype=np.uint64).reshape(n, 2)
    halves_dst = np.array([addr_halves(x) for x in dest_ip], dtype=np.uint64).reshape(n, 2)
    pk_s, pk_c = col(pkts_toserver), col(pkts_toclient)
    by_s, by_c = col(bytes_toserver), col(bytes_toclient)
    states = list(conn_state) if conn_state is not None else [""] * n
    if state_bits is None:
        bits = np.array([CONN_STATE_BITS.get(s, 0) for s in states], dtype=np.int64)
    else:
        bits = col(state_bits)
    keys = list(uid) if uid is not None else [
        f"{a}|{b}|{c}|{d}|{e}|{f}" for a, b, c, d, e, f in
        zip(src_ip, dest_ip, src_port, dest_port, proto, start_ns, strict=True)
    ]  # fmt: skip
    num = {name: np.zeros(n, dtype=np.int64) for name in FLOW_INT_COLUMNS}
    num.update(
        flow_id=np.array([_flow_id(k) for k in keys], dtype=np.int64),
        uid=np.arange(n, dtype=np.int64),
        start_ns=col(start_ns),
        end_ns=col(end_ns),
        ip_version=np.where(halves_src[:, 0] == 0, 4, 6).astype(np.int64)
        if n else np.zeros(0, np.int64),
        proto=col(proto),
        vlan=col(vlan),
        src_port=col(src_port),
        dest_port=col(dest_port),
        pkts_toserver=pk_s,
        pkts_toclient=pk_c,
        bytes_toserver=by_s,
        bytes_toclient=by_c,
        ip_bytes_toserver=col(ip_bytes_toserver, by_s),
        ip_bytes_toclient=col(ip_bytes_toclient, by_c),
        payload_bytes_toserver=col(payload_bytes_toserver, np.maximum(by_s - 40 * pk_s, 0)),
        payload_bytes_toclient=col(payload_bytes_toclient, np.maximum(by_c - 40 * pk_c, 0)),
        state_bits=bits,
        reason=np.full(n, T.R_END, dtype=np.int64),
    )  # fmt: skip
    cids = community_id_array(
        halves_src[:, 0], halves_src[:, 1], halves_dst[:, 0], halves_dst[:, 1],
        num["proto"], num["src_port"], num["dest_port"], community_id_seed,
    )  # fmt: skip
    return FlowBatch(
        num=num,
        src_hi=halves_src[:, 0].copy(),
        src_lo=halves_src[:, 1].copy(),
        dst_hi=halves_dst[:, 0].copy(),
        dst_lo=halves_dst[:, 1].copy(),
        tcp_flags=np.zeros((n, 16), dtype=np.uint32),
        seq_size=np.zeros((n, SEQ_LEN), dtype=np.int32),
        seq_dir=np.zeros((n, SEQ_LEN), dtype=np.int8),
        seq_ts=np.zeros((n, SEQ_LEN), dtype=np.int64),
        seq_n=np.zeros(n, dtype=np.int64),
        history=list(history) if history is not None else [""] * n,
        src_ip=list(src_ip),
        dest_ip=list(dest_ip),
        community_id=list(cids),
        conn_state=states,
    )
