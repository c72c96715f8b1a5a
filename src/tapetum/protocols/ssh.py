"""SSH identification strings (RFC 4253 section 4.2) of both sides → `SshEvent`.

"SSH-protoversion-softwareversion SP comments CR LF". A server may send other lines first;
a few are skipped, then the side is given up. Lines are bounded (RFC: 255 bytes; we allow
more because real servers exceed it, but not without limit).
"""

from __future__ import annotations

from tapetum.protocols._parser import EventSink, Parser, printable
from tapetum.records import FlowRef, SshEndpoint, SshEvent

#: Longest identification (or preceding) line we wait for.
MAX_LINE = 1024
#: Lines other than the identification string tolerated before it.
MAX_OTHER_LINES = 16


def looks_like_ssh(data: bytes) -> bool:
    return data.startswith(b"SSH-")


def parse_banner(line: bytes) -> SshEndpoint:
    """Split "SSH-2.0-OpenSSH_9.6 Ubuntu-3" (without CR LF) into its three parts."""
    text = printable(line[4:])
    proto, _, rest = text.partition("-")
    software, _, comments = rest.partition(" ")
    return SshEndpoint(proto_version=proto, software_version=software, comments=comments or None)


class _Side:
    __slots__ = ("banner", "buf", "finished", "other_lines")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.banner: SshEndpoint | None = None
        self.other_lines = 0
        self.finished = False


class SshParser(Parser):
    name = "ssh"
    __slots__ = ("_client", "_server", "_ts")

    def __init__(self, sink: EventSink, flow: FlowRef, flow_uid: int, max_bytes: int) -> None:
        super().__init__(sink, flow, flow_uid, max_bytes)
        self._client = _Side()
        self._server = _Side()
        self._ts: int | None = None

    def tcp_data(self, from_orig: bool, data: bytes, ts_ns: int) -> None:
        side = self._client if from_orig else self._server
        if side.finished:
            return
        if self._ts is None:
            self._ts = ts_ns
        buf = side.buf
        buf += data
        while not side.finished:
            newline = buf.find(b"\n", 0, MAX_LINE)
            if newline < 0:
                if len(buf) >= MAX_LINE:
                    self._give_up(side, "no SSH identification line within the length limit")
                break
            line = bytes(buf[:newline]).rstrip(b"\r")
            del buf[: newline + 1]
            if line.startswith(b"SSH-"):
                side.banner = parse_banner(line)
                side.finished = True
                side.buf = bytearray()
            else:
                side.other_lines += 1
                if side.other_lines > MAX_OTHER_LINES:
                    self._give_up(side, "too many lines before the SSH identification")
        if self._client.finished and self._server.finished:
            self._emit()

    def _give_up(self, side: _Side, reason: str) -> None:
        side.finished = True
        side.buf = bytearray()
        self.malformed(reason)

    def tcp_gap(self, from_orig: bool) -> None:
        side = self._client if from_orig else self._server
        side.finished = True
        side.buf = bytearray()

    def _emit(self) -> None:
        if self.done:
            return
        self.done = True
        client, server = self._client.banner, self._server.banner
        if client is None and server is None:
            return
        self.sink.emit(
            "ssh",
            SshEvent(
                ts_ns=self._ts if self._ts is not None else 0,
                flow=self.flow,
                client=client,
                server=server,
            ),
        )

    def end(self) -> None:
        self._emit()
