"""AfterImage statistics against a slow pure-Python implementation of the paper's formulas."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import numpy as np
import pytest

from tapetum.kitsune.stats import (
    FEATURE_NAMES,
    AfterImage,
    feature_names,
    features_from_batch,
    schema_hash,
)
from tapetum.sources.pcap import CaptureReader
from tapetum.testing import CaptureBuilder, Host, horizontal_scan, ping, udp_exchange


class Damped:
    """One damped stream: decays by 2^(-lam * dt) only when time moves forward."""

    def __init__(self, lam: float) -> None:
        self.lam = lam
        self.w = self.ls = self.ss = 0.0
        self.t: int | None = None

    def decayed_w(self, t: int) -> float:
        if self.t is None or t <= self.t:
            return self.w
        return self.w * 2.0 ** (-self.lam * (t - self.t) / 1e9)

    def insert(self, v: float, t: int) -> None:
        if self.t is not None and t > self.t:
            g = 2.0 ** (-self.lam * (t - self.t) / 1e9)
            self.w *= g
            self.ls *= g
            self.ss *= g
        if self.t is None or t > self.t:
            self.t = t
        self.w += 1
        self.ls += v
        self.ss += v * v

    def mean(self) -> float:
        return self.ls / self.w if self.w > 0 else 0.0

    def var(self) -> float:
        return abs(self.ss / self.w - self.mean() ** 2) if self.w > 0 else 0.0


class Pair:
    """Two directions of a channel or socket with their residual-product sum."""

    def __init__(self, lam: float) -> None:
        self.lam = lam
        self.dirs = (Damped(lam), Damped(lam))
        self.jit = (Damped(lam), Damped(lam))
        self.res = [0.0, 0.0]
        self.sr = 0.0
        self.t_sr: int | None = None

    def update(self, d: int, v: float, t: int) -> list[float]:
        si, sj = self.dirs[d], self.dirs[1 - d]
        prev = si.t
        jitter = (t - prev) / 1e9 if prev is not None and t > prev else 0.0
        self.jit[d].insert(jitter, t)
        si.insert(v, t)
        if self.t_sr is not None and t > self.t_sr:
            self.sr *= 2.0 ** (-self.lam * (t - self.t_sr) / 1e9)
        if self.t_sr is None or t > self.t_sr:
            self.t_sr = t
        r = v - si.mean()
        self.sr += r * self.res[1 - d]
        self.res[d] = r
        cov = self.sr / (si.w + sj.decayed_w(t))
        ss = math.sqrt(si.var()) * math.sqrt(sj.var())
        return [
            si.w,
            si.mean(),
            math.sqrt(si.var()),
            math.sqrt(si.var() ** 2 + sj.var() ** 2),
            math.sqrt(si.mean() ** 2 + sj.mean() ** 2),
            cov,
            cov / ss if ss != 0 else 0.0,
        ]


def slow_features(
    packets: list[tuple[int, int, int, int, int, int, int]], lambdas: tuple[float, ...]
) -> np.ndarray:
    """packets: (t ns, src, dst, sport, dport, proto, size) with small integer addresses."""
    hosts: dict[tuple[int, float], Damped] = {}
    chans: dict[tuple[int, int, float], Pair] = {}
    socks: dict[tuple[tuple[int, int], tuple[int, int], int, float], Pair] = {}
    rows = []
    for t, src, dst, sp, dp, proto, size in packets:
        if proto not in (6, 17):
            sp = dp = 0
        host_f, chan_f, jit_f, sock_f = [], [], [], []
        for lam in lambdas:
            h = hosts.setdefault((src, lam), Damped(lam))
            h.insert(size, t)
            host_f += [h.w, h.mean(), math.sqrt(h.var())]
            a, b = sorted((src, dst))
            c = chans.setdefault((a, b, lam), Pair(lam))
            d = 0 if src <= dst else 1
            chan_f += c.update(d, size, t)
            j = c.jit[d]
            jit_f += [j.w, j.mean(), math.sqrt(j.var())]
            ea, eb = sorted(((src, sp), (dst, dp)))
            s = socks.setdefault((ea, eb, proto, lam), Pair(lam))
            sock_f += s.update(0 if (src, sp) <= (dst, dp) else 1, size, t)
        rows.append(host_f + chan_f + jit_f + sock_f)
    return np.array(rows)


def random_stream(seed: int, n: int) -> list[tuple[int, int, int, int, int, int, int]]:
    rng = random.Random(seed)
    t = 1_700_000_000 * 10**9
    out = []
    for _ in range(n):
        t += int(rng.expovariate(1 / 0.05) * 1e9)
        ts = t - int(rng.uniform(0, 0.2) * 1e9) if rng.random() < 0.1 else t  # out of order
        src, dst = rng.sample(range(1, 6), 2)
        proto = rng.choice([6, 17, 1])
        sp, dp = rng.choice([(40000, 80), (80, 40000), (5353, 5353), (1234, 53)])
        out.append((ts, src, dst, sp, dp, proto, rng.randint(40, 1500)))
    return out


def run_fast(packets: list[tuple[int, ...]], ext: AfterImage) -> np.ndarray:
    a = np.array(packets, dtype=np.int64)
    lo = (np.uint64(0xFFFF) << np.uint64(32)) | a[:, 1].astype(np.uint64)
    lo_d = (np.uint64(0xFFFF) << np.uint64(32)) | a[:, 2].astype(np.uint64)
    zero = np.zeros(len(a), np.uint64)
    return ext.update(a[:, 0], zero, lo, zero, lo_d, a[:, 3], a[:, 4], a[:, 5], a[:, 6])


@pytest.mark.parametrize(("seed", "lambdas"), [(1, (5.0, 3.0, 1.0, 0.1, 0.01)), (2, (10.0, 0.5))])
def test_matches_slow_reference(seed: int, lambdas: tuple[float, ...]) -> None:
    packets = random_stream(seed, 400)
    ext = AfterImage(lambdas=lambdas)
    fast = run_fast(packets, ext)
    slow = slow_features(packets, lambdas)
    assert fast.shape == (400, 20 * len(lambdas))
    # std = sqrt(|SS/w - mean^2|) cancels catastrophically for near-constant streams (sizes
    # ~1e3, variance ~1e-8), so one-ulp differences in the decay factors show up at ~1e-7 there.
    np.testing.assert_allclose(fast, slow, rtol=1e-7, atol=1e-5)
    # Out-of-order packets were present and did not produce negative jitter.
    assert any(b[0] < a[0] for a, b in itertools.pairwise(packets))
    jit = fast[:, [ext.names.index(f"jit_l{lam:g}_iat_mean_s") for lam in lambdas]]
    assert (jit >= 0).all()


def test_batches_equal_one_pass() -> None:
    packets = random_stream(3, 300)
    whole = run_fast(packets, AfterImage())
    ext = AfterImage()
    parts = np.concatenate([run_fast(packets[:100], ext), run_fast(packets[100:], ext)])
    np.testing.assert_array_equal(whole, parts)


def test_feature_names() -> None:
    assert len(FEATURE_NAMES) == 100 and len(set(FEATURE_NAMES)) == 100
    assert FEATURE_NAMES[0] == "host_l5_weight_pkts"
    assert FEATURE_NAMES[15:22] == tuple(
        f"chan_l5_{s}"
        for s in (
            "weight_pkts", "size_mean_bytes", "size_std_bytes", "radius_bytes2",
            "magnitude_bytes", "cov_bytes2", "pcc",
        )
    )  # fmt: skip
    assert FEATURE_NAMES[50] == "jit_l5_weight_pkts" and FEATURE_NAMES[-1] == "sock_l0.01_pcc"
    assert schema_hash() != schema_hash(feature_names((5.0, 3.0)))


def test_eviction_bounded_and_counted() -> None:
    rng = random.Random(5)
    packets = [
        (10**18 + k * 10**7, 1 + k % 40, 100, 1000 + k, 80, 6, rng.randint(60, 600))
        for k in range(400)
    ]
    ext = AfterImage(max_hosts=8, max_channels=8, max_sockets=16)
    x = run_fast(packets, ext)
    c = ext.counters()
    assert c.hosts <= 8 and c.channels <= 8 and c.sockets <= 16
    assert c.evicted_hosts > 0 and c.evicted_channels > 0 and c.evicted_sockets > 0
    # 40 hosts cycle through 8 slots: every host was evicted before it came back, so each packet
    # starts a fresh host entry (weight 1) — the stalest entries were the ones evicted.
    assert np.all(x[:, 0] == 1.0)
    # A table large enough keeps them all: weights grow.
    ext2 = AfterImage(max_hosts=64)
    assert run_fast(packets, ext2)[-1, 0] > 1.0 and ext2.counters().evicted_hosts == 0


def test_capture_skips_non_ip(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=3)
    a, c = Host("10.0.0.1"), Host("10.0.0.2")
    b.add(0.0, ping, a, c, count=3)
    b.add(1.0, udp_exchange, a, c, 53, b"q" * 30, b"r" * 80)
    b.add(2.0, horizontal_scan, a, ["10.0.0.7", "10.0.0.8"], 22, live={"10.0.0.2": c})
    path = tmp_path / "mix.pcap"
    b.write(path)
    ext = AfterImage()
    rows = 0
    with CaptureReader(path) as reader:
        for batch in reader:
            n_ip = int((batch.cols[: batch.n, 6] != 0).sum())
            x, idx = ext.process(batch)
            assert x.shape == (n_ip, 100) and len(idx) == n_ip and n_ip < batch.n
            assert np.isfinite(x).all()
            rows += n_ip
    assert rows == 8 and ext.counters().skipped_not_ip == 2  # ping 6 + UDP 2; 2 ARP requests
    with CaptureReader(path) as reader:
        assert features_from_batch(next(iter(reader))).shape == (8, 100)


def test_empty_and_bad_config() -> None:
    ext = AfterImage()
    e = np.zeros(0)
    assert ext.update(e, e, e, e, e, e, e, e, e).shape == (0, 100)
    with pytest.raises(ValueError):
        AfterImage(lambdas=(1.0, -1.0))
    with pytest.raises(ValueError):
        AfterImage(max_hosts=0)
