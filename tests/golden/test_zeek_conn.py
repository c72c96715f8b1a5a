"""Golden test: Tapetum's flows against Zeek's conn.log for the same capture (btest baselines).

For every connection Zeek logged, Tapetum must report a flow with the same originator/responder
5-tuple, transport protocol, orig/resp packet counts, orig/resp IP bytes, conn_state and history,
and the two logs must hold the same number of connections. Timestamps, uids, services and
durations are not compared: the baselines mask timestamps as XXXX and uids are random per run.
The meter runs with Tapetum's defaults, which follow Zeek's (TCP 5 min, UDP/ICMP 1 min idle).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tapetum.flows.meter import FlowBatch, FlowMeter, MeterConfig
from tapetum.sources.pcap import CaptureReader

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
CASES = [("wikipedia", "wikipedia.pcap", 34), ("ssh_basic", "ssh.pcap", 25)]

Row = tuple[str, int, str, int, str, int, int, int, int, str, str]


def zeek_conns(path: Path) -> list[Row]:
    """conn.log rows as (orig_h, orig_p, resp_h, resp_p, proto, orig_pkts, orig_ip_bytes,
    resp_pkts, resp_ip_bytes, conn_state, history)."""
    fields: list[str] = []
    rows: list[Row] = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
            continue
        if not line or line.startswith("#"):
            continue
        rec = dict(zip(fields, line.split("\t"), strict=True))
        history = "" if rec["history"] == "-" else rec["history"]
        rows.append((
            rec["id.orig_h"], int(rec["id.orig_p"]), rec["id.resp_h"], int(rec["id.resp_p"]),
            rec["proto"], int(rec["orig_pkts"]), int(rec["orig_ip_bytes"]),
            int(rec["resp_pkts"]), int(rec["resp_ip_bytes"]), rec["conn_state"], history,
        ))  # fmt: skip
    assert fields, f"no #fields header in {path}"
    return rows


def tapetum_conns(pcap: Path) -> list[Row]:
    meter = FlowMeter(MeterConfig())
    flows: list[FlowBatch] = []
    with CaptureReader(pcap) as reader:
        for batch in reader:
            flows += meter.process(batch)[1]
    flows += meter.flush()
    rows: list[Row] = []
    for fb in flows:
        num = fb.num
        protos = [p.lower() for p in fb.proto_names()]
        for k in range(len(fb)):
            proto = {"ipv6-icmp": "icmp"}.get(protos[k], protos[k])
            rows.append((
                fb.src_ip[k], int(num["src_port"][k]), fb.dest_ip[k], int(num["dest_port"][k]),
                proto, int(num["pkts_toserver"][k]), int(num["ip_bytes_toserver"][k]),
                int(num["pkts_toclient"][k]), int(num["ip_bytes_toclient"][k]),
                fb.conn_state[k], fb.history[k],
            ))  # fmt: skip
    return rows


@pytest.mark.parametrize(("folder", "pcap", "n_conns"), CASES)
def test_every_zeek_connection_matches(folder: str, pcap: str, n_conns: int) -> None:
    log = DATA / "zeek" / folder / "conn.log"
    capture = DATA / "zeek" / folder / pcap
    if not log.exists() or not capture.exists():
        pytest.skip(f"Zeek golden data not available under {DATA.resolve()}")
    zeek = zeek_conns(log)
    assert len(zeek) == n_conns  # the baseline itself, as documented in shared/data/SOURCES.md
    ours = tapetum_conns(capture)
    # Every field of every connection must match: nothing is exempt. Compare as multisets so a
    # difference names the exact connection rows on each side.
    missing = Counter(zeek) - Counter(ours)
    extra = Counter(ours) - Counter(zeek)
    assert not missing and not extra, (
        f"only in Zeek's conn.log: {sorted(missing.elements())}\n"
        f"only in Tapetum: {sorted(extra.elements())}"
    )
    assert len(ours) == len(zeek)
