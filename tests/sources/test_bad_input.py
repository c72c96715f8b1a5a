"""Broken captures: one clear error naming the file and offset when nothing is readable, otherwise
a counted warning with the byte offset and every readable packet before and after the damage.
Property tests mutate a real pcap and pcapng and check the same promises on random damage."""

from __future__ import annotations

import faulthandler
import gzip
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tapetum.errors import CaptureFormatError
from tapetum.sources.decode import C_CAPLEN, C_FILEOFF, C_STATUS, C_TS, S_EMPTY, S_LINKTYPE
from tapetum.sources.pcap import CaptureReader
from tests.sources.helpers import (
    DATA,
    LT_ETHERNET,
    Record,
    epb,
    idb,
    read_pcap,
    shb,
    write_pcap,
)

ORIGINAL = DATA / "zeek" / "wikipedia" / "wikipedia.pcap"
N_SMALL = 24  # packets in the small captures the property tests mutate


def _records() -> list[Record]:
    if not ORIGINAL.exists():
        pytest.skip(f"Zeek sample capture not available: {ORIGINAL.resolve()}")
    return read_pcap(ORIGINAL)[1][:N_SMALL]


def _small_pcap() -> bytes:
    hdr = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, LT_ETHERNET)
    return hdr + b"".join(
        struct.pack("<IIII", r.ts_ns // 10**9, r.ts_ns % 10**9 // 1000, len(r.data), r.wirelen)
        + r.data
        for r in _records()
    )


def _small_pcapng() -> bytes:
    return b"".join(
        [shb(), idb(LT_ETHERNET, 6)] + [epb(0, r.ts_ns, r.data, r.wirelen, 6) for r in _records()]
    )


def _record_ends(data: bytes) -> list[tuple[int, int]]:
    """(record start, record end) of each packet record of an intact small capture."""
    out = []
    if data[:4] == b"\x0a\x0d\x0d\x0a":
        pos = 0
        while pos < len(data):
            btype, blen = struct.unpack_from("<II", data, pos)
            if btype == 6:
                out.append((pos, pos + blen))
            pos += blen
    else:
        pos = 24
        while pos < len(data):
            caplen = struct.unpack_from("<I", data, pos + 8)[0]
            out.append((pos, pos + 16 + caplen))
            pos += 16 + caplen
    return out


def read_all(path: Path) -> tuple[CaptureReader, np.ndarray]:
    """Every packet's (file offset, caplen, ts, status), and the reader for its counters."""
    rows = []
    with CaptureReader(path) as reader:
        for batch in reader:
            c = batch.cols[: batch.n]
            rows.append(np.stack([c[:, C_FILEOFF], c[:, C_CAPLEN], c[:, C_TS], c[:, C_STATUS]], 1))
    return reader, (np.concatenate(rows) if rows else np.empty((0, 4), np.int64))


@contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Abort the whole run with every thread's traceback if the body hangs (numba loops cannot
    be interrupted by signals, so a deadline alone would not catch an endless loop)."""
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


# -- hand-made damage ------------------------------------------------------------------------------


def test_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello, this is not a capture at all\n" * 4)
    with pytest.raises(CaptureFormatError) as err:
        read_all(path)
    assert err.value.offset == 0 and err.value.path == str(path)
    assert str(path) in str(err.value) and "magic" in str(err.value)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.pcap"
    path.write_bytes(b"")
    with pytest.raises(CaptureFormatError, match="empty") as err:
        read_all(path)
    assert err.value.offset == 0


@pytest.mark.parametrize("size", [2, 10, 23])
def test_truncated_global_header(tmp_path: Path, size: int) -> None:
    path = tmp_path / "short.pcap"
    path.write_bytes(_small_pcap()[:size])
    with pytest.raises(CaptureFormatError) as err:
        read_all(path)
    assert err.value.offset == 0 and str(path) in str(err.value)


def test_missing_file_is_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureFormatError):
        CaptureReader(tmp_path / "absent.pcap")


@pytest.mark.parametrize("make", [_small_pcap, _small_pcapng], ids=["pcap", "pcapng"])
def test_truncated_final_record(tmp_path: Path, make: object) -> None:
    data = make()  # type: ignore[operator]
    last_start = _record_ends(data)[-1][0]
    path = tmp_path / "cut.cap"
    path.write_bytes(data[:-7])
    reader, rows = read_all(path)
    assert len(rows) == N_SMALL - 1  # every earlier packet kept
    assert reader.counters.truncated_records == 1
    (w,) = [w for w in reader.warnings if w.kind == "truncated_record"]
    assert w.offset == last_start and w.path == str(path)
    assert f"at byte {last_start}" in str(w)


def test_huge_caplen_in_the_middle_resyncs(tmp_path: Path) -> None:
    data = bytearray(_small_pcap())
    bad_start, _ = _record_ends(bytes(data))[10]
    struct.pack_into("<I", data, bad_start + 8, 300_000)  # > 256 KiB: impossible
    path = tmp_path / "huge.pcap"
    path.write_bytes(bytes(data))
    reader, rows = read_all(path)
    ends = _record_ends(_small_pcap())
    kept = {int(r[0]) - 16 for r in rows}
    assert kept == {s for k, (s, _) in enumerate(ends) if k != 10}  # all but the bad one
    assert reader.counters.corrupt_records == 1
    (w,) = [w for w in reader.warnings if w.kind == "corrupt_record"]
    assert w.offset == bad_start and "300000" in w.message


def test_zero_length_packets(tmp_path: Path) -> None:
    recs = [Record(r.ts_ns, 0, b"") if k % 3 == 0 else r for k, r in enumerate(_records())]
    path = write_pcap(tmp_path / "zero.pcap", LT_ETHERNET, recs)
    reader, rows = read_all(path)
    assert len(rows) == N_SMALL
    assert (rows[::3, 3] == S_EMPTY).all() and (rows[::3, 1] == 0).all()
    assert reader.counters.packets == N_SMALL


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_unknown_link_type(tmp_path: Path, fmt: str) -> None:
    if fmt == "pcap":
        path = write_pcap(tmp_path / "x.pcap", 147, _records())  # LINKTYPE_USER0
    else:
        path = tmp_path / "x.pcapng"
        path.write_bytes(
            b"".join(
                [shb(), idb(147)] + [epb(0, r.ts_ns, r.data, r.wirelen, None) for r in _records()]
            )
        )
    reader, rows = read_all(path)
    assert len(rows) == N_SMALL and (rows[:, 3] == S_LINKTYPE).all()
    assert reader.counters.warnings_by_kind["unknown_link_type"] == 1
    assert any("147" in w.message for w in reader.warnings)


def test_garbage_between_pcapng_blocks(tmp_path: Path) -> None:
    data = _small_pcapng()
    ends = _record_ends(data)
    cut = ends[8][1]  # after the 9th packet block
    junk = b"\xde\xad\xbe\xef" * 7 + b"\x01\x02"
    path = tmp_path / "junk.pcapng"
    path.write_bytes(data[:cut] + junk + data[cut:])
    reader, rows = read_all(path)
    assert len(rows) == N_SMALL
    assert reader.counters.corrupt_records == 1
    (w,) = [w for w in reader.warnings if w.kind == "corrupt_record"]
    assert w.offset == cut


def test_truncated_gzip_keeps_the_packets_before_the_damage(tmp_path: Path) -> None:
    raw = _small_pcap()
    packed = gzip.compress(raw)
    path = tmp_path / "cut.pcap.gz"
    path.write_bytes(packed[: len(packed) * 2 // 3])
    reader, rows = read_all(path)
    assert len(rows) > 0  # before the fix, GzipFile lost everything decoded in the failing read
    # Every packet the damaged stream still holds in full is there, with its own offset.
    decoded = gzip.decompress(packed)  # the intact stream, for reference
    ends = _record_ends(decoded)
    assert [int(r[0]) - 16 for r in rows] == [s for s, _ in ends[: len(rows)]]
    assert reader.counters.warnings_by_kind["compressed_stream"] == 1


# -- property tests --------------------------------------------------------------------------------

SETTINGS = settings(
    max_examples=150,
    deadline=3000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


def _check(data: bytes, intact: bytes, first_change: int, tmp_path: Path) -> None:
    path = tmp_path / ("m.pcapng" if intact[:4] == b"\x0a\x0d\x0d\x0a" else "m.pcap")
    path.write_bytes(data)
    header_len = _record_ends(intact)[0][0]  # global header, or SHB + IDB
    with watchdog(20):
        try:
            _, rows = read_all(path)
        except CaptureFormatError:
            # Only acceptable when the file header itself is damaged or gone.
            assert first_change < header_len
            return
    got = {(int(r[0]), int(r[1]), int(r[2])) for r in rows}
    _, ref = read_all_bytes(intact, tmp_path)
    for off, cap, ts, end in ref:
        if end <= first_change:
            assert (off, cap, ts) in got


def read_all_bytes(data: bytes, tmp_path: Path) -> tuple[None, list[tuple[int, int, int, int]]]:
    path = tmp_path / ("r.pcapng" if data[:4] == b"\x0a\x0d\x0d\x0a" else "r.pcap")
    path.write_bytes(data)
    _, rows = read_all(path)
    # Record end = payload offset + caplen + trailing bytes (pcapng block padding and trailer).
    ends = dict(_record_ends(data))
    starts = sorted(ends)
    out = []
    for r in rows:
        start = max(s for s in starts if s < int(r[0]))
        out.append((int(r[0]), int(r[1]), int(r[2]), ends[start]))
    return None, out


@pytest.mark.parametrize("make", [_small_pcap, _small_pcapng], ids=["pcap", "pcapng"])
@SETTINGS
@given(tail=st.binary(min_size=0, max_size=2000))
def test_random_bytes_after_a_valid_header(tmp_path: Path, make: object, tail: bytes) -> None:
    intact = make()  # type: ignore[operator]
    head = intact[: _record_ends(intact)[0][0]]  # global header, or SHB + IDB
    _check(head + tail, intact, len(head), tmp_path)


MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(1, 64)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 64)),
)


@pytest.mark.parametrize("make", [_small_pcap, _small_pcapng], ids=["pcap", "pcapng"])
@SETTINGS
@given(mutations=st.lists(MUTATION, min_size=1, max_size=4), junk=st.randoms())
def test_mutations_keep_everything_before_the_first_change(
    tmp_path: Path, make: object, mutations: list[tuple[str, int, int]], junk: object
) -> None:
    intact: bytes = make()  # type: ignore[operator]
    data = bytearray(intact)
    first = len(intact)
    for kind, where, arg in mutations:
        if not data:
            break
        at = where % len(data)
        first = min(first, at)
        if kind == "flip":
            data[at] ^= arg
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = bytes(junk.randrange(256) for _ in range(arg))  # type: ignore[attr-defined]
        else:
            del data[at : at + arg]
    _check(bytes(data), intact, first, tmp_path)


def test_caplen_over_snaplen_and_wirelen_is_kept_and_reported(tmp_path: Path) -> None:
    """libpcap keeps such records; so do we, with a warning naming the record's offset."""
    frame = bytes(14) + bytes([0x45]) + bytes(19)  # Ethernet + an IPv4 header's worth
    records = [
        struct.pack("<IIII", 1, 0, len(frame), len(frame)) + frame,
        struct.pack("<IIII", 2, 0, len(frame), 20) + frame,  # caplen 34 > wirelen 20
    ]
    data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 30, 1) + b"".join(records)
    path = tmp_path / "lengths.pcap"
    path.write_bytes(data)
    with CaptureReader(path) as reader:
        n = sum(b.n for b in reader)
    assert n == 2
    kinds = {w.kind: w for w in reader.warnings}
    assert kinds["caplen_over_snaplen"].offset == 24  # the first record: 34 > snaplen 30
    assert kinds["caplen_over_wirelen"].offset == 24 + 16 + len(frame)
    assert reader.counters.warnings_by_kind["caplen_over_snaplen"] == 1
