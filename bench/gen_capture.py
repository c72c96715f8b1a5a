"""Generate a large, realistic benchmark capture, streaming it to disk.

    python bench/gen_capture.py --packets 1000000 --out bench/out/bench.pcap \\
        [--seed 1] [--format pcap|pcap-ns|pcapng]

The traffic mix is `tapetum.testing.mix` (web/TLS/DNS mostly, long and short flows, SSH, NTP,
ICMP, IPv6, VLAN/QinQ, fragments, scans). Packets are generated in time order by merging active
sessions, so memory stays flat however many packets are asked for. The capture is cut at exactly
`--packets` packets, so sessions in flight at that point end abruptly, as in any real capture.
"""

from __future__ import annotations

import argparse
import itertools
import resource
import sys
import time
from pathlib import Path

from tapetum.testing.capture import FORMATS, CaptureWriter, Interface
from tapetum.testing.mix import mixed_traffic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--packets", type=int, default=1_000_000, help="exact number of packets to write"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("bench/out/bench.pcap"), help="output capture file"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=1,
        help="seed: same seed, same capture (TLS handshake bytes aside)",
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="pcap", help="pcap (µs), pcap-ns or pcapng"
    )
    args = parser.parse_args(argv)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stream = mixed_traffic(args.seed)
    first = last = 0
    with CaptureWriter(args.out, args.format, (Interface("mirror0"),)) as writer:
        for packet in itertools.islice(stream, args.packets):
            writer.write(packet)
            last = packet.ts_ns
            if not first:
                first = last
    wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"wrote {args.out} ({args.format})")
    print(f"packets      {writer.packets:,}")
    print(f"bytes        {writer.bytes:,} captured, {args.out.stat().st_size:,} on disk")
    print(f"flows        {stream.flows:,} in {stream.sessions:,} sessions")
    print(f"data time    {(last - first) / 1e9:,.1f} s")
    rate = writer.packets / wall
    print(f"wall time    {wall:,.1f} s ({rate:,.0f} packets/s), peak RSS {peak_mb:,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
