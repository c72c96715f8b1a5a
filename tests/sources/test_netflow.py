"""NetFlow v5/v9/IPFIX decoding: hand-built messages for every version and every lie a
datagram can tell, a real exporter (Debian's softflowd replaying captures) compared with the
flows Tapetum meters from the same captures, and real exports decoded like tshark does."""

from __future__ import annotations

import random
import shutil
import socket
import struct
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tapetum.flows.build import state_bits_from_flags
from tapetum.flows.meter import FlowBatch
from tapetum.sources.netflow import REVERSE_PEN, NetflowCaptureSource, NetflowCollector
from tapetum.testing import (
    CaptureBuilder,
    Host,
    dns_lookup,
    http_session,
    ping,
    ssh_session,
    tcp_failed,
    tls_session,
)
from tests.conftest import data_path
from tests.detectors.helpers import flows_of

NS = 1_000_000_000
EXPORT_S = 1_700_000_000
EXPORTER = "192.0.2.9"

# -- message builders (struct, independent of the decoder) ------------------------------------


def v5(
    records: list[dict[str, int]],
    *,
    uptime: int = 100_000,
    nsecs: int = 0,
    count: int | None = None,
) -> bytes:
    head = struct.pack(
        ">HHIIIIBBH",
        5,
        len(records) if count is None else count,
        uptime,
        EXPORT_S,
        nsecs,
        1,
        0,
        7,
        0,
    )
    body = b"".join(
        struct.pack(
            ">4s4s4sHHIIIIHHBBBBHHBBH",
            socket.inet_aton(r["src"]),  # type: ignore[arg-type]
            socket.inet_aton(r["dst"]),
            b"\0" * 4,
            0,
            0,
            r["pkts"],
            r["octets"],  # type: ignore[arg-type]
            r["first"],
            r["last"],
            r["sport"],
            r["dport"],
            0,
            r.get("flags", 0),
            r["proto"],
            0,
            0,
            0,
            0,
            0,
            0,
        )
        for r in records
    )
    return head + body


def v9(sets: list[bytes], *, uptime: int = 100_000, source_id: int = 3) -> bytes:
    return struct.pack(">HHIIII", 9, len(sets), uptime, EXPORT_S, 1, source_id) + b"".join(sets)


def ipfix(sets: list[bytes], *, domain: int = 3, length: int | None = None) -> bytes:
    body = b"".join(sets)
    n = 16 + len(body) if length is None else length
    return struct.pack(">HHIII", 10, n, EXPORT_S, 1, domain) + body


def flowset(sid: int, body: bytes, *, pad_to: int = 1, length: int | None = None) -> bytes:
    body += b"\0" * (-(len(body) + 4) % pad_to)
    return struct.pack(">HH", sid, len(body) + 4 if length is None else length) + body


def template(tid: int, fields: list[tuple[int, int] | tuple[int, int, int]]) -> bytes:
    """A template record: (element, length) or (enterprise, element, length) fields."""
    out = struct.pack(">HH", tid, len(fields))
    for f in fields:
        if len(f) == 3:
            pen, ie, ln = f
            out += struct.pack(">HHI", ie | 0x8000, ln, pen)
        else:
            out += struct.pack(">HH", *f)
    return out


V4_FIELDS: list[tuple[int, int] | tuple[int, int, int]] = [
    (8, 4),
    (12, 4),
    (7, 2),
    (11, 2),
    (4, 1),
    (6, 1),
    (2, 4),
    (1, 4),
    (22, 4),
    (21, 4),
]


def v4_record(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    proto: int,
    flags: int,
    pkts: int,
    octets: int,
    first: int,
    last: int,
) -> bytes:
    return (
        socket.inet_aton(src)
        + socket.inet_aton(dst)
        + struct.pack(">HHBBIIII", sport, dport, proto, flags, pkts, octets, first, last)
    )


def rows(fb: FlowBatch | None) -> list[dict[str, object]]:
    assert fb is not None
    n = fb.num
    return [
        {
            "src": fb.src_ip[i],
            "dst": fb.dest_ip[i],
            "sport": int(n["src_port"][i]),
            "dport": int(n["dest_port"][i]),
            "proto": int(n["proto"][i]),
            "pkts": int(n["pkts_toserver"][i]),
            "bytes": int(n["bytes_toserver"][i]),
            "rpkts": int(n["pkts_toclient"][i]),
            "rbytes": int(n["bytes_toclient"][i]),
            "start": int(n["start_ns"][i]),
            "end": int(n["end_ns"][i]),
            "state_bits": int(n["state_bits"][i]),
            "vlan": int(n["vlan"][i]),
        }
        for i in range(len(fb))
    ]


