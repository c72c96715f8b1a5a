"""Brute-force features: per source, service and window, how many short failed-looking logins.

Pure functions over flow columns (plus the service tags application events give a flow).

An *attempt* is a TCP connection to an authentication service in which both sides sent data
(a handshake that reached the application). It *looks failed* when it ended after a few small
exchanges: few packets, a short life and little data from the server — the session never
reached the bulk of an interactive session or a transfer. This is the flow-only form of Zeek's
SSH heuristics (auth success is inferred from the sizes of the server's encrypted packets) and of
Slips' "SSH password guessing" (failed logins per source and target; success assumed when a
connection carries more than ~4.3 KB).

Auth logs (a later source) fold in as `Attempts` rows with the exact outcome (`failed` True/False,
`exact=True`) for the same (source, target, service); the aggregation below does not care where
an attempt came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from tapetum.features import columns
from tapetum.flows import table as T
from tapetum.flows.meter import FlowBatch

#: Service names and the TCP ports they listen on by default (the config may change them).
DEFAULT_SERVICE_PORTS: dict[str, list[int]] = {
    "ssh": [22],
    "ftp": [21],
    "telnet": [23],
    "rdp": [3389],
    "smb": [445, 139],
    "pop3": [110, 995],
    "imap": [143, 993],
    # Submission ports only: port 25 carries server-to-server mail, not logins.
    "smtp-auth": [465, 587],
    "mysql": [3306],
    "postgres": [5432],
    "mssql": [1433],
    "vnc": [5900],
    # Web ports need stronger evidence (see `WEB`): most web traffic is not a login.
    "web": [80, 443, 8080, 8443],
}
#: The service of web ports, judged with a stricter bar.
WEB = "web"
#: A flow whose HTTP exchange was refused with 401/403 or carried Basic credentials.
HTTP_AUTH = "http-auth"
SSH = "ssh"
#: Per service: the most payload bytes the server may send in a connection that looks failed.
#: SSH: the banner, KEXINIT and key exchange take 1.5-3 KB (post-quantum key exchange ~3.5 KB);
#: each failed password adds ~50 bytes. RDP with NLA and SMB with NTLM send more before failing.
DEFAULT_MAX_BYTES_TOCLIENT: dict[str, int] = {
    "default": 6000,
    "ssh": 6000,
    "rdp": 30000,
    "smb": 20000,
    "web": 8000,
}


@dataclass(frozen=True, slots=True)
class AttemptLimits:
    """What a failed-looking attempt may not exceed."""

    max_packets: int = 60
    max_duration_s: float = 60.0
    max_bytes_toclient: Mapping[str, int] = field(
        default_factory=lambda: dict(DEFAULT_MAX_BYTES_TOCLIENT)
    )

    def bytes_limit(self, service: str) -> int:
        table = self.max_bytes_toclient
        return int(table.get(service, table.get("default", DEFAULT_MAX_BYTES_TOCLIENT["default"])))


@dataclass(slots=True)
class Attempts:
    """Login attempts as columns: the unit the detector accumulates (flows or, later, auth logs)."""

    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    service: np.ndarray  # index into the detector's service names
    dport: np.ndarray
    start_ns: np.ndarray
    end_ns: np.ndarray
    #: Payload bytes both ways: the size of the attempt.
    bytes_total: np.ndarray
    failed: np.ndarray

    @staticmethod
    def empty() -> Attempts:
        z = np.zeros(0, dtype=np.int64)
        zu = np.zeros(0, dtype=np.uint64)
        return Attempts(zu, zu, zu, zu, z, z, z, z, z, np.zeros(0, dtype=bool))

    @staticmethod
    def concat(parts: list[Attempts]) -> Attempts:
        return columns.concat(Attempts, parts) if parts else Attempts.empty()

    def take(self, m: np.ndarray) -> Attempts:
        return columns.take(self, m)

    def __len__(self) -> int:
        return int(self.service.shape[0])


def service_codes(
    fb: FlowBatch,
    port_service: Mapping[int, int],
    tagged: Mapping[int, int],
) -> np.ndarray:
    """Service index per flow (-1: not an authentication service).

    `tagged` maps flow_id to a service found by the protocol parsers (an SSH banner on any port,
    an HTTP 401); it wins over the port.
    """
    dport = fb.num["dest_port"]
    out = np.full(len(fb), -1, dtype=np.int64)
    if port_service:
        ports = np.fromiter(port_service.keys(), dtype=np.int64)
        codes = np.fromiter(port_service.values(), dtype=np.int64)
        order = np.argsort(ports)
        ports, codes = ports[order], codes[order]
        pos = np.clip(np.searchsorted(ports, dport), 0, len(ports) - 1)
        hit = ports[pos] == dport
        out[hit] = codes[pos[hit]]
    if tagged:
        for k, fid in enumerate(fb.num["flow_id"].tolist()):
            code = tagged.get(fid)
            if code is not None:
                out[k] = code
    out[fb.num["proto"] != 6] = -1
    return out


def attempts_from_flows(
    fb: FlowBatch,
    names: list[str],
    port_service: Mapping[int, int],
    tagged: Mapping[int, int],
    limits: AttemptLimits,
    web_plain: frozenset[int] = frozenset(),
) -> Attempts:
    """The login attempts among these flows, each marked failed-looking or not.

    `web_plain` holds flow_ids on web ports whose HTTP requests were all ordinary (GET without
    credentials): those are browsing, not logins, and are left out.
    """
    if len(fb) == 0:
        return Attempts.empty()
    num = fb.num
    svc = service_codes(fb, port_service, tagged)
    answered = (num["state_bits"] & T.ST_RESP_SYNACK) != 0
    # Both sides spoke: the connection reached the application (no data = a probe, see scan).
    spoke = (num["payload_bytes_toserver"] > 0) & (num["payload_bytes_toclient"] > 0)
    m = (svc >= 0) & answered & spoke
    if web_plain:
        plain = np.fromiter((f in web_plain for f in num["flow_id"].tolist()), bool, len(fb))
        m &= ~plain
    idx = np.flatnonzero(m)
    if idx.size == 0:
        return Attempts.empty()
    s = svc[idx]
    limit = np.array([limits.bytes_limit(names[c]) for c in s.tolist()], dtype=np.int64)
    pkts = num["pkts_toserver"][idx] + num["pkts_toclient"][idx]
    dur_ns = num["end_ns"][idx] - num["start_ns"][idx]
    failed = (
        (num["payload_bytes_toclient"][idx] <= limit)
        & (pkts <= limits.max_packets)
        & (dur_ns <= int(limits.max_duration_s * 1e9))
    )
    return Attempts(
        fb.src_hi[idx], fb.src_lo[idx], fb.dst_hi[idx], fb.dst_lo[idx], s,
        num["dest_port"][idx], num["start_ns"][idx], num["end_ns"][idx],
        num["payload_bytes_toserver"][idx] + num["payload_bytes_toclient"][idx], failed,
    )  # fmt: skip


@dataclass(slots=True)
class BruteRows:
    """One row per (source, service, target) [kind 0, guessing] and per (source, service)
    [kind 1, spraying] in a window: the detector's feature table."""

    kind: np.ndarray
    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray  # guessing: the target; spraying: 0
    dst_lo: np.ndarray
    service: np.ndarray
    dport: np.ndarray  # the most used destination port of the group
    attempts: np.ndarray
    failed_attempts: np.ndarray
    #: Guessing: 1; spraying: targets with at least one failed-looking attempt.
    distinct_targets: np.ndarray
    #: Spraying: the most failed attempts on any one target (few = spraying, not guessing).
    max_failed_per_target: np.ndarray
    bytes_median: np.ndarray
    #: Robust coefficient of variation of bytes per failed attempt: 1.4826 * MAD / median.
    bytes_cv: np.ndarray
    #: Summed attempt durations over the group's span: tools attempt back to back or in
    #: parallel (>= 1); polling and beaconing leave the line idle between connections (<< 1).
    busy_ratio: np.ndarray
    first_ns: np.ndarray
    last_ns: np.ndarray

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    @property
    def failure_ratio(self) -> np.ndarray:
        return np.asarray(self.failed_attempts / np.maximum(self.attempts, 1))

    def take(self, m: np.ndarray) -> BruteRows:
        return columns.take(self, m)

    @staticmethod
    def concat(parts: list[BruteRows]) -> BruteRows:
        return columns.concat(BruteRows, parts)


