"""Data time for streaming detectors: fixed windows completed by a watermark, and episodes.

Time is the data's (ns since the epoch), never the wall clock: the watermark is the latest time
seen in the input, and a window is complete once the watermark has passed its end by `lag_ns`
(the meter's longest idle timeout: the longest a flow can still arrive after it started).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")

#: The watermark before any data: earlier than every time.
NO_TIME = int(np.iinfo(np.int64).min)


class DataTimeWindows(Generic[T]):
    """Accumulators (one `new()` each) per window `[w * window_ns, (w + 1) * window_ns)` of data
    time, and the watermark that says which windows are complete.

    A detector whose lag may change after construction (a restored model takes the running
    meter's: `learning` sets `det.lag_ns`) passes its current lag to `complete`.
    """

    def __init__(self, window_ns: int, lag_ns: int, new: Callable[[], T]) -> None:
        self.window_ns = window_ns
        self.lag_ns = lag_ns
        self._new = new
        self.open: dict[int, T] = {}
        self.watermark = NO_TIME

    def advance(self, t_ns: int) -> None:
        """The input has reached data time `t_ns`."""
        self.watermark = max(self.watermark, int(t_ns))

    def now(self, watermark_ns: int | None = None) -> int:
        """The watermark, moved on to `watermark_ns` (the pipeline's) when that is later."""
        return self.watermark if watermark_ns is None else max(self.watermark, watermark_ns)

    def at(self, w: int) -> T:
        """The accumulator of window `w` (created empty when new)."""
        acc = self.open.get(w)
        if acc is None:
            acc = self.open[w] = self._new()
        return acc

    def split(self, start_ns: np.ndarray) -> list[tuple[T, np.ndarray]]:
        """Items by the window their start falls in: (that window's accumulator, item mask)."""
        win = start_ns // self.window_ns
        return [(self.at(int(w)), win == w) for w in np.unique(win).tolist()]

    def complete(self, watermark_ns: int | None = None, lag_ns: int | None = None) -> list[int]:
        """Open windows whose end is more than the lag (`lag_ns`, else the windows' own) behind
        the watermark, oldest first."""
        wm = self.now(watermark_ns)
        lag = self.lag_ns if lag_ns is None else lag_ns
        return sorted(w for w in self.open if (w + 1) * self.window_ns + lag < wm)

    def pop(self, w: int) -> T:
        return self.open.pop(w)

    def flush(self) -> list[int]:
        """All open windows, oldest first (end of input); the watermark starts again, since a new
        stream may start at any time."""
        self.watermark = NO_TIME
        return sorted(self.open)


@dataclass(slots=True)
class Episode:
    """Repeated sightings of one thing about one entity, counted until quiet for a while."""

    first_ns: int
    last_ns: int
    count: int = 1
    alerted: bool = False
    #: Whatever the detector needs to write the alert (the first finding and row).
    data: Any = None
    servers: set[str] = field(default_factory=set)


EpisodeKey = tuple[str, str, str]


class Episodes:
    """Bounded episode table keyed by (entity, signature, key): one alert per episode.

    An episode is due `window_s` of data time after its first sighting (with the count so far);
    later sightings are counted, not alerted again; it ends after `gap_s` of quiet. At most
    `max_open` are open (new ones beyond are dropped and counted). The watermark is the latest
    data time the owner has seen (`advance`).
    """

    def __init__(self, window_s: float, gap_s: float, max_open: int) -> None:
        self.window_ns = int(window_s * 1e9)
        self.gap_ns = int(gap_s * 1e9)
        self.max_open = max_open
        self.open: dict[EpisodeKey, Episode] = {}
        self._ready: list[tuple[EpisodeKey, Episode]] = []
        self.dropped = 0
        self.repeats = 0
        self.watermark = NO_TIME

    def advance(self, t_ns: int) -> None:
        """The input has reached data time `t_ns`."""
        self.watermark = max(self.watermark, int(t_ns))

    def __len__(self) -> int:
        return len(self.open)

    def see(self, key: EpisodeKey, ts_ns: int, data: Any, server: str = "") -> None:
        ep = self.open.get(key)
        if ep is not None and ts_ns - ep.last_ns > self.gap_ns:
            if not ep.alerted:
                self._ready.append((key, ep))
            del self.open[key]
            ep = None
        if ep is None:
            if len(self.open) >= self.max_open:
                self.dropped += 1
                return
            ep = self.open[key] = Episode(ts_ns, ts_ns, data=data)
        else:
            ep.count += 1
            if ep.alerted:
                self.repeats += 1
            if ts_ns < ep.first_ns:  # events of long flows arrive late
                ep.first_ns = ts_ns
            ep.last_ns = max(ep.last_ns, ts_ns)
        if server and len(ep.servers) < 64:
            ep.servers.add(server)

    def due(self, watermark_ns: int | None = None) -> list[tuple[EpisodeKey, Episode]]:
        """Episodes whose first window is complete at the watermark (moved on to `watermark_ns`
        when that is later; each returned once); alerted episodes quiet for longer than the gap
        are forgotten."""
        wm = self.watermark if watermark_ns is None else max(self.watermark, watermark_ns)
        out, self._ready = self._ready, []
        stale = []
        for key, ep in self.open.items():
            if not ep.alerted and ep.first_ns + self.window_ns <= wm:
                ep.alerted = True
                out.append((key, ep))
            elif ep.alerted and ep.last_ns + self.gap_ns < wm:
                stale.append(key)
        for key in stale:
            del self.open[key]
        return out

    def flush(self) -> list[tuple[EpisodeKey, Episode]]:
        """Every episode not alerted yet (end of input); the watermark starts again."""
        self.watermark = NO_TIME
        out, self._ready = self._ready, []
        out += [(k, ep) for k, ep in self.open.items() if not ep.alerted]
        self.open.clear()
        return out