def warned(c: NetflowCollector, kind: str) -> str:
    text = [str(w) for w in c.warnings if w.kind == kind]
    assert text, f"no {kind} warning in {[str(w) for w in c.warnings]}"
    assert EXPORTER in text[0] and "byte" in text[0]
    return text[0]


# -- NetFlow v5 -------------------------------------------------------------------------------


def test_v5_records_times_and_icmp() -> None:
    c = NetflowCollector(pair_biflows=False)
    recs = [
        dict(
            src="10.0.0.1",
            dst="10.0.0.2",
            sport=40000,
            dport=443,
            proto=6,
            flags=0x1B,
            pkts=10,
            octets=5000,
            first=90_000,
            last=99_500,
        ),
        dict(
            src="10.0.0.1",
            dst="10.0.0.3",
            sport=0,
            dport=0x0800,
            proto=1,
            pkts=2,
            octets=168,
            first=95_000,
            last=96_000,
        ),
    ]
    assert c.feed(v5(recs, nsecs=250_000_000), EXPORTER) == 2
    r = rows(c.take())
    boot_ns = EXPORT_S * NS + 250_000_000 - 100_000 * 1_000_000
    assert r[0]["start"] == boot_ns + 90_000 * 1_000_000
    assert r[0]["end"] == boot_ns + 99_500 * 1_000_000
    assert (r[0]["pkts"], r[0]["bytes"], r[0]["rpkts"]) == (10, 5000, 0)
    # NetFlow flags are one direction's: SYN+FIN seen from the originator, no answer known.
    assert r[0]["state_bits"] == state_bits_from_flags(0x1B, 0)
    # ICMP echo request (Cisco: dst port = type << 8 | code) keyed as the meter does.
    assert (r[1]["sport"], r[1]["dport"]) == (8, 0)
    assert c.counters.by_version == {"5": 1}


def test_v5_uptime_wrap() -> None:
    """The 32-bit uptime wraps after 49.7 days: a flow that started before the wrap."""
    c = NetflowCollector()
    rec = dict(
        src="10.0.0.1",
        dst="10.0.0.2",
        sport=1,
        dport=2,
        proto=17,
        pkts=1,
        octets=40,
        first=2**32 - 1000,
        last=500,
    )
    c.feed(v5([rec], uptime=1000), EXPORTER)
    r = rows(c.take())[0]
    assert r["end"] - r["start"] == 1500 * 1_000_000
    assert r["end"] == EXPORT_S * NS - 500 * 1_000_000


def test_v5_count_that_lies() -> None:
    c = NetflowCollector()
    rec = dict(
        src="10.0.0.1",
        dst="10.0.0.2",
        sport=1,
        dport=2,
        proto=17,
        pkts=1,
        octets=40,
        first=1,
        last=2,
    )
    assert c.feed(v5([rec], count=30), EXPORTER) == 0
    assert c.counters.malformed_by_kind == {"count_beyond_datagram": 1}
    assert "count 30" in warned(c, "count_beyond_datagram")
    assert c.take() is None
    assert c.feed(b"\x00\x05\x00", EXPORTER) == 0  # shorter than the header
    assert c.counters.malformed_by_kind["truncated_header"] == 1


# -- NetFlow v9 -------------------------------------------------------------------------------


def test_v9_template_then_data_and_pairing() -> None:
    c = NetflowCollector()
    tpl = flowset(0, template(300, V4_FIELDS))
    data = flowset(
        300,
        v4_record("10.0.0.1", "10.0.0.2", 40000, 80, 6, 0x1B, 5, 600, 90_000, 91_000)
        + v4_record("10.0.0.2", "10.0.0.1", 80, 40000, 6, 0x1B, 4, 3000, 90_010, 91_000),
        pad_to=4,
    )
    assert c.feed(v9([tpl, data]), EXPORTER) == 2
    (r,) = rows(c.take())
    assert (r["src"], r["sport"], r["dst"], r["dport"]) == ("10.0.0.1", 40000, "10.0.0.2", 80)
    assert (r["pkts"], r["bytes"], r["rpkts"], r["rbytes"]) == (5, 600, 4, 3000)
    # v9 headers carry whole seconds only: times are relative to EXPORT_S exactly.
    assert r["start"] == EXPORT_S * NS - 10_000 * 1_000_000
    assert r["state_bits"] == state_bits_from_flags(0x1B, 0x1B)  # both directions' flags
    assert c.counters.biflows_paired == 1
    # Without pairing both records stay one-direction flows.
    c2 = NetflowCollector(pair_biflows=False)
    c2.feed(v9([tpl, data]), EXPORTER)
    assert [x["rpkts"] for x in rows(c2.take())] == [0, 0]