def _robust_spread(
    values: np.ndarray, groups: np.ndarray, ng: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per group: median and robust coefficient of variation (1.4826 MAD / median)."""
    med = np.zeros(ng, dtype=np.float64)
    cv = np.zeros(ng, dtype=np.float64)
    if values.size == 0:
        return med, cv
    order = np.lexsort((values, groups))
    g, v = groups[order], values[order].astype(np.float64)
    bounds = np.flatnonzero(np.diff(g)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [g.size]])
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        x = v[a:b]
        m = float(np.median(x))
        med[g[a]] = m
        cv[g[a]] = 1.4826 * float(np.median(np.abs(x - m))) / m if m > 0 else 0.0
    return med, cv


def aggregate(a: Attempts) -> BruteRows:
    """Guessing and spraying aggregates of attempts (all in one window)."""
    if len(a) == 0:
        z = np.zeros(0, dtype=np.int64)
        zu = np.zeros(0, dtype=np.uint64)
        zf = np.zeros(0, dtype=np.float64)
        return BruteRows(z, zu, zu, zu, zu, z, z, z, z, z, z, zf, zf, zf, z, z)
    u = np.uint64
    svc = a.service.astype(u)
    parts = []
    # Failed attempts per (source, service, target): the guessing rows, and the unit of spraying.
    pair_keys = np.column_stack([a.src_hi, a.src_lo, svc, a.dst_hi, a.dst_lo])
    pfirst, pinv = columns.group(pair_keys)
    np_ = pfirst.shape[0]
    pair_failed = np.bincount(pinv, weights=a.failed, minlength=np_).astype(np.int64)
    for kind in (0, 1):
        if kind == 0:
            first, ginv = pfirst, pinv
        else:
            first, ginv = columns.group(np.column_stack([a.src_hi, a.src_lo, svc]))
        ng = first.shape[0]
        attempts = np.bincount(ginv, minlength=ng).astype(np.int64)
        failed = np.bincount(ginv, weights=a.failed, minlength=ng).astype(np.int64)
        if kind == 0:
            distinct = (failed > 0).astype(np.int64)
            max_per = failed
        else:
            pg = ginv[pfirst]  # the spraying group of each pair
            distinct = np.bincount(pg, weights=pair_failed > 0, minlength=ng).astype(np.int64)
            max_per = np.zeros(ng, dtype=np.int64)
            np.maximum.at(max_per, pg, pair_failed)
        f = a.failed
        med, cv = _robust_spread(a.bytes_total[f], ginv[f], ng)
        first_ns = np.full(ng, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first_ns, ginv, a.start_ns)
        last_ns = np.zeros(ng, dtype=np.int64)
        np.maximum.at(last_ns, ginv, a.end_ns)
        busy_ns = np.bincount(ginv, weights=(a.end_ns - a.start_ns).astype(float), minlength=ng)
        busy = busy_ns / np.maximum(last_ns - first_ns, 1_000_000)
        zero = np.zeros(ng, dtype=np.uint64)
        parts.append(
            BruteRows(
                kind=np.full(ng, kind, dtype=np.int64),
                src_hi=a.src_hi[first],
                src_lo=a.src_lo[first],
                dst_hi=a.dst_hi[first] if kind == 0 else zero,
                dst_lo=a.dst_lo[first] if kind == 0 else zero,
                service=a.service[first],
                dport=a.dport[first],
                attempts=attempts,
                failed_attempts=failed,
                distinct_targets=distinct,
                max_failed_per_target=max_per,
                bytes_median=med,
                bytes_cv=cv,
                busy_ratio=busy,
                first_ns=first_ns,
                last_ns=last_ns,
            )
        )
    return BruteRows.concat(parts)
