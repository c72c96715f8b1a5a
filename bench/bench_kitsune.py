"""Kitsune on packets: our batched KitNET vs the original per-sample KitNET, same features.

    python bench/bench_kitsune.py --synthetic bench/out/kitsune_lab.pcap [--json OUT.json]
    python bench/bench_kitsune.py --pcap FILE [--attacker IP --attack-start S --attack-end S]
    python bench/bench_kitsune.py --speed bench/out/bench.pcap [--max-packets N]

Reads the capture with tapetum's CaptureReader, extracts the 100 AfterImage features per IP
packet (tapetum.kitsune.stats), trains on the first part of the capture by time (the feature
mapper on the first `--fm-grace` training packets, the autoencoders on all training packets, as
the paper's FM/AD grace periods), scores the rest, and reports ROC-AUC against the labels (packets
from or to the attacker inside the attack window), the alarm rates at the threshold calibrated on
the training packets, and packets/s of the extraction, our scoring and the reference scoring.

`--synthetic` first writes a labelled capture: benign office traffic (web, TLS, DNS, failed
connections of 24 clients) for `--span` seconds, and from 10.9.9.9 during the attack window a
vertical SYN scan, a UDP flood and a 20 MB upload. Set OPENBLAS_NUM_THREADS=1 for one-core numbers.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from tapetum.kitsune.kitnet import KitNET, KitNETConfig
from tapetum.kitsune.reference import ReferenceKitNET, quantile_threshold
from tapetum.kitsune.stats import AfterImage
from tapetum.sources.decode import A_DST_HI, A_DST_LO, A_SRC_HI, A_SRC_LO, C_TS
from tapetum.sources.pcap import CaptureReader
from tapetum.testing import (
    CaptureBuilder,
    Host,
    dns_lookup,
    http_session,
    tcp_failed,
    tcp_session,
    tls_session,
    udp_exchange,
    vertical_scan,
)

ATTACKER = "10.9.9.9"


def build_lab(path: Path, *, span: float, seed: int) -> tuple[float, float]:
    """Write the labelled synthetic capture; returns the attack window (s from the start)."""
    b = CaptureBuilder(seed=seed)
    rng = random.Random(seed)
    clients = [Host(f"10.1.0.{k}") for k in range(10, 34)]
    web = [Host(f"192.0.2.{k}") for k in range(1, 60)]
    dns = Host("10.1.0.2")
    sessions = int(span * 8)
    for k in range(sessions):
        c, s = rng.choice(clients), rng.choice(web)
        t = rng.uniform(0, span)
        kind = k % 3
        if kind == 0:
            b.add(t, http_session, c, s, host=f"site{rng.randint(1, 30)}.example")
        elif kind == 1:
            b.add(t, tls_session, c, s, sni=f"app{rng.randint(1, 30)}.example")
        else:
            b.add(t, dns_lookup, c, dns, f"name{rng.randint(1, 99)}.example")
    for _ in range(sessions // 5):
        c, s = rng.choice(clients), rng.choice(web)
        kind = rng.choice(["unanswered", "refused", "syn-reset"])
        b.add(rng.uniform(0, span), tcp_failed, c, s, rng.choice([81, 8443, 5222]), kind=kind)
    start, end = 0.7 * span, 0.85 * span
    attacker = Host(ATTACKER)
    victim = Host("10.1.0.20")
    b.add(start, vertical_scan, attacker, victim, rng.sample(range(1, 10000), 1500))
    flood_at = start + 0.3 * (end - start)
    for k in range(3000):  # 300 datagrams/s for 10 s
        b.add(flood_at + k / 300.0, udp_exchange, attacker, victim, 9999, b"\x00" * 1024)
    chunk = bytes(rng.getrandbits(8) for _ in range(1 << 16))
    b.add(
        start + 0.6 * (end - start),
        tcp_session,
        attacker,
        Host("203.0.113.50"),
        443,
        [(chunk * 16, b"ok")] * 20,
    )
    b.write(path)
    return start, end


def read_features(
    path: Path, max_packets: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, AfterImage]:
    """(features, timestamps ns, address halves [n, 4], extraction seconds, extractor)."""
    ext = AfterImage()
    xs, ts, addrs = [], [], []
    spent = 0.0
    n = 0
    with CaptureReader(path) as reader:
        for batch in reader:
            t = time.perf_counter()
            x, idx = ext.process(batch)
            spent += time.perf_counter() - t
            xs.append(x)
            ts.append(batch.cols[idx, C_TS].copy())
            addrs.append(batch.addr[idx][:, [A_SRC_HI, A_SRC_LO, A_DST_HI, A_DST_LO]].copy())
            n += len(idx)
            if max_packets and n >= max_packets:
                break
    if not xs:
        return np.zeros((0, 100)), np.zeros(0, np.int64), np.zeros((0, 4), np.uint64), spent, ext
    return np.concatenate(xs), np.concatenate(ts), np.concatenate(addrs), spent, ext


def read_columns(path: Path, max_packets: int = 0) -> list[np.ndarray]:
    """The extractor's input columns of the IP packets of a capture."""
    from tapetum.kitsune.stats import _ip_rows
    from tapetum.sources.decode import C_DPORT, C_PROTO, C_SPORT, C_WIRELEN

    parts: list[list[np.ndarray]] = [[] for _ in range(9)]
    n = 0
    with CaptureReader(path) as reader:
        for batch in reader:
            idx = _ip_rows(batch.cols, batch.n)
            c, a = batch.cols[idx], batch.addr[idx]
            cols = [c[:, C_TS], *(a[:, k] for k in (A_SRC_HI, A_SRC_LO, A_DST_HI, A_DST_LO))]
            cols += [c[:, C_SPORT], c[:, C_DPORT], c[:, C_PROTO], c[:, C_WIRELEN]]
            for k, col in enumerate(cols):
                parts[k].append(col.copy())
            n += len(idx)
            if max_packets and n >= max_packets:
                break
    return [np.concatenate(p) for p in parts]