def test_v9_data_before_template_is_buffered_then_decoded() -> None:
    c = NetflowCollector()
    data = flowset(301, v4_record("10.0.0.1", "10.0.0.2", 1, 2, 17, 0, 1, 50, 99_000, 99_000))
    assert c.feed(v9([data]), EXPORTER) == 0
    assert c.pending() == 1 and c.take() is None
    # Another exporter's (or another source id's) template does not release it.
    c.feed(v9([flowset(0, template(301, V4_FIELDS))]), "198.51.100.1")
    c.feed(v9([flowset(0, template(301, V4_FIELDS))], source_id=4), EXPORTER)
    assert c.pending() == 1
    assert c.feed(v9([flowset(0, template(301, V4_FIELDS))]), EXPORTER) == 1
    assert c.pending() == 0
    assert c.counters.pending_decoded == 1
    assert rows(c.take())[0]["bytes"] == 50


def test_pending_sets_are_bounded() -> None:
    c = NetflowCollector(max_pending_sets=3)
    for tid in range(400, 405):
        c.feed(v9([flowset(tid, b"\x01" * 24)]), EXPORTER)
    assert c.pending() == 3
    assert c.counters.pending_dropped == 2
    c.close()
    assert c.counters.pending_never_decoded == 3


def test_v9_template_with_zero_fields_and_zero_length() -> None:
    c = NetflowCollector()
    c.feed(v9([flowset(0, struct.pack(">HH", 310, 0))]), EXPORTER)
    assert "0 fields" in warned(c, "template_no_fields")
    c.feed(v9([flowset(0, template(311, [(1, 0), (2, 0)]))]), EXPORTER)
    assert "0 bytes" in warned(c, "record_length_zero")
    assert c.templates == {}


def test_v9_options_template_is_counted_and_its_data_skipped() -> None:
    c = NetflowCollector()
    # Options template 320: scope "system" (type 1, 4 bytes), option field sampling interval.
    opt = flowset(1, struct.pack(">HHHHHHH", 320, 4, 4, 1, 4, 34, 4), pad_to=4)
    c.feed(v9([opt, flowset(320, struct.pack(">II", 0, 100))]), EXPORTER)
    assert c.counters.options_templates == 1
    assert c.counters.options_records == 1
    assert c.take() is None


# -- IPFIX ------------------------------------------------------------------------------------


def test_ipfix_absolute_times_reduced_size_and_unknown_fields() -> None:
    fields: list[tuple[int, int] | tuple[int, int, int]] = [
        (8, 4),
        (12, 4),
        (7, 2),
        (11, 2),
        (4, 1),
        (1, 3),  # octetDeltaCount in 3 bytes (reduced-size encoding)
        (2, 2),
        (152, 8),
        (153, 8),  # flowStart/EndMilliseconds
        (58, 2),  # vlanId
        (9999, 5, 4),  # an enterprise element: kept as bytes, ignored
        (210, 3),  # paddingOctets: unknown to the mapping, skipped by its length
    ]
    rec = (
        socket.inet_aton("10.1.1.1")
        + socket.inet_aton("10.1.1.2")
        + struct.pack(">HHB", 5353, 53, 17)
        + (70000).to_bytes(3, "big")
        + struct.pack(">HQQH", 7, 1_700_000_000_123, 1_700_000_000_456, 42)
        + b"ABCD"
        + b"\0\0\0"
    )
    c = NetflowCollector()
    c.feed(ipfix([flowset(2, template(400, fields)), flowset(400, rec * 2, pad_to=8)]), EXPORTER)
    r = rows(c.take())
    assert len(r) == 2  # the set's padding is not a record
    assert (r[0]["bytes"], r[0]["pkts"], r[0]["vlan"]) == (70000, 7, 42)
    assert (r[0]["start"], r[0]["end"]) == (1_700_000_000_123 * 10**6, 1_700_000_000_456 * 10**6)
    assert c.counters.unknown_fields == 2


