"""Beaconing features: how regular a series of connections (or of packets in one flow) is.

Pure functions. The measures follow RITA's beacon analysis: timing regularity from the Bowley
skewness and the MAD/median of inter-arrival times, size regularity from the skewness and MAD
of bytes per connection, duration coverage (how much of the observed time the series spans) and
a time histogram (how evenly connections spread over the series' span). Two additions make it
robust to what implants do on purpose:

- jitter: a beacon sleeping period * (1 ± 30 %) has a MAD/median of about 0.15, still regular;
- missed beacons (host asleep, a dropped connection): an inter-arrival close to k periods is
  folded back to one period (`fold_intervals`) instead of counting as irregular.

Random (Poisson) traffic stays irregular: folding accepts an interval only when it lies within
`tolerance` periods of a multiple, and intervals shorter than half a period never fold.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from tapetum.features import columns

NS = 1_000_000_000
#: Weights of the components in the combined regularity (they sum to 1).
W_TIMING = 0.45
W_SIZE = 0.15
W_COVERAGE = 0.15
W_HISTOGRAM = 0.25
#: Share of intervals on the period's grid that random arrivals reach by chance.
GRID_FLOOR = 0.6
#: At most this many periods fold into one interval; a longer silence is a pause, not jitter.
MAX_FOLD = 8


def bowley_skew(x: np.ndarray) -> float:
    """Bowley (quartile) skewness in [-1, 1]; 0 for symmetric or degenerate data."""
    q1, q2, q3 = np.percentile(x, [25, 50, 75])
    den = q3 - q1
    if den <= 0:
        return 0.0
    return float((q3 + q1 - 2 * q2) / den)


def mad(x: np.ndarray) -> float:
    return float(np.median(np.abs(x - np.median(x))))


def fold_intervals(
    iat: np.ndarray, period: float, tolerance: float
) -> tuple[np.ndarray, np.ndarray]:
    """Fold intervals that are near multiples of `period` back to one period.

    Returns (folded intervals, on-grid mask). An interval is on the grid when it is within
    `tolerance * period` of k periods (1 <= k <= MAX_FOLD; the tolerance grows with sqrt(k), as
    the jitter of k independent sleeps adds up); on-grid intervals are divided by k, others are
    kept as they are.
    """
    if period <= 0 or iat.size == 0:
        return iat.astype(np.float64), np.zeros(iat.size, dtype=bool)
    k = np.maximum(np.rint(iat / period), 1.0)
    on = (np.abs(iat - k * period) <= tolerance * period * np.sqrt(k)) & (k <= MAX_FOLD)
    folded = np.where(on, iat / k, iat).astype(np.float64)
    return folded, on


@dataclass(frozen=True, slots=True)
class SeriesStats:
    """Regularity of one series of event times (connection starts, or packets in a flow)."""

    n: int
    period_s: float
    #: MAD/median of the folded intervals: 0.15 for a uniform ±30 % jitter.
    jitter: float
    on_grid: float
    missed: int
    timing_score: float
    size_score: float
    coverage: float
    histogram_score: float
    bytes_median: float
    bytes_mad: float
    span_s: float

    @property
    def regularity(self) -> float:
        """Combined regularity in [0, 1] (before prevalence and allowlist weights)."""
        return (
            W_TIMING * self.timing_score
            + W_SIZE * self.size_score
            + W_COVERAGE * self.coverage
            + W_HISTOGRAM * self.histogram_score
        )


EMPTY = SeriesStats(0, 0.0, 0.0, 0.0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def size_regularity(sizes: np.ndarray) -> tuple[float, float, float]:
    """(score, median, MAD) of sizes; MAD is judged against 32 bytes or 10 % of the median."""
    s = sizes.astype(np.float64)
    med = float(np.median(s))
    m = mad(s)
    madm_score = max(0.0, 1.0 - m / max(32.0, 0.1 * med))
    skew_score = 1.0 - abs(bowley_skew(s))
    return (madm_score + skew_score) / 2.0, med, m


def histogram_evenness(times_ns: np.ndarray) -> float:
    """1 - coefficient of variation of counts over equal bins of the series' span (>= 0)."""
    n = times_ns.size
    span = int(times_ns.max() - times_ns.min())
    if n < 3 or span <= 0:
        return 0.0
    bins = int(min(24, max(4, n // 3)))
    counts = np.bincount(
        np.minimum(((times_ns - times_ns.min()) * bins) // (span + 1), bins - 1).astype(np.int64),
        minlength=bins,
    ).astype(np.float64)
    return max(0.0, 1.0 - float(counts.std() / counts.mean()))


def series_stats(
    times_ns: np.ndarray,
    sizes: np.ndarray,
    *,
    observed_s: float,
    horizon_s: float,
    tolerance: float,
) -> SeriesStats:
    """Regularity of events at `times_ns` (any order) with `sizes` bytes each.

    `observed_s` is how long the data has been watched; coverage is the series' span over the
    smaller of that and `horizon_s` (so in long runs a beacon must persist `horizon_s` to get full
    credit, and one that lasts the whole of a short capture gets it too).
    """
    n = int(times_ns.size)
    if n < 3:
        return dataclasses.replace(EMPTY, n=n)
    order = np.argsort(times_ns, kind="stable")
    t = times_ns[order]
    sz = sizes[order]
    iat = np.diff(t).astype(np.float64) / NS
    period = float(np.median(iat))
    span_s = float(t[-1] - t[0]) / NS
    if period <= 0:
        # Most events share a start time: a burst, nothing periodic about it.
        return SeriesStats(
            n, 0.0, 0.0, 0.0, 0, 0.0, 0.0, 0.0, 0.0, float(np.median(sz)), 0.0, span_s
        )
    folded, on = fold_intervals(iat, period, tolerance)
    if on.any():
        # Missed beacons pull the median interval up; the folded intervals give the period.
        period = float(np.median(folded[on]))
        folded, on = fold_intervals(iat, period, tolerance)
    med = float(np.median(folded))
    jitter = mad(folded) / med if med > 0 else 1.0
    madm_score = max(0.0, 1.0 - jitter)
    # RITA's measure on the raw intervals too: folding alone flatters random arrivals.
    raw_score = max(0.0, 1.0 - mad(iat) / float(np.median(iat)))
    skew_score = 1.0 - abs(bowley_skew(folded))
    on_grid = float(on.mean())
    # Random (Poisson) arrivals land on a jitter-tolerant grid 50-70 % of the time, beacons
    # (even missing a fifth of their check-ins) over 90 %: only the excess counts.
    grid_score = min(1.0, max(0.0, (on_grid - GRID_FLOOR) / (0.95 - GRID_FLOOR)))
    timing = (madm_score + raw_score + skew_score + grid_score) / 4.0
    missed = int((np.maximum(np.rint(iat[on] / period), 1) - 1).sum())
    size_score, bytes_median, bytes_mad = size_regularity(sz)
    denom = min(observed_s, horizon_s)
    coverage = 1.0 if denom <= 0 else min(1.0, span_s / denom)
    return SeriesStats(
        n=n,
        period_s=period,
        jitter=jitter,
        on_grid=on_grid,
        missed=missed,
        timing_score=timing,
        size_score=size_score,
        coverage=coverage,
        histogram_score=histogram_evenness(t),
        bytes_median=bytes_median,
        bytes_mad=bytes_mad,
        span_s=span_s,
    )


def in_flow_events(
    seq_size: np.ndarray, seq_dir: np.ndarray, seq_ts: np.ndarray, seq_n: int, proto: int
) -> tuple[np.ndarray, np.ndarray]:
    """Times (ns since flow start) and IP sizes of the originator's data packets among a flow's
    first packets: every datagram for UDP; for TCP the packets larger than the smallest (pure
    ACK) by more than one byte (a keep-alive carries one byte), the SYN excluded."""
    n = int(min(seq_n, seq_size.shape[0]))
    size = seq_size[:n].astype(np.int64)
    mine = seq_dir[:n] == 0
    if proto == 6:
        mine[:1] = False  # the SYN
        if not mine.any():
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        mine &= size > int(size[mine].min()) + 1
    return seq_ts[:n][mine].astype(np.int64), size[mine]


#: Row kinds: a host pair (source, destination, port), a name (TLS SNI / HTTP host), one flow.
KIND_PAIR = 0
KIND_NAME = 1
KIND_FLOW = 2


@dataclass(slots=True)
class BeaconRows:
    """One row per series: the detector's feature table."""

    kind: np.ndarray
    src: list[str]
    #: Destination address, or the name for KIND_NAME rows.
    dest: list[str]
    #: Destination addresses seen (names: up to a few; the others: the address).
    dest_ips: list[tuple[str, ...]]
    dport: np.ndarray
    proto: np.ndarray
    connections: np.ndarray
    period_s: np.ndarray
    jitter: np.ndarray
    on_grid: np.ndarray
    missed: np.ndarray
    timing_score: np.ndarray
    size_score: np.ndarray
    coverage: np.ndarray
    histogram_score: np.ndarray
    regularity: np.ndarray
    bytes_median: np.ndarray
    bytes_mad: np.ndarray
    span_s: np.ndarray
    first_ns: np.ndarray
    last_ns: np.ndarray

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    def take(self, idx: np.ndarray) -> BeaconRows:
        return columns.take(self, idx)


def make_rows(
    items: list[tuple[int, str, str, tuple[str, ...], int, int, SeriesStats, int, int]],
) -> BeaconRows:
    """Rows from (kind, src, dest, dest_ips, dport, proto, stats, first_ns, last_ns) tuples."""
    st = [it[6] for it in items]

    def col(name: str, dtype: type) -> np.ndarray:
        return np.array([getattr(s, name) for s in st], dtype=dtype)

    return BeaconRows(
        kind=np.array([it[0] for it in items], dtype=np.int64),
        src=[it[1] for it in items],
        dest=[it[2] for it in items],
        dest_ips=[it[3] for it in items],
        dport=np.array([it[4] for it in items], dtype=np.int64),
        proto=np.array([it[5] for it in items], dtype=np.int64),
        connections=col("n", np.int64),
        period_s=col("period_s", np.float64),
        jitter=col("jitter", np.float64),
        on_grid=col("on_grid", np.float64),
        missed=col("missed", np.int64),
        timing_score=col("timing_score", np.float64),
        size_score=col("size_score", np.float64),
        coverage=col("coverage", np.float64),
        histogram_score=col("histogram_score", np.float64),
        regularity=np.array([s.regularity for s in st], dtype=np.float64),
        bytes_median=col("bytes_median", np.float64),
        bytes_mad=col("bytes_mad", np.float64),
        span_s=col("span_s", np.float64),
        first_ns=np.array([it[7] for it in items], dtype=np.int64),
        last_ns=np.array([it[8] for it in items], dtype=np.int64),
    )


def in_flow_stats(
    seq_size: np.ndarray,
    seq_dir: np.ndarray,
    seq_ts: np.ndarray,
    seq_n: int,
    proto: int,
    *,
    duration_s: float,
    observed_s: float,
    horizon_s: float,
    tolerance: float,
) -> SeriesStats:
    """Regularity of the originator's data packets inside one flow. Coverage is the flow's own
    life over the observed time (the first packets show the rhythm, not how long it lasted)."""
    t, size = in_flow_events(seq_size, seq_dir, seq_ts, seq_n, proto)
    if t.size < 3:
        return EMPTY
    s = series_stats(t, size, observed_s=0.0, horizon_s=horizon_s, tolerance=tolerance)
    denom = min(observed_s, horizon_s)
    coverage = 1.0 if denom <= 0 else min(1.0, duration_s / denom)
    return dataclasses.replace(s, coverage=coverage)
