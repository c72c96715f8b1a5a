"""Packets unlike anything learnt: Kitsune's damped statistics scored by our KitNET.

`kitsune.packets` — every IP packet is described by AfterImage's 100 damped statistics
(tapetum.kitsune.stats: the sending host, the host pair and the socket, each over half-lives of
0.2 s to 100 s) and scored by our KitNET ensemble of autoencoders (tapetum.kitsune.kitnet);
0.5 is the threshold KitNET calibrated to `false_alarm_rate` on held-out learning packets.
Anomalous packets are grouped per conversation (unordered host pair) and window; a pair is
charged to the host that sent its first anomalous packet (the scanner, not the host answering
its probes with resets), and a host that sent or drew at least `min_anomalous_packets` anomalous
packets in a window gets one alert naming the packets' peers and ports and the statistics that
the autoencoders reconstructed worst, observed vs the median of the learnt packets.

This is a packet-level detector (`level = "packet"`): the pipeline hands it every packet batch
through `observe_packets`; `packet_features(batch)` gives the rows (stateful: the statistics run
over the whole stream). The flow contract's `features(flows, events)` returns an empty row set:
flows carry nothing this detector reads. The contract test drives packet-level detectors through
`packet_features`/`observe_packets` instead (tests/detectors/test_contract.py).

Learning, as in the paper, starts with grace periods in data time: the packets of the first
`fm_grace_s` choose the feature groups (feature mapping), those up to `fm_grace_s +
train_grace_s` (and at least `min_train_packets`) train the autoencoders; a uniform reservoir of
`max_train_packets` bounds memory when there are more. Then packets are scored, and learning
continues on the packets that scored below the threshold: they enter the reservoir, and the model
is refitted on it after every `refit_packets` of them. Poisoning: a packet at or above the
threshold is never learnt; one source may provide at most `max_source_share` of the packets
learnt between two refits; the reservoir is a uniform sample of all learnt packets, so a burst
of N packets displaces about N x reservoir / learnt of it (adaptation is bounded, a burst cannot
rewrite what was learnt). `tapetum learn` ends with a fit on the reservoir (`finish_learning`).

Victims: a host that answered an alerted conversation (the scanned host, the upload's server)
carries the attack in its own statistics for minutes; its anomalous packets during `collateral_s`
after it are counted (`collateral_`), not alerted on, unless it has more of them than the
conversation had.

Not persisted (state()): the damped statistics themselves (a model is used on later traffic,
whose statistics start afresh, as they did when the model was learnt) and unreported anomalies.

Cost: about 1 µs per packet for the statistics and 3-5 µs for the scoring, which would several
times slow down `tapetum analyze`: the detector is off by default (`[detectors.kitsune] enabled`),
and runs when enabled there, named in `tapetum learn --detectors`, or present in a model.

ATT&CK: none; the incident correlator puts the anomaly next to technique-bearing alerts.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tapetum.anomaly.arrays import decode_array, encode_array
from tapetum.config import KitsuneSection
from tapetum.detectors.common import AlertIds, fmt_bytes, fmt_duration
from tapetum.errors import ModelError
from tapetum.flows.key import addr_text_array, proto_name
from tapetum.flows.meter import FlowBatch
from tapetum.kitsune.kitnet import KitNET, KitNETConfig
from tapetum.kitsune.stats import LAMBDAS, AfterImage, feature_names, schema_hash
from tapetum.records import Alert, AppEvent
from tapetum.sources.decode import (
    A_DST_HI,
    A_DST_LO,
    A_SRC_HI,
    A_SRC_LO,
    C_DPORT,
    C_FLAGS,
    C_PROTO,
    C_SPORT,
    C_TS,
)
from tapetum.sources.pcap import PacketBatch

SIGNATURE = "kitsune.packets"
SIGNATURE_ID = 9_000_110
STATE_VERSION = 1
#: Distinct destination ports remembered per anomalous conversation (counted beyond).
MAX_PORTS = 1024
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass(slots=True)
class KitsuneRows:
    """One row per IP packet: its 100 damped statistics and who sent it to whom."""

    x: np.ndarray  # [n, 100] float64
    ts_ns: np.ndarray  # [n] int64
    addr: np.ndarray  # [n, 4] uint64: src hi, src lo, dst hi, dst lo
    sport: np.ndarray
    dport: np.ndarray
    proto: np.ndarray
    flags: np.ndarray  # TCP flags (0 for other protocols)

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])

    def take(self, idx: np.ndarray) -> KitsuneRows:
        return KitsuneRows(
            self.x[idx],
            self.ts_ns[idx],
            self.addr[idx],
            self.sport[idx],
            self.dport[idx],
            self.proto[idx],
            self.flags[idx],
        )

    @staticmethod
    def empty(n_features: int) -> KitsuneRows:
        z = np.zeros(0, np.int64)
        return KitsuneRows(np.zeros((0, n_features)), z, np.zeros((0, 4), np.uint64), z, z, z, z)

    @staticmethod
    def concat(parts: Sequence[KitsuneRows]) -> KitsuneRows:
        if not parts:
            return KitsuneRows.empty(len(feature_names()))
        return KitsuneRows(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("x", "ts_ns", "addr", "sport", "dport", "proto", "flags")
            )
        )


def _splitmix(seed: int, i: np.ndarray) -> np.ndarray:
    """Counter-based pseudo-random uint64 per index (deterministic reservoir slot choice)."""
    with np.errstate(over="ignore"):
        z = i.astype(np.uint64) + np.uint64(
            (seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF
        )
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return np.asarray(z ^ (z >> np.uint64(31)))


# -- words for the statistics -------------------------------------------------------------

_STAT_WORDS = {
    "weight_pkts": "packet rate (decayed count)",
    "size_mean_bytes": "mean packet size",
    "size_std_bytes": "packet size spread",
    "radius_bytes2": "size variance of both directions",
    "magnitude_bytes": "mean size of both directions",
    "cov_bytes2": "size covariance of the two directions",
    "pcc": "size correlation of the two directions",
    "iat_mean_s": "mean gap between packets",
    "iat_std_s": "spread of the gaps between packets",
}


def describe_feature(name: str, src: str, dst: str, sport: int, dport: int) -> str:
    """`sock_l5_weight_pkts` -> 'packet rate (decayed count) on 10.0.0.1:4000 → 10.0.0.2:80
    (half-life 0.2 s)'."""
    stream, lam, stat = name.split("_", 2)
    half = 1.0 / float(lam[1:])
    what = _STAT_WORDS.get(stat, stat)
    where = {
        "host": f"of everything {src} sent",
        "chan": f"from {src} to {dst}",
        "jit": f"from {src} to {dst}",
        "sock": f"on {src}:{sport} → {dst}:{dport}",
    }.get(stream, stream)
    return f"{what} {where} (half-life {f'{half:.2f}'.rstrip('0').rstrip('.')} s)"