def test_ipfix_ntp_microseconds_and_ipv6() -> None:
    fields: list[tuple[int, int] | tuple[int, int, int]] = [
        (27, 16),
        (28, 16),
        (7, 2),
        (11, 2),
        (4, 1),
        (2, 8),
        (1, 8),
        (154, 8),
        (155, 8),
    ]
    ntp_s = 1_700_000_000 + 2_208_988_800
    start = (ntp_s << 32) | (1 << 31)  # +0.5 s
    rec = (
        socket.inet_pton(socket.AF_INET6, "2001:db8::1")
        + socket.inet_pton(socket.AF_INET6, "2001:db8::2")
        + struct.pack(">HHBQQQQ", 1234, 443, 6, 3, 180, start, (ntp_s + 2) << 32)
    )
    c = NetflowCollector()
    c.feed(ipfix([flowset(2, template(401, fields)), flowset(401, rec)]), EXPORTER)
    (r,) = rows(c.take())
    assert (r["src"], r["dst"]) == ("2001:db8::1", "2001:db8::2")
    assert r["start"] == 1_700_000_000 * NS + NS // 2
    assert r["end"] == 1_700_000_002 * NS


def test_ipfix_uptime_times_anchored_by_options_system_init_time() -> None:
    """softflowd's IPFIX: flowStart/EndSysUpTime plus an options record with
    systemInitTimeMilliseconds (scope: meteringProcessId)."""
    opt = flowset(3, struct.pack(">HHH", 256, 2, 1) + struct.pack(">HHHH", 143, 4, 160, 8))
    init_ms = 1_600_000_000_000
    c = NetflowCollector()
    data = flowset(300, v4_record("10.0.0.1", "10.0.0.2", 1, 2, 17, 0, 1, 50, 5_000, 6_000))
    c.feed(ipfix([flowset(2, template(300, V4_FIELDS)), data]), EXPORTER)
    # Before the anchor is known: the flow is assumed to end at export time (counted).
    assert c.counters.uptime_without_init_time == 1
    assert rows(c.take())[0]["end"] == EXPORT_S * NS
    c.feed(ipfix([opt, flowset(256, struct.pack(">IQ", 77, init_ms)), data]), EXPORTER)
    (r,) = rows(c.take())
    assert (r["start"], r["end"]) == ((init_ms + 5_000) * 10**6, (init_ms + 6_000) * 10**6)
    assert c.counters.options_templates == 1 and c.counters.options_records == 1


def test_ipfix_template_withdrawal() -> None:
    c = NetflowCollector()
    data = flowset(500, v4_record("10.0.0.1", "10.0.0.2", 1, 2, 17, 0, 1, 50, 1, 2))
    c.feed(ipfix([flowset(2, template(500, V4_FIELDS) + template(501, V4_FIELDS))]), EXPORTER)
    assert len(c.templates) == 2
    c.feed(ipfix([flowset(2, struct.pack(">HH", 500, 0))]), EXPORTER)  # withdraw 500
    assert len(c.templates) == 1 and c.counters.templates_withdrawn == 1
    assert c.feed(ipfix([data]), EXPORTER) == 0  # its data now waits for a new template
    assert c.pending() == 1
    c.feed(ipfix([flowset(2, struct.pack(">HH", 2, 0))]), EXPORTER)  # withdraw all
    assert c.templates == {} and c.counters.templates_withdrawn == 2
    # An options template withdrawal is 4 bytes too, in an options template set.
    opt = struct.pack(">HHH", 256, 2, 1) + struct.pack(">HHHH", 143, 4, 160, 8)
    c.feed(ipfix([flowset(3, opt)]), EXPORTER)
    assert len(c.templates) == 1
    c.feed(ipfix([flowset(3, struct.pack(">HH", 256, 0))]), EXPORTER)
    assert c.templates == {} and c.counters.templates_withdrawn == 3


def _varlen(b: bytes) -> bytes:
    return bytes([len(b)]) + b if len(b) < 255 else b"\xff" + struct.pack(">H", len(b)) + b


