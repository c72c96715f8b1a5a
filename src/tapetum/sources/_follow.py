"""Follow growing log files by inode: complete lines only, across renames, rotation and truncation.

Shared by the log sources' follow modes (Zeek folders, Suricata EVE files, auth logs).

API
---
``Tailer(targets, accept=..., from_start=True, linger_s=5.0, max_line_bytes=1 MiB)``
    `targets` are files and/or folders. A file target is followed by its name (a new file
    created under that name after a rotation is picked up from its first byte). A folder target
    follows every regular file in it whose name `accept(name)` allows.
``Tailer.poll(max_bytes=4 MiB) -> list[Line]``
    Complete new lines since the last call (without the line break), oldest file first.
    Never blocks. Call it every ~100-250 ms.
``Tailer.close()``
    Closes every file; a last line still without its line break is returned by
    ``Tailer.drain_partial()`` (call it before close when the writer is known to be done).
``Tailer.counters`` (TailCounters) and ``Tailer.warnings`` (InputWarning, bounded).

``Line(path, key, lineno, offset, data)``: `key` is the file's (device, inode) — a new inode
under the same name is a new file (parsers keep per-file state such as Zeek's #fields headers by
key); `lineno` counts from 1 in that file; `offset` is the line's byte offset in it.

Semantics
---------
- Files are tracked by (device, inode), never by name: a file renamed away (Zeek's and
  Suricata's rotation: close, rename, create anew) keeps its offset, so nothing is re-read; its
  remaining lines are read through the still-open descriptor, and it is closed once it has not
  grown for `linger_s` seconds (a writer may append until it reopens on SIGHUP). The file then
  created under the old name is new and read from byte 0.
- A name that comes to hold a file smaller than the offset already read (copy-truncate
  rotation) is read again from byte 0 (`counters.truncations`).
- A partially written last line is held until its line break arrives; a line longer than
  `max_line_bytes` is dropped and counted (`counters.long_lines`) — bounded memory.
- Open descriptors are bounded by the files the targets name plus rotated ones lingering.
- Wall-clock time is used only to decide when a rotated file is finished; record times come
  from the data.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from tapetum.errors import InputWarning

if TYPE_CHECKING:
    from tapetum.sources.base import RecordBatch

MAX_WARNINGS = 50


class Line(NamedTuple):
    path: str
    key: tuple[int, int]
    lineno: int
    offset: int
    data: bytes


@dataclass(slots=True)
class TailCounters:
    lines: int = 0
    bytes: int = 0
    files_opened: int = 0
    files_closed: int = 0
    #: Files renamed away while followed (rotation) and read to their end.
    rotations: int = 0
    #: Files that shrank under their name (copy-truncate): read again from the start.
    truncations: int = 0
    long_lines: int = 0
    #: A last line without a line break, handed out by `drain_partial` at the end.
    partial_lines: int = 0


@dataclass(slots=True)
class _File:
    key: tuple[int, int]
    path: str
    fh: BinaryIO
    offset: int = 0
    lineno: int = 0
    partial: bytearray = field(default_factory=bytearray)
    skipping: bool = False  # inside an overlong line: drop bytes until the next line break
    gone: bool = False
    last_growth: float = 0.0


class Tailer:
    def __init__(
        self,
        targets: Sequence[str],
        *,
        accept: Callable[[str], bool] = lambda name: True,
        from_start: bool = True,
        linger_s: float = 5.0,
        max_line_bytes: int = 1 << 20,
    ) -> None:
        self.targets = [os.fspath(t) for t in targets]
        self.accept = accept
        self.linger_s = linger_s
        self.max_line_bytes = max_line_bytes
        self.counters = TailCounters()
        self.warnings: list[InputWarning] = []
        self._files: dict[tuple[int, int], _File] = {}
        self._first = True
        self._from_start = from_start

    # -- public -------------------------------------------------------------------------------

    def poll(self, max_bytes: int = 4 << 20) -> list[Line]:
        seen = self._discover()
        now = time.monotonic()
        out: list[Line] = []
        budget = max_bytes
        for f in sorted(self._files.values(), key=lambda f: (not f.gone, f.path)):
            if f.key not in seen and not f.gone:
                f.gone = True
                self.counters.rotations += 1
            got = self._read(f, out, budget)
            budget = max(budget - got, 1 << 16)
            if got:
                f.last_growth = now
            elif f.gone and now - f.last_growth >= self.linger_s:
                self._close(f)
        self.counters.lines += len(out)
        return out

    def drain_partial(self) -> list[Line]:
        """Last lines without a line break (the writer stopped mid-line): hand them out once."""
        out: list[Line] = []
        for f in self._files.values():
            if f.partial and not f.skipping:
                f.lineno += 1
                out.append(
                    Line(f.path, f.key, f.lineno, f.offset - len(f.partial), bytes(f.partial))
                )
                self.counters.partial_lines += 1
            f.partial.clear()
        return out

    def close(self) -> None:
        for f in list(self._files.values()):
            self._close(f)

    def __enter__(self) -> Tailer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------

    def _names(self) -> list[str]:
        names: list[str] = []
        for t in self.targets:
            if os.path.isdir(t):
                try:
                    entries = sorted(os.listdir(t))
                except OSError:
                    continue
                names += [os.path.join(t, e) for e in entries if self.accept(e)]
            else:
                names.append(t)
        return names

    def _discover(self) -> set[tuple[int, int]]:
        """Stat every followed name; open files not seen before. Returns the keys present."""
        seen: set[tuple[int, int]] = set()
        for path in self._names():
            try:
                st = os.stat(path)
            except OSError:
                continue  # between a rotation's rename and the new file's creation
            if not _is_regular(st.st_mode):
                continue
            key = (st.st_dev, st.st_ino)
            seen.add(key)
            f = self._files.get(key)
            if f is not None:
                f.path = path
                if st.st_size < f.offset:  # copy-truncate: the same inode started over
                    self.counters.truncations += 1
                    f.offset = 0
                    f.lineno = 0
                    f.partial.clear()
                    f.skipping = False
                    f.fh.seek(0)
                continue
            try:
                fh = open(path, "rb")  # noqa: SIM115 - kept open across polls on purpose
            except OSError as exc:
                self._warn(path, None, "open", f"cannot open: {exc.strerror}")
                continue
            # The descriptor, not the name, is what we read from now on: confirm it is the file
            # we stat'ed (a rename may have happened in between).
            fst = os.fstat(fh.fileno())
            key = (fst.st_dev, fst.st_ino)
            if key in self._files:
                fh.close()
                continue
            f = _File(key=key, path=path, fh=fh, last_growth=time.monotonic())
            if self._first and not self._from_start:
                f.offset = fst.st_size
                fh.seek(f.offset)
            self._files[key] = f
            seen.add(key)
            self.counters.files_opened += 1
        self._first = False
        return seen

    def _read(self, f: _File, out: list[Line], budget: int) -> int:
        try:
            data = f.fh.read(budget)
        except OSError as exc:
            self._warn(f.path, f.offset, "read", f"read error: {exc.strerror}")
            return 0
        if not data:
            return 0
        base = f.offset - len(f.partial)
        f.offset += len(data)
        self.counters.bytes += len(data)
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            if f.skipping:
                f.skipping = False
            else:
                chunk = bytes(f.partial) + data[start:nl] if f.partial else data[start:nl]
                f.lineno += 1
                if len(chunk) > self.max_line_bytes:
                    self._long(f, base)
                else:
                    out.append(Line(f.path, f.key, f.lineno, base, chunk.removesuffix(b"\r")))
            f.partial.clear()
            base = f.offset - len(data) + nl + 1
            start = nl + 1
        rest = data[start:]
        if rest and not f.skipping:
            f.partial += rest
            if len(f.partial) > self.max_line_bytes:
                f.lineno += 1
                self._long(f, base)
                f.partial.clear()
                f.skipping = True
        return len(data)

    def _long(self, f: _File, offset: int) -> None:
        self.counters.long_lines += 1
        self._warn(
            f.path,
            offset,
            "long_line",
            f"line {f.lineno} longer than {self.max_line_bytes} bytes: dropped",
        )

    def _close(self, f: _File) -> None:
        if f.partial and f.gone:
            self._warn(
                f.path,
                f.offset - len(f.partial),
                "partial_line",
                f"rotated file ended mid-line (line {f.lineno + 1}): "
                f"{len(f.partial)} bytes without a line break dropped",
            )
            self.counters.partial_lines += 1
        f.fh.close()
        self._files.pop(f.key, None)
        self.counters.files_closed += 1

    def _warn(self, path: str, offset: int | None, kind: str, message: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(InputWarning(path, offset, kind, message))


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


class LineFollower:
    """What a followed log source shares: `poll` hands complete new lines to `_batch`; `finish`
    also hands over a last line without its line break, then closes. Subclasses set `tailer` and
    define `_batch(lines)` (pairs of a line and "is a last line without its line break") and
    `close()`."""

    tailer: Tailer

    def _batch(self, lines: list[tuple[Line, bool]]) -> RecordBatch | None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def poll(self) -> RecordBatch | None:
        return self._batch([(ln, False) for ln in self.tailer.poll()])

    def finish(self) -> RecordBatch | None:
        lines = [(ln, False) for ln in self.tailer.poll()]
        lines += [(ln, True) for ln in self.tailer.drain_partial()]
        self.close()
        return self._batch(lines)
