"""Lateral-movement features: successful admin-protocol sessions between internal hosts.

Pure functions over flow columns. A *contact* is one (source, destination, service) triple seen
in a batch of flows, where the service is an admin protocol picked by destination port (SSH,
SMB, RDP, WinRM, RPC/DCOM, VNC, Telnet; the map is configurable), both endpoints are internal,
and the session exchanged data both ways (at least `min_payload_bytes` in total): a refused or
unanswered attempt is a probe, which the scan detector counts, not a session.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tapetum.features import columns
from tapetum.flows.meter import FlowBatch

#: Admin protocols by destination port (T1021 sub-techniques in the detector).
DEFAULT_SERVICES: dict[str, list[int]] = {
    "ssh": [22],
    "telnet": [23],
    "rpc": [135],
    "smb": [139, 445],
    "rdp": [3389],
    "winrm": [5985, 5986],
    "vnc": [5900],
}


@dataclass(slots=True)
class ContactRows:
    """One row per (source, destination, service) in a batch: the lateral detector's rows."""

    src: list[str]
    dst: list[str]
    service: list[str]
    first_ns: np.ndarray
    last_ns: np.ndarray
    flows: np.ndarray
    payload_bytes: np.ndarray

    def __len__(self) -> int:
        return len(self.src)

    @staticmethod
    def empty() -> ContactRows:
        z = np.zeros(0, dtype=np.int64)
        return ContactRows([], [], [], z, z, z, z)

    def take(self, idx: Sequence[int] | np.ndarray) -> ContactRows:
        return columns.take(self, idx)


def admin_mask(fb: FlowBatch, ports: np.ndarray, min_payload_bytes: int) -> np.ndarray:
    """TCP flows to an admin port that carried data both ways (vectorised; no per-flow Python)."""
    num = fb.num
    up, down = num["payload_bytes_toserver"], num["payload_bytes_toclient"]
    return np.asarray(
        (num["proto"] == 6)
        & np.isin(num["dest_port"], ports)
        & (up > 0)
        & (down > 0)
        & (up + down >= min_payload_bytes)
    )


def contacts(
    fb: FlowBatch,
    services: Mapping[str, Sequence[int]] = DEFAULT_SERVICES,
    *,
    min_payload_bytes: int = 200,
    internal: Container[str],
) -> ContactRows:
    """Admin-protocol contacts between `internal` hosts (`detectors.common.InternalNetworks`),
    one row per triple."""
    if len(fb) == 0:
        return ContactRows.empty()
    by_port = {p: name for name, ps in services.items() for p in ps}
    ports = np.fromiter(by_port, dtype=np.int64, count=len(by_port))
    idx = np.flatnonzero(admin_mask(fb, ports, min_payload_bytes))
    if idx.size == 0:
        return ContactRows.empty()
    num = fb.num
    # Only the (few) admin sessions reach Python.
    agg: dict[tuple[str, str, str], list[int]] = {}
    for i, port, start, end, up, down in zip(
        idx.tolist(),
        num["dest_port"][idx].tolist(),
        num["start_ns"][idx].tolist(),
        num["end_ns"][idx].tolist(),
        num["payload_bytes_toserver"][idx].tolist(),
        num["payload_bytes_toclient"][idx].tolist(),
        strict=True,
    ):
        src, dst = fb.src_ip[i], fb.dest_ip[i]
        if src == dst or src not in internal or dst not in internal:
            continue
        key = (src, dst, by_port[port])
        row = agg.get(key)
        if row is None:
            agg[key] = [start, end, 1, up + down]
        else:
            row[0] = min(row[0], start)
            row[1] = max(row[1], end)
            row[2] += 1
            row[3] += up + down
    if not agg:
        return ContactRows.empty()
    keys = sorted(agg, key=lambda k: (agg[k][0], k))
    vals = np.array([agg[k] for k in keys], dtype=np.int64).reshape(-1, 4)
    return ContactRows(
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        vals[:, 0],
        vals[:, 1],
        vals[:, 2],
        vals[:, 3],
    )


def peak_in_window(times_ns: np.ndarray, window_ns: int) -> tuple[int, int]:
    """Most events within any span of `window_ns` (times sorted): (count, index of the first)."""
    if times_ns.size == 0:
        return 0, 0
    ends = np.searchsorted(times_ns, times_ns + window_ns, side="right")
    counts = ends - np.arange(times_ns.size)
    k = int(np.argmax(counts))
    return int(counts[k]), k