def test_ipfix_variable_length_fields() -> None:
    fields: list[tuple[int, int] | tuple[int, int, int]] = [
        (8, 4),
        (96, 65535),
        (12, 4),
        (7, 2),
        (11, 2),
        (4, 1),
        (26866, 204, 65535),
        (2, 4),
        (1, 4),
    ]
    recs = b"".join(
        socket.inet_aton("10.0.0.1")
        + _varlen(name)
        + socket.inet_aton("10.0.0.2")
        + struct.pack(">HHB", 50000 + k, 53, 17)
        + _varlen(b"q" * k)
        + struct.pack(">II", k + 1, 100)
        for k, name in enumerate([b"", b"dns", b"x" * 300])
    )
    c = NetflowCollector()
    c.feed(ipfix([flowset(2, template(600, fields)), flowset(600, recs, pad_to=4)]), EXPORTER)
    r = rows(c.take())
    assert [(x["sport"], x["pkts"], x["bytes"]) for x in r] == [
        (50000, 1, 100),
        (50001, 2, 100),
        (50002, 3, 100),
    ]
    assert c.counters.variable_length_templates == 1
    # A variable-length field that claims more than the set holds: records before it stay.
    cut = recs[: len(recs) - 20]
    c.feed(ipfix([flowset(600, cut)]), EXPORTER)
    assert len(rows(c.take())) == 2
    assert "runs past the end" in warned(c, "record_length")


def test_ipfix_biflow_reverse_elements() -> None:
    fields = [*V4_FIELDS, (REVERSE_PEN, 2, 4), (REVERSE_PEN, 1, 4), (REVERSE_PEN, 6, 1)]
    rec = v4_record("10.0.0.1", "10.0.0.2", 40000, 22, 6, 0x1B, 20, 3000, 1, 2) + struct.pack(
        ">IIB", 18, 4000, 0x1B
    )
    # softflowd-style: the only traffic in the reverse fields (the forward side is empty).
    rec2 = v4_record("10.0.0.1", "10.0.0.3", 40001, 53, 17, 0, 0, 0, 1, 2) + struct.pack(
        ">IIB", 1, 90, 0
    )
    c = NetflowCollector()
    c.feed(ipfix([flowset(2, template(700, fields)), flowset(700, rec + rec2)]), EXPORTER)
    r = sorted(rows(c.take()), key=lambda x: str(x["src"]))
    assert (r[0]["pkts"], r[0]["bytes"], r[0]["rpkts"], r[0]["rbytes"]) == (20, 3000, 18, 4000)
    assert r[0]["state_bits"] == state_bits_from_flags(0x1B, 0x1B)
    assert (r[1]["src"], r[1]["sport"], r[1]["dst"], r[1]["pkts"]) == (
        "10.0.0.3",
        53,
        "10.0.0.1",
        1,
    )
    assert c.counters.biflows_paired == 0


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (ipfix([flowset(2, template(800, V4_FIELDS), length=500)]), "set_length"),
        (ipfix([flowset(2, b"", length=0)]), "set_length"),
        (ipfix([flowset(2, b"", length=2)]), "set_length"),
        (ipfix([flowset(2, template(800, V4_FIELDS))], length=4000), "message_length"),
        (ipfix([flowset(2, struct.pack(">HH", 800, 5000) + b"\0" * 8)]), "template_length"),
        (ipfix([flowset(3, struct.pack(">HHH", 801, 2, 0) + b"\0" * 8)]), "template_scope"),
        (ipfix([flowset(2, template(7, V4_FIELDS))]), "template_id"),
        (ipfix([flowset(9, b"\0" * 8)]), "reserved_set_id"),
        (v9([flowset(0, template(300, V4_FIELDS), length=9999)]), "set_length"),
        (ipfix([flowset(2, template(802, V4_FIELDS))]) + b"\x01\x02", "none"),
    ],
)
def test_lengths_that_lie(message: bytes, kind: str) -> None:
    c = NetflowCollector()
    c.feed(message, EXPORTER)
    if kind == "none":  # bytes after the IPFIX message length are not part of it
        assert c.counters.malformed == 0 and len(c.templates) == 1
        return
    assert c.counters.malformed_by_kind.get(kind) == 1, c.counters.malformed_by_kind
    warned(c, kind)