def fmt_feature(name: str, v: float) -> str:
    if name.endswith("_bytes"):
        return fmt_bytes(v) if v >= 0 else f"-{fmt_bytes(-v)}"
    if name.endswith("_s"):
        return fmt_duration(v) if v >= 1 else f"{v * 1000:.3g} ms"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.3g}"


# -- the detector ---------------------------------------------------------------------------


class KitsuneDetector:
    name = "kitsune"
    #: Packet-level: rows come from packet batches (`packet_features`), not from flows.
    level = "packet"

    def __init__(self, config: KitsuneSection | None = None) -> None:
        self.config = c = config or KitsuneSection()
        if not (0 < c.false_alarm_rate < 1) or c.window_s <= 0 or c.max_train_packets < 2:
            raise ValueError(
                "kitsune: false_alarm_rate in (0, 1), window_s > 0, max_train_packets >= 2"
            )
        self.names = tuple(feature_names(LAMBDAS))
        self.window_ns = int(c.window_s * 1e9)
        #: Learned: the model (None until trained), median of the packets it was trained on.
        self.model_: KitNET | None = None
        self.typical_ = np.zeros(len(self.names))
        #: Learned: reservoir of learnt packets (features, learning order), counters.
        self.reservoir_ = np.zeros((0, len(self.names)), np.float32)
        self.reservoir_seq_ = np.zeros(0, np.int64)
        self.learnt_ = 0  # packets learnt (offered to the reservoir)
        self.since_fit_ = 0
        self.fm_packets_ = 0  # learnt packets inside the feature-mapping grace period
        self.learn_span_ns_ = 0  # data time of learning in streams already ended
        self.not_learnt_share_ = 0  # below threshold, but over their source's share
        self.anomalous_ = 0  # packets at or above the threshold (never learnt)
        self.pairs_dropped_ = 0
        self.collateral_ = 0  # victims' after-effects not reported (see _finalize)
        #: Host (address halves) -> (data time until which it counts as a victim, packets).
        self._victims: dict[tuple[int, int], tuple[int, int]] = {}
        #: Conversation (both ends) -> which end started it (0: the lower address), bounded.
        self._started: dict[tuple[tuple[int, int], tuple[int, int]], int] = {}
        self._per_source: dict[int, int] = {}
        self._ext: AfterImage | None = None
        self._stream_first: int | None = None
        self._watermark = np.iinfo(np.int64).min
        #: (window, pair key) -> aggregate of anomalous packets (see _record).
        self._pairs: dict[tuple[int, int, int, int, int], dict[str, Any]] = {}
        self._addr_cache: dict[tuple[int, int], str] = {}
        self._ids = AlertIds()

    # -- rows --------------------------------------------------------------------------------

    def _extractor(self) -> AfterImage:
        if self._ext is None:
            c = self.config
            self._ext = AfterImage(
                lambdas=LAMBDAS,
                max_hosts=c.max_hosts,
                max_channels=c.max_channels,
                max_sockets=c.max_sockets,
            )
        return self._ext

    def packet_features(self, batch: PacketBatch) -> KitsuneRows:
        """Rows of the IP packets of a batch (copied: the batch is only valid during the call).
        Stateful: consecutive batches of a stream continue its statistics."""
        x, idx = self._extractor().process(batch)
        c = batch.cols[idx]
        a = batch.addr[idx][:, [A_SRC_HI, A_SRC_LO, A_DST_HI, A_DST_LO]].astype(np.uint64)
        return KitsuneRows(
            x,
            c[:, C_TS].copy(),
            a,
            c[:, C_SPORT].copy(),
            c[:, C_DPORT].copy(),
            c[:, C_PROTO].copy(),
            c[:, C_FLAGS].copy(),
        )

    def features(self, flows: FlowBatch, events: Sequence[AppEvent] = ()) -> KitsuneRows:
        """Empty: a packet-level detector reads packets (`packet_features`), not flows."""
        return KitsuneRows.empty(len(self.names))

    def _texts(self, hi: np.ndarray, lo: np.ndarray) -> list[str]:
        return addr_text_array(hi, lo, self._addr_cache)

    def entities(self, rows: KitsuneRows) -> list[str]:
        return self._texts(rows.addr[:, 0], rows.addr[:, 1])

    # -- scoring and learning ----------------------------------------------------------------

    def score(self, rows: KitsuneRows) -> np.ndarray:
        """0..1 per packet, 0.5 at the calibrated threshold; 0 while nothing is learnt."""
        if len(rows) == 0 or self.model_ is None:
            return np.zeros(len(rows))
        return np.asarray(self.model_.anomaly_score(rows.x))

    def learn(self, rows: KitsuneRows) -> None:
        """Take these rows as normal: into the reservoir, then (re)fit on it."""
        self._offer(rows.x)
        if self.reservoir_.shape[0] >= 2:
            self._fit()

    def _offer(self, x: np.ndarray) -> None:
        """Reservoir sampling (Vitter's R), vectorised: row k of x is learnt packet learnt_+k."""
        n = x.shape[0]
        if n == 0:
            return
        cap = self.config.max_train_packets
        have = self.reservoir_.shape[0]
        grow = min(max(cap - have, 0), n)
        seq = self.learnt_ + np.arange(n, dtype=np.int64)
        if grow:
            self.reservoir_ = np.concatenate([self.reservoir_, x[:grow].astype(np.float32)])
            self.reservoir_seq_ = np.concatenate([self.reservoir_seq_, seq[:grow]])
        if grow < n:
            rest = seq[grow:]
            slot = (_splitmix(self.config.seed, rest) % (rest + 1).astype(np.uint64)).astype(
                np.int64
            )
            keep = slot < cap
            self.reservoir_[slot[keep]] = x[grow:][keep]
            self.reservoir_seq_[slot[keep]] = rest[keep]
        self.learnt_ += n
        self.since_fit_ += n

    def _fit(self) -> None:
        c = self.config
        order = np.argsort(self.reservoir_seq_, kind="stable")
        x = self.reservoir_[order].astype(np.float64)
        fm = int((self.reservoir_seq_ < self.fm_packets_).sum())
        if fm < 100:  # too few packets in the FM grace: map on the first learnt ones
            fm = min(x.shape[0], 5000)
        cfg = KitNETConfig(
            max_ae_size=c.max_ae_size, fm_rows=fm, false_alarm_rate=c.false_alarm_rate, seed=c.seed
        )
        try:
            model = KitNET(cfg, self.names).fit(x)
        except ValueError:
            return  # fewer than 2 finite rows: stay as before
        self.model_ = model
        ok = np.isfinite(x).all(axis=1)
        self.typical_ = np.median(x[ok], axis=0) if ok.any() else np.zeros(x.shape[1])
        self.since_fit_ = 0
        self._per_source.clear()

    def finish_learning(self) -> None:
        """End of a `tapetum learn` run: fit on everything learnt (also a grace period cut
        short by the end of the input)."""
        if self.reservoir_.shape[0] >= 2 and (self.model_ is None or self.since_fit_ > 0):
            self._fit()

    def _source_cap(self, rows: KitsuneRows) -> np.ndarray:
        """Mask of rows learnt within their source's share of the packets between refits."""
        if len(rows) == 0:
            return np.zeros(0, bool)
        c = self.config
        per = c.refit_packets if c.refit_packets > 0 else c.max_train_packets
        cap = max(1, int(c.max_source_share * per))
        key = (rows.addr[:, 0] * np.uint64(0x9E3779B97F4A7C15)) ^ rows.addr[:, 1]
        uniq, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
        used = self._per_source
        allowed = np.array([max(cap - used.get(k, 0), 0) for k in uniq.tolist()], np.int64)
        order = np.argsort(inv, kind="stable")
        starts = np.concatenate([[0], np.cumsum(cnt)[:-1]])
        rank = np.empty(len(rows), np.int64)
        rank[order] = np.arange(len(rows)) - np.repeat(starts, cnt)
        keep = rank < allowed[inv]
        if len(used) < 1_000_000:  # bounded: untracked sources beyond are simply not capped
            for k, n, a in zip(uniq.tolist(), cnt.tolist(), allowed.tolist(), strict=True):
                used[k] = used.get(k, 0) + min(n, a)
        return keep

    # -- streaming ---------------------------------------------------------------------------

    def _elapsed(self, ts: np.ndarray) -> np.ndarray:
        """Data time of learning at each packet (streams already ended plus this one)."""
        assert self._stream_first is not None
        return self.learn_span_ns_ + (ts - self._stream_first)

    def observe_packets(self, batch: PacketBatch) -> None:
        rows = self.packet_features(batch)
        if len(rows) == 0:
            return
        if self._stream_first is None:
            self._stream_first = int(rows.ts_ns.min())
        self._watermark = max(self._watermark, int(rows.ts_ns.max()))
        c = self.config
        if self.model_ is None:
            el = self._elapsed(rows.ts_ns)
            self.fm_packets_ += int((el < c.fm_grace_s * 1e9).sum())
            self._offer(rows.x)
            grace = (c.fm_grace_s + c.train_grace_s) * 1e9
            if int(el.max()) >= grace and self.learnt_ >= c.min_train_packets:
                self._fit()
            return
        s = self.score(rows)
        hit = s >= 0.5
        if hit.any():
            self.anomalous_ += int(hit.sum())
            self._record(rows, s, np.flatnonzero(hit))
        # Only what scored below the threshold is learnt: an attack cannot teach itself normal.
        calm = rows.take(np.flatnonzero(~hit))
        keep = self._source_cap(calm)
        self.not_learnt_share_ += int((~keep).sum())
        self._offer(calm.x[keep])
        if c.refit_packets > 0 and self.since_fit_ >= c.refit_packets:
            self._fit()

    def observe(self, flows: FlowBatch) -> None:
        """Packets only (`observe_packets`)."""

    def observe_events(self, events: Sequence[AppEvent]) -> None:
        """Packets only (`observe_packets`)."""

    def _record(self, rows: KitsuneRows, s: np.ndarray, hit: np.ndarray) -> None:
        """Fold anomalous packets into per-(window, conversation) aggregates (bounded).

        A conversation is an unordered host pair; each side's packets and destination ports
        are counted apart, with the evidence of who started it (see `_initiator`)."""
        a = rows.addr[hit]
        w = rows.ts_ns[hit] // self.window_ns
        swap = (a[:, 0] > a[:, 2]) | ((a[:, 0] == a[:, 2]) & (a[:, 1] > a[:, 3]))
        lo = np.where(swap[:, None], a[:, 2:4], a[:, 0:2])
        hi = np.where(swap[:, None], a[:, 0:2], a[:, 2:4])
        keys = np.column_stack([w.astype(np.uint64), lo, hi])
        uniq, first, inv = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        inv = inv.reshape(-1)
        order = np.argsort(inv, kind="stable")
        bounds = np.searchsorted(inv[order], np.arange(len(uniq) + 1))
        # TCP says who started: a SYN comes from the client, a SYN-ACK or a reset answers it.
        fl = rows.flags[hit]
        tcp = rows.proto[hit] == 6
        opens = tcp & ((fl & 0x12) == 0x02)
        answers = tcp & (((fl & 0x12) == 0x12) | ((fl & 0x04) != 0))
        vote = opens.astype(np.int64) - answers.astype(np.int64)  # +1: the sender started it
        for g in range(len(uniq)):
            members = order[bounds[g] : bounds[g + 1]]  # positions in `hit`, time order
            u = [int(v) for v in uniq[g].tolist()]
            key = (u[0], u[1], u[2], u[3], u[4])
            agg = self._pairs.get(key)
            if agg is None:
                if len(self._pairs) >= self.config.max_pairs:
                    self.pairs_dropped_ += len(members)
                    continue
                agg = self._pairs[key] = {
                    "ends": ((u[1], u[2]), (u[3], u[4])),
                    "n": [0, 0],
                    "ports": [{}, {}],
                    "ports_more": [0, 0],
                    "vote": 0,  # > 0: the lower address started the conversation
                    "first_side": int(swap[int(first[g])]),
                    "first": int(rows.ts_ns[hit[int(first[g])]]),
                    "last": 0,
                    "best": -1.0,
                }
            side = swap[members].astype(np.int64)  # 0: sent by the lower address
            for k in (0, 1):
                mine = members[side == k]
                agg["n"][k] += len(mine)
                ports = agg["ports"][k]
                dp, dn = np.unique(rows.dport[hit[mine]], return_counts=True)
                for p, n in zip(dp.tolist(), dn.tolist(), strict=True):
                    if p in ports or len(ports) < MAX_PORTS:
                        ports[p] = ports.get(p, 0) + n
                    else:
                        agg["ports_more"][k] += 1
            agg["vote"] += int((vote[members] * (1 - 2 * side)).sum())
            ts = rows.ts_ns[hit[members]]
            agg["first"] = min(agg["first"], int(ts.min()))
            agg["last"] = max(agg["last"], int(ts.max()))
            k = int(members[np.argmax(s[hit[members]])])
            if float(s[hit[k]]) > agg["best"]:
                r = int(hit[k])
                agg["best"] = float(s[r])
                agg["x"] = rows.x[r].copy()
                agg["pkt"] = (
                    int(a[k, 0]),
                    int(a[k, 1]),
                    int(a[k, 2]),
                    int(a[k, 3]),
                    int(rows.sport[r]),
                    int(rows.dport[r]),
                    int(rows.proto[r]),
                )

    def _initiator(self, agg: dict[str, Any]) -> dict[str, Any]:
        """The conversation seen from the side that started it: the side TCP's handshake flags
        name (SYNs sent, SYN-ACKs and resets received), else the side found so in an earlier
        window of the same conversation, else the sender of its first anomalous packet (the
        scanner, not the host answering its probes)."""
        pair = agg["ends"]
        if agg["vote"] != 0:
            i = 0 if agg["vote"] > 0 else 1
        else:
            i = self._started.get(pair, agg["first_side"])
        self._started.pop(pair, None)
        self._started[pair] = i  # most recent last: the oldest are forgotten first
        if len(self._started) > 10 * self.config.max_pairs:
            for old in list(self._started)[: len(self._started) // 2]:
                del self._started[old]
        return agg | {
            "init": agg["ends"][i],
            "resp": agg["ends"][1 - i],
            "n_init": agg["n"][i],
            "n_resp": agg["n"][1 - i],
            "ports": agg["ports"][i],
            "ports_more": agg["ports_more"][i],
        }

    def poll(self, watermark_ns: int | None = None) -> list[Alert]:
        wm = self._watermark if watermark_ns is None else max(self._watermark, watermark_ns)
        done = {k[0] for k in self._pairs if (k[0] + 1) * self.window_ns <= wm}
        return self._finalize(done)

    def flush(self) -> list[Alert]:
        """End of the stream: report the rest; the next packets start new statistics."""
        alerts = self._finalize(None)
        started = self._stream_first is not None and self._watermark > self._stream_first
        if started and self.model_ is None:  # grace time still running: carry it over
            assert self._stream_first is not None
            self.learn_span_ns_ += self._watermark - self._stream_first
        self._ext = None
        self._victims.clear()
        self._started.clear()
        self._stream_first = None
        self._watermark = np.iinfo(np.int64).min
        return alerts

    def _finalize(self, windows: set[int] | None) -> list[Alert]:
        keys = sorted(k for k in self._pairs if windows is None or k[0] in windows)
        by_host: dict[tuple[int, tuple[int, int]], list[dict[str, Any]]] = {}
        for k in keys:
            agg = self._initiator(self._pairs.pop(k))
            by_host.setdefault((k[0], agg["init"]), []).append(agg)
        c = self.config
        loud = {
            key: (sum(g["n_init"] + g["n_resp"] for g in aggs), aggs)
            for key, aggs in sorted(by_host.items())
            if sum(g["n_init"] + g["n_resp"] for g in aggs) >= c.min_anomalous_packets
        }
        # The hosts these conversations went to carry the attack in their own statistics for
        # minutes (the slowest half-life is 100 s): remember them as victims.
        collateral_ns = int(c.collateral_s * 1e9)
        for _, (_, aggs) in loud.items():
            for g in aggs:
                v = self._victims.get(g["resp"], (0, 0))
                n = g["n_init"] + g["n_resp"]
                self._victims[g["resp"]] = (max(v[0], g["last"] + collateral_ns), max(v[1], n))
        alerts = []
        for (w, host), (total, aggs) in loud.items():
            until, attack = self._victims.get(host, (0, 0))
            if min(g["first"] for g in aggs) <= until and total < attack:
                self.collateral_ += 1  # after-effects of what was done to it, not its doing
                continue
            if self.model_ is not None:
                alerts.append(self._alert(w, host, aggs, total))
        if len(self._victims) > c.max_pairs:  # bounded: forget the longest-expired victims
            stale = sorted(self._victims, key=lambda v: self._victims[v][0])
            for victim in stale[: c.max_pairs // 2]:
                del self._victims[victim]
        alerts.sort(key=lambda al: (al.ts_ns, al.alert_id))
        return alerts

    # -- explanations ------------------------------------------------------------------------

    def _text(self, hi: int, lo: int) -> str:
        return self._texts(np.array([hi], np.uint64), np.array([lo], np.uint64))[0]

    def _top_features(
        self, x: np.ndarray, pkt: tuple[int, ...], top: int = 3
    ) -> tuple[list[str], dict[str, float], dict[str, float]]:
        assert self.model_ is not None
        err = self.model_.feature_errors(x.reshape(1, -1))[0]
        src, dst = self._text(pkt[0], pkt[1]), self._text(pkt[2], pkt[3])
        parts: list[str] = []
        observed: dict[str, float] = {}
        baseline: dict[str, float] = {}
        for i in np.argsort(-err, kind="stable").tolist():
            name = self.names[i]
            obs, typ = float(x[i]), float(self.typical_[i])
            text = (
                f"{describe_feature(name, src, dst, pkt[4], pkt[5])} "
                f"{fmt_feature(name, obs)} (learnt typical {fmt_feature(name, typ)})"
            )
            if text in parts:  # a channel's packet count is also its gaps' count
                continue
            parts.append(text)
            observed[name], baseline[name] = obs, typ
            if len(parts) == top:
                break
        return parts, observed, baseline

    def explain(self, rows: KitsuneRows, idx: np.ndarray) -> list[str]:
        out = []
        s = self.score(rows)
        for k in np.asarray(idx).tolist():
            a = rows.addr[k]
            pkt = (
                int(a[0]),
                int(a[1]),
                int(a[2]),
                int(a[3]),
                int(rows.sport[k]),
                int(rows.dport[k]),
                int(rows.proto[k]),
            )
            head = (
                f"{self._text(pkt[0], pkt[1])}:{pkt[4]} → {self._text(pkt[2], pkt[3])}:"
                f"{pkt[5]}/{proto_name(pkt[6])}"
            )
            if self.model_ is None:
                out.append(f"{head}: nothing learnt yet")
                continue
            parts = self._top_features(rows.x[k], pkt)[0]
            out.append(
                f"{head}: score {s[k]:.2f} (threshold 0.50); worst reconstructed: "
                + "; ".join(parts)
            )
        return out

    def _alert(
        self, w: int, host: tuple[int, int], aggs: list[dict[str, Any]], total: int
    ) -> Alert:
        assert self.model_ is not None
        best = max(aggs, key=lambda g: g["best"])
        pkt = best["pkt"]
        first = min(g["first"] for g in aggs)
        last = max(g["last"] for g in aggs)
        ent = self._text(*host)
        peers = sorted(aggs, key=lambda g: -(g["n_init"] + g["n_resp"]))
        peer_ips = [self._text(*g["resp"]) for g in peers]
        ports: dict[int, int] = {}
        more = 0
        for g in aggs:
            more += g["ports_more"]
            for p, n in g["ports"].items():
                ports[p] = ports.get(p, 0) + n
        sent = sum(g["n_init"] for g in aggs)
        top_ports = sorted(ports, key=lambda p: (-ports[p], p))[:5]
        n_ports = len(ports) + more
        where = f"to {len(peers)} host{'s' if len(peers) != 1 else ''} ({', '.join(peer_ips[:3])}"
        where += ", …)" if len(peers) > 3 else ")"
        if n_ports:
            where += (
                f", {n_ports:,} destination port{'s' if n_ports != 1 else ''} "
                f"(most: {', '.join(str(p) for p in top_ports)})"
            )
        parts, observed, baseline = self._top_features(best["x"], pkt)
        learnt = self.model_.rows_learnt + self.model_.rows_calibration
        text = (
            f"{ent}: {total:,} packets unlike the {learnt:,} learnt ones in "
            f"{fmt_duration(max(last - first, 0) / 1e9)} ({sent:,} sent by it, "
            f"{total - sent:,} answers) {where}; most anomalous "
            f"{self._text(pkt[0], pkt[1])}:{pkt[4]} → {self._text(pkt[2], pkt[3])}:{pkt[5]}/"
            f"{proto_name(pkt[6])} (score {best['best']:.2f}, threshold 0.50): " + "; ".join(parts)
        )
        dest = peer_ips[0] if peer_ips else None
        return Alert(
            alert_id=self._ids(f"{SIGNATURE}|{ent}|{w}"),
            ts_ns=first,
            signature=SIGNATURE,
            signature_id=SIGNATURE_ID,
            category="anomaly",
            severity=2 if best["best"] >= 0.8 else 3,
            score=float(best["best"]),
            explanation=text,
            entity=ent,
            src_ip=ent,
            dest_ip=dest,
            dest_port=top_ports[0] if len(ports) == 1 else None,
            proto=proto_name(pkt[6]).upper() if len(peers) == 1 else None,
            first_ts_ns=first,
            last_ts_ns=last,
            observed=observed
            | {
                "anomalous_packets": float(total),
                "peers": float(len(peers)),
                "dest_ports": float(n_ports),
            },
            baseline=baseline | {"score_threshold": 0.5},
        )

    # -- persistence -------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Plain JSON; arrays (the model's npz bytes, the reservoir) as base64 blobs."""
        model = None
        if self.model_ is not None:
            with tempfile.TemporaryDirectory() as tmp:
                p = os.path.join(tmp, "kitnet.npz")
                self.model_.save(p)  # KitNET's own checked format (version, schema hash)
                with open(p, "rb") as f:
                    model = encode_array(np.frombuffer(f.read(), np.uint8))
        c = self.config
        return {
            "detector": self.name,
            "version": STATE_VERSION,
            "schema_hash": schema_hash(self.names),
            "features": list(self.names),
            "params": {"max_ae_size": c.max_ae_size, "false_alarm_rate": c.false_alarm_rate},
            "model": model,
            "typical": [float(v) for v in self.typical_],
            "reservoir": encode_array(self.reservoir_),
            "reservoir_seq": encode_array(self.reservoir_seq_),
            "learnt": self.learnt_,
            "since_fit": self.since_fit_,
            "fm_packets": self.fm_packets_,
            "learn_span_ns": self.learn_span_ns_,
            "counts": {
                "anomalous": self.anomalous_,
                "not_learnt_share": self.not_learnt_share_,
                "pairs_dropped": self.pairs_dropped_,
                "collateral": self.collateral_,
            },
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], config: KitsuneSection | None = None
    ) -> KitsuneDetector:
        if state.get("detector") != cls.name or state.get("version") != STATE_VERSION:
            raise ModelError(
                f"kitsune detector state {state.get('detector')!r} version "
                f"{state.get('version')} does not match this Tapetum's version {STATE_VERSION}; "
                "learn again"
            )
        det = cls(config)
        if state.get("schema_hash") != schema_hash(det.names):
            raise ModelError(
                f"kitsune detector state was learnt on feature schema {state.get('schema_hash')},"
                f" this Tapetum extracts {schema_hash(det.names)}; learn again"
            )
        try:
            if state["model"] is not None:
                raw = decode_array(state["model"], "kitsune model").tobytes()
                with tempfile.TemporaryDirectory() as tmp:
                    p = os.path.join(tmp, "kitnet.npz")
                    with open(p, "wb") as f:
                        f.write(raw)
                    det.model_ = KitNET.load(p, det.names)
            det.typical_ = np.array([float(v) for v in state["typical"]], np.float64)
            res = decode_array(state["reservoir"], "kitsune reservoir")
            seq = decode_array(state["reservoir_seq"], "kitsune reservoir order")
            det.learnt_ = int(state["learnt"])
            det.since_fit_ = int(state["since_fit"])
            det.fm_packets_ = int(state["fm_packets"])
            det.learn_span_ns_ = int(state["learn_span_ns"])
            counts = state["counts"]
            det.anomalous_ = int(counts["anomalous"])
            det.not_learnt_share_ = int(counts["not_learnt_share"])
            det.pairs_dropped_ = int(counts["pairs_dropped"])
            det.collateral_ = int(counts["collateral"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"kitsune detector state is incomplete ({exc!r})") from None
        n = len(det.names)
        if (
            res.ndim != 2
            or res.shape[1] != n
            or seq.shape != (res.shape[0],)
            or det.typical_.shape != (n,)
            or res.shape[0] > det.config.max_train_packets
            or not math.isfinite(float(det.typical_.sum()))
        ):
            raise ModelError("kitsune detector state: reservoir or medians have the wrong shape")
        det.reservoir_ = res.astype(np.float32)
        det.reservoir_seq_ = seq.astype(np.int64)
        return det