def addr_halves(ip: str) -> tuple[int, int]:
    a = ipaddress.ip_address(ip)
    v = int(ipaddress.IPv6Address(f"::ffff:{a}")) if a.version == 4 else int(a)
    return v >> 64, v & ((1 << 64) - 1)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney ROC-AUC with ties counted half."""
    from scipy.stats import rankdata

    pos = int(labels.sum())
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    r = rankdata(scores)
    return float((r[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def warm_up() -> None:
    """Compile the numba kernels outside the timed sections."""
    ext = AfterImage(max_hosts=4, max_channels=4, max_sockets=4)
    z = np.zeros(2, np.uint64)
    ext.update(np.array([1, 2]), z, z, z, z, np.zeros(2), np.zeros(2), np.zeros(2), np.ones(2))
    m = KitNET(KitNETConfig(epochs=1)).fit(np.random.default_rng(0).random((64, 100)))
    m.score(np.zeros((2, 100)))


def speed(path: Path, max_packets: int) -> dict[str, float]:
    warm_up()
    t = time.perf_counter()
    x, _, _, spent, ext = read_features(path, max_packets)
    wall = time.perf_counter() - t
    out = {
        "packets": float(len(x)),
        "extract_pkts_per_s": len(x) / spent if spent else 0.0,
        "read_decode_extract_pkts_per_s": len(x) / wall if wall else 0.0,
    }
    c = ext.counters()
    out.update(
        hosts=c.hosts, channels=c.channels, sockets=c.sockets,
        evicted=c.evicted_hosts + c.evicted_channels + c.evicted_sockets,
    )  # fmt: skip
    # The compiled statistics alone, on columns already in memory: best of 3 fresh extractors
    # (the CPU is shared; the best run is the least disturbed one).
    cols = read_columns(path, max_packets)
    # Also per CPU second of this process: other jobs on a shared machine stretch wall time.
    best = best_cpu = float("inf")
    for _ in range(3):
        fresh = AfterImage()
        t, c = time.perf_counter(), time.process_time()
        fresh.update(*cols)
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    out["extract_kernel_pkts_per_s"] = len(cols[0]) / best
    out["extract_kernel_pkts_per_cpu_s"] = len(cols[0]) / best_cpu
    if len(x) > 10_000:
        n_train = min(len(x) // 2, 200_000)
        m = KitNET(KitNETConfig()).fit(x[:n_train])
        t, c = time.perf_counter(), time.process_time()
        m.score(x[n_train:])
        out["ours_score_pkts_per_s"] = (len(x) - n_train) / (time.perf_counter() - t)
        out["ours_score_pkts_per_cpu_s"] = (len(x) - n_train) / (time.process_time() - c)
    return out


def evaluate(args: argparse.Namespace, path: Path, window: tuple[float, float] | None) -> dict:
    warm_up()
    x, ts, addr, spent, _ = read_features(path)
    res: dict[str, object] = {"capture": str(path), "packets": len(x)}
    res["extract_pkts_per_s"] = len(x) / spent if spent else 0.0
    if len(x) < 100:
        return res
    t0 = int(ts.min())
    rel = (ts - t0) / 1e9
    span = float(rel.max())
    train = rel < args.train_frac * span
    test = ~train
    labels = np.zeros(len(x), bool)
    if args.attacker and window is not None:
        hi, lo = addr_halves(args.attacker)
        involved = ((addr[:, 0] == hi) & (addr[:, 1] == lo)) | (
            (addr[:, 2] == hi) & (addr[:, 3] == lo)
        )
        labels = involved & (rel >= window[0]) & (rel <= window[1])
    n_train = int(train.sum())
    fm = min(args.fm_grace, n_train // 10)
    res.update(
        train_packets=n_train,
        test_packets=int(test.sum()),
        fm_grace=fm,
        attack_packets_in_train=int(labels[train].sum()),
        attack_packets_in_test=int(labels[test].sum()),
        span_s=span,
    )
    cfg = KitNETConfig(fm_rows=fm, log_scale=not args.no_log_scale, epochs=args.epochs)
    t = time.perf_counter()
    ours = KitNET(cfg).fit(x[train])
    res["ours_fit_s"] = time.perf_counter() - t
    t = time.perf_counter()
    s_ours = ours.score(x[test])
    res["ours_score_pkts_per_s"] = int(test.sum()) / (time.perf_counter() - t)
    y = labels[test]
    res["ours_auc"] = roc_auc(s_ours, y)
    res["ours_autoencoders"] = len(ours.groups)
    res["ours_threshold"] = ours.threshold
    alarm = s_ours > ours.threshold
    res["ours_fpr_at_threshold"] = float(alarm[~y].mean()) if (~y).any() else float("nan")
    res["ours_tpr_at_threshold"] = float(alarm[y].mean()) if y.any() else float("nan")
    if not args.no_reference:
        ref = ReferenceKitNET(100, 10, FM_grace_period=fm, AD_grace_period=n_train - fm - 1)
        xt = x[train]
        t = time.perf_counter()
        for row in xt:
            ref.process(row)
        res["reference_train_pkts_per_s"] = n_train / (time.perf_counter() - t)
        xs = x[test]
        lim = args.reference_max_test
        sel = (
            np.arange(len(xs))
            if not lim or lim >= len(xs)
            else np.linspace(0, len(xs) - 1, lim).astype(np.int64)
        )
        t = time.perf_counter()
        s_ref = np.array([ref.process(row) for row in xs[sel]])
        res["reference_score_pkts_per_s"] = len(sel) / (time.perf_counter() - t)
        res["reference_scored"] = len(sel)
        res["reference_autoencoders"] = len(ref.ensembleLayer)
        res["reference_auc"] = roc_auc(s_ref, y[sel])
        res["ours_auc_same_rows"] = roc_auc(s_ours[sel], y[sel])
        # The reference has no threshold; calibrate it like ours (quantile of its scores on the
        # last 20% of the training packets) for a side-by-side alarm rate.
        cal = xt[int(0.8 * n_train) :]
        s_ref_train = np.array([ref.execute(row) for row in cal[:: max(1, len(cal) // 20_000)]])
        thr = quantile_threshold(s_ref_train, cfg.false_alarm_rate)
        ya = y[sel]
        res["reference_fpr_at_threshold"] = float((s_ref[~ya] > thr).mean()) if (~ya).any() else 0
        res["reference_tpr_at_threshold"] = float((s_ref[ya] > thr).mean()) if ya.any() else 0
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--synthetic", type=Path, help="write the labelled lab capture here, use it")
    src.add_argument("--pcap", type=Path, help="an existing capture")
    src.add_argument("--speed", type=Path, help="throughput only, on this capture")
    ap.add_argument("--span", type=float, default=600.0, help="synthetic capture length, s")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--attacker", default="", help="attacker IP (labels) for --pcap")
    ap.add_argument("--attack-start", type=float, default=0.0, help="s from the capture start")
    ap.add_argument("--attack-end", type=float, default=float("inf"))
    ap.add_argument("--train-frac", type=float, default=0.5, help="training part, by time")
    ap.add_argument("--fm-grace", type=int, default=5000, help="feature-mapper packets (paper)")
    ap.add_argument("--epochs", type=int, default=KitNETConfig().epochs)
    ap.add_argument(
        "--no-log-scale", action="store_true", help="ours: no log compression of the features"
    )
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--reference-max-test", type=int, default=0, help="subsample its test rows")
    ap.add_argument("--max-packets", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    if args.speed:
        res: dict = speed(args.speed, args.max_packets)
    else:
        window: tuple[float, float] | None = None
        if args.synthetic:
            t = time.perf_counter()
            window = build_lab(args.synthetic, span=args.span, seed=args.seed)
            print(f"wrote {args.synthetic} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            args.attacker = ATTACKER
            path = args.synthetic
        else:
            path = args.pcap
            if args.attacker:
                window = (args.attack_start, args.attack_end)
        res = evaluate(args, path, window)
    for k, v in res.items():
        print(f"{k:32} {v:,.4g}" if isinstance(v, float) else f"{k:32} {v}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