def test_bad_set_keeps_what_came_before() -> None:
    c = NetflowCollector()
    good = flowset(2, template(900, V4_FIELDS))
    data = flowset(900, v4_record("10.0.0.1", "10.0.0.2", 1, 2, 17, 0, 1, 50, 1, 2))
    assert c.feed(ipfix([good, data, flowset(900, b"", length=60000)]), EXPORTER) == 1
    assert len(rows(c.take())) == 1
    assert c.counters.malformed_by_kind == {"set_length": 1}


def test_random_garbage_never_raises_or_hangs() -> None:
    """Mutated and truncated real-looking messages: decoded, rejected or counted, never a crash."""
    rng = random.Random(7)
    seeds = [
        ipfix(
            [
                flowset(2, template(300, V4_FIELDS)),
                flowset(300, v4_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 2, 1, 40, 1, 2)),
            ]
        ),
        v9(
            [
                flowset(0, template(300, V4_FIELDS)),
                flowset(300, v4_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 2, 1, 40, 1, 2)),
            ]
        ),
        v5(
            [
                dict(
                    src="10.0.0.1",
                    dst="10.0.0.2",
                    sport=1,
                    dport=2,
                    proto=6,
                    pkts=1,
                    octets=40,
                    first=1,
                    last=2,
                )
            ]
        ),
    ]
    c = NetflowCollector(max_pending_sets=16)
    for k in range(3000):
        m = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            m[rng.randrange(len(m))] = rng.randrange(256)
        if k % 3 == 0:
            m = m[: rng.randrange(len(m) + 1)]
        c.feed(bytes(m), EXPORTER)
        if k % 100 == 0:
            c.take()
    c.take()
    assert c.counters.datagrams == 3000
    assert c.counters.malformed > 0 and c.counters.records > 0
    assert len(c.warnings) <= 20 * len(c.counters.malformed_by_kind)


def test_templates_are_bounded() -> None:
    c = NetflowCollector(max_templates=4)
    for tid in range(256, 266):
        c.feed(v9([flowset(0, template(tid, V4_FIELDS))]), EXPORTER)
    assert len(c.templates) == 4 and c.counters.templates_evicted == 6
    assert c.templates_by_exporter() == {EXPORTER: 4}


# -- a real exporter: softflowd replaying captures --------------------------------------------

SOFTFLOWD = shutil.which("softflowd") or (
    "/usr/sbin/softflowd" if Path("/usr/sbin/softflowd").exists() else None
)
needs_softflowd = pytest.mark.skipif(SOFTFLOWD is None, reason="softflowd not installed")


def softflowd_export(pcap: Path, version: str, tmp: Path, *extra: str) -> list[bytes]:
    """Replay `pcap` through softflowd to a UDP socket on loopback; the datagrams it sent.

    `-a` takes times from the capture; in `-r` mode flows only expire at the end of the file
    (or when the table is full), so each 5-tuple gives one flow per direction. `-c none`: no
    control socket (softflowd 1.1.0 blocks on it when reading a file)."""
    assert SOFTFLOWD is not None
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.bind(("127.0.0.1", 0))
    port = rx.getsockname()[1]
    cmd = [
        SOFTFLOWD,
        "-r",
        str(pcap),
        "-n",
        f"127.0.0.1:{port}",
        "-v",
        version,
        "-d",
        "-a",
        "-c",
        "none",
        "-p",
        str(tmp / "softflowd.pid"),
        *extra,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    assert "Shutting down after pcap EOF" in out.stderr
    rx.setblocking(False)
    got: list[bytes] = []
    while True:
        try:
            got.append(rx.recv(65535))
        except BlockingIOError:
            break
    rx.close()
    return got


def directional(batches: list[FlowBatch]) -> Counter[tuple[object, ...]]:
    """(proto, sender, sport, receiver, dport, packets|bytes) -> count, over all flows: the
    per-direction traffic of each 5-tuple, whatever the flows' orientation or splits."""
    d: Counter[tuple[object, ...]] = Counter()
    for fb in batches:
        n = fb.num
        for i in range(len(fb)):
            p, s, t = int(n["proto"][i]), fb.src_ip[i], fb.dest_ip[i]
            sp, dp = int(n["src_port"][i]), int(n["dest_port"][i])
            for fwd, a, ap, b, bp in ((True, s, sp, t, dp), (False, t, dp, s, sp)):
                pk = int(n["pkts_toserver" if fwd else "pkts_toclient"][i])
                if pk:
                    d[(p, a, ap, b, bp, "pkts")] += pk
                    d[(p, a, ap, b, bp, "bytes")] += int(
                        n["ip_bytes_toserver" if fwd else "ip_bytes_toclient"][i]
                    )
    return d


def oriented(batches: list[FlowBatch]) -> set[tuple[object, ...]]:
    return {
        (
            int(fb.num["proto"][i]),
            fb.src_ip[i],
            int(fb.num["src_port"][i]),
            fb.dest_ip[i],
            int(fb.num["dest_port"][i]),
        )
        for fb in batches
        for i in range(len(fb))
    }


def collect(datagrams: list[bytes]) -> tuple[NetflowCollector, FlowBatch]:
    c = NetflowCollector("softflowd")
    for d in datagrams:
        c.feed(d, "127.0.0.1")
    fb = c.take()
    assert fb is not None
    assert c.counters.malformed == 0 and c.pending() == 0
    return c, fb


def synthetic_capture(tmp: Path) -> Path:
    """Web, TLS, SSH, DNS, pings and failed connections, IPv4 and IPv6, from tapetum.testing."""
    b = CaptureBuilder(seed=5)
    rng = random.Random(5)
    clients = [Host(f"10.1.0.{k}") for k in range(10, 20)] + [
        Host(f"2001:db8::{k:x}") for k in range(10, 14)
    ]
    v4 = [Host(f"192.0.2.{k}") for k in range(1, 10)]
    v6 = [Host(f"2001:db8:1::{k:x}") for k in range(1, 5)]
    dns = Host("10.1.0.2")
    for k in range(120):
        c = rng.choice(clients)
        six = ":" in c.ip
        s = rng.choice(v6 if six else v4)
        t = rng.uniform(0, 60)
        kind = k % 6
        if kind == 0:
            b.add(t, http_session, c, s, host="a.example")
        elif kind == 1:
            b.add(t, tls_session, c, s, sni="b.example")
        elif kind == 2 and not six:
            b.add(t, dns_lookup, c, dns, f"n{k}.example")
        elif kind == 3:
            b.add(t, ping, c, s, count=3)
        elif kind == 4:
            b.add(
                t,
                tcp_failed,
                c,
                s,
                rng.choice([81, 8443]),
                kind=rng.choice(["unanswered", "refused", "syn-reset"]),
            )
        else:
            b.add(t, ssh_session, c, s)
    path = tmp / "synthetic.pcap"
    b.write(path)
    return path


def compare(
    mine: Counter[tuple[object, ...]], theirs: Counter[tuple[object, ...]]
) -> tuple[set[tuple[object, ...]], list[tuple[object, ...]]]:
    """Directions only one side has, and byte counts that differ (packets must agree)."""
    dirs_m = {k[:5] for k in mine}
    dirs_t = {k[:5] for k in theirs}
    for k in dirs_m & dirs_t:
        assert mine[(*k, "pkts")] == theirs[(*k, "pkts")], k
    diff = [k for k in dirs_m & dirs_t if mine[(*k, "bytes")] != theirs[(*k, "bytes")]]
    return dirs_m ^ dirs_t, diff


@needs_softflowd
@pytest.mark.parametrize(("version", "extra"), [("5", ()), ("9", ()), ("10", ()), ("10", ("-b",))])
def test_softflowd_wikipedia_matches_tapetum(
    version: str, extra: tuple[str, ...], tmp_path: Path
) -> None:
    pcap = data_path("zeek", "wikipedia", "wikipedia.pcap")
    mine_batches = flows_of(pcap)
    _, fb = collect(softflowd_export(pcap, version, tmp_path, *extra))
    only, diff = compare(directional(mine_batches), directional([fb]))
    assert diff == []  # IP bytes per direction, exactly
    if version == "5":  # v5 cannot carry IPv6: those directions are missing, nothing else
        assert only and all(":" in str(k[1]) for k in only)
    else:
        assert only == set()
        # Same flows, same originators as the meter's.
        assert oriented([fb]) == oriented(mine_batches)
        assert len(fb) == sum(len(x) for x in mine_batches) == 34


@needs_softflowd
@pytest.mark.parametrize(("version", "extra"), [("5", ()), ("9", ()), ("10", ()), ("10", ("-b",))])
def test_softflowd_synthetic_matches_tapetum(
    version: str, extra: tuple[str, ...], tmp_path: Path
) -> None:
    pcap = synthetic_capture(tmp_path)
    mine_batches = flows_of(pcap)
    mine = directional(mine_batches)
    _, fb = collect(softflowd_export(pcap, version, tmp_path, *extra))
    theirs = directional([fb])
    only, diff = compare(mine, theirs)
    for k in diff:
        # softflowd counts the frame after the Ethernet header, so a 40-byte RST padded to the
        # 60-byte Ethernet minimum counts 46 bytes: up to 6 bytes more per packet, never less.
        extra_bytes = theirs[(*k, "bytes")] - mine[(*k, "bytes")]
        assert 0 < extra_bytes <= 6 * mine[(*k, "pkts")], k
        assert k[0] == 6
    if version == "5":
        assert only and all(":" in str(k[1]) for k in only)
    elif extra == ("-b",):
        # softflowd -b exports an ICMPv6 echo reply with reverse type 0 (not 129): those
        # replies cannot be told apart from the request's flow. Nothing else differs.
        assert all(k[0] == 58 for k in only)
    else:
        assert only == set()
        assert oriented([fb]) == oriented(mine_batches)
    assert len(diff) <= 10


# -- real exports (captured NetFlow traffic), checked against tshark --------------------------


def tshark_fields(pcap: Path, *fields: str, decode_as: str | None = None) -> list[list[str]]:
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    cmd = ["tshark", "-r", str(pcap), "-T", "fields"]
    if decode_as:
        cmd += ["-d", decode_as]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def test_real_v9_export_without_templates_matches_tshark() -> None:
    """A router's v9 export captured mid-stream: its templates were sent before the capture,
    so (as tshark) nothing can be decoded; every data set waits, counted, none is lost silently."""
    pcap = data_path("nfstream", "pcaps", "netflowv9.pcap")
    t = tshark_fields(
        pcap,
        "cflow.version",
        "cflow.source_id",
        "cflow.flowset_id",
        decode_as="udp.port==2057,cflow",
    )
    src = NetflowCaptureSource(str(pcap))
    batches = list(src)
    src.close()
    c = src.collector.counters
    assert c.datagrams == len(t) == 10
    assert c.by_version == {"9": len(t)}
    tshark_sets = sum(len(row[2].split(",")) for row in t)
    assert c.data_sets == tshark_sets == 23
    assert c.pending_sets == tshark_sets and c.pending_never_decoded == tshark_sets
    assert c.records == 0 and all(b.flows is None for b in batches)
    assert c.malformed == 0


def test_real_ipfix_templates_match_tshark() -> None:
    """A Fritz!Box IPFIX message: a data template with variable-length and enterprise
    fields, and two options templates, as tshark reads them."""
    pcap = data_path("nfstream", "pcaps", "netflow-fritz.pcap")
    (row,) = tshark_fields(
        pcap,
        "cflow.od_id",
        "cflow.template_id",
        "cflow.template_field_count",
        "cflow.template_ipfix_total_field_count",
        "cflow.template_field_length",
    )
    domain, ids, data_count, option_counts, lengths = row
    src = NetflowCaptureSource(str(pcap))
    list(src)
    src.close()
    col = src.collector
    tpl = {k[3]: t for k, t in col.templates.items()}
    assert {k[2] for k in col.templates} == {int(domain)}
    assert sorted(tpl) == sorted(int(x) for x in ids.split(","))
    data = [t for t in tpl.values() if not t.options]
    opts = sorted((t for t in tpl.values() if t.options), key=lambda t: t.tid)
    assert [len(t.fields) for t in data] == [int(data_count)]
    assert [len(t.fields) for t in opts] == [int(x) for x in option_counts.split(",")]
    ours = [ln for t in sorted(tpl.values(), key=lambda t: t.tid) for _, _, ln in t.fields]
    assert ours == [int(x) for x in lengths.split(",")]
    assert col.counters.variable_length_templates == sum(
        any(ln == 65535 for _, _, ln in t.fields) for t in tpl.values()
    )
    assert col.counters.options_templates == 2 and col.counters.malformed == 0
    assert col.templates_by_exporter() == {"192.168.0.1": 3}
    assert np.all([t.min_len > 0 for t in tpl.values()])
