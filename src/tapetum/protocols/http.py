"""HTTP/1.x requests and responses → `HttpEvent`, one per request, paired FIFO per flow.

Each direction is a small state machine: header block, then a body that is skipped without
being buffered (Content-Length, chunked, or until the connection closes). Header blocks are
limited to `MAX_HEADER_BYTES`; a direction that stops looking like HTTP is given up (counted as
malformed) while the other direction goes on. Responses with status 1xx (except 101) are
interim and do not consume a request. After 101 Switching Protocols or a successful CONNECT the
flow is a tunnel and parsing ends.
"""

from __future__ import annotations

import re
from collections import deque

from tapetum.protocols._parser import EventSink, MalformedError, Parser, printable
from tapetum.records import FlowRef, HttpEvent

#: Request methods that identify an HTTP flow from its first bytes.
METHODS = (b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"CONNECT", b"PATCH", b"TRACE")
REQUEST_PREFIXES = tuple(m + b" " for m in METHODS)
RESPONSE_PREFIX = b"HTTP/1."
#: Largest header block read; a larger one ends parsing of that direction.
MAX_HEADER_BYTES = 16 * 1024
#: Requests waiting for their response; beyond this the oldest is emitted unanswered.
MAX_PENDING_REQUESTS = 100
#: Longest chunk-size or trailer line.
MAX_LINE = 1024

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LEADING_NEWLINES = re.compile(rb"[\r\n]*")
# After detection, any token-like method is accepted (WebDAV's PROPFIND and friends).
_METHOD = re.compile(rb"[A-Z][A-Z0-9_-]{1,23}\Z")
_WANTED = frozenset(
    (
        b"host",
        b"user-agent",
        b"referer",
        b"authorization",
        b"content-length",
        b"content-type",
        b"transfer-encoding",
    )
)

_HEADERS, _BODY, _CHUNK_DATA, _CHUNK_SIZE, _TRAILERS, _UNTIL_CLOSE = range(6)


def looks_like_request(data: bytes) -> bool:
    return data.startswith(REQUEST_PREFIXES)


def looks_like_response(data: bytes) -> bool:
    return data.startswith(RESPONSE_PREFIX)


def _headers(lines: list[bytes]) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] = {}
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep:
            continue  # tolerate garbage lines
        key = name.strip().lower()
        if key in _WANTED and key not in found:
            found[key] = value.strip()
    return found


def _content_length(headers: dict[bytes, bytes]) -> int | None:
    raw = headers.get(b"content-length")
    if raw is None or not raw.isdigit() or len(raw) > 18:
        return None
    return int(raw)


class _Request:
    __slots__ = (
        "authorization_basic",
        "host",
        "method",
        "referer",
        "ts_ns",
        "uri",
        "user_agent",
        "version",
    )

    def __init__(
        self,
        ts_ns: int,
        method: str,
        uri: str,
        version: str | None,
        headers: dict[bytes, bytes],
    ) -> None:
        self.ts_ns = ts_ns
        self.method = method
        self.uri = uri
        self.version = version
        host = headers.get(b"host")
        agent = headers.get(b"user-agent")
        referer = headers.get(b"referer")
        self.host = printable(host) if host is not None else None
        self.user_agent = printable(agent) if agent is not None else None
        self.referer = printable(referer) if referer is not None else None
        auth = headers.get(b"authorization", b"")
        self.authorization_basic = auth[:6].lower() == b"basic "


class _Side:
    __slots__ = ("body_left", "buf", "mode", "stopped", "ts_ns")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.mode = _HEADERS
        self.body_left = 0
        self.stopped = False
        #: Time of the segment where the next message starts; None until it arrives.
        self.ts_ns: int | None = None


class HttpParser(Parser):
    name = "http"
    __slots__ = ("_client", "_header_limit", "_orig_is_client", "_requests", "_server")

    def __init__(self, sink: EventSink, flow: FlowRef, flow_uid: int, max_bytes: int) -> None:
        super().__init__(sink, flow, flow_uid, max_bytes)
        self._client = _Side()
        self._server = _Side()
        self._requests: deque[_Request] = deque()
        self._header_limit = min(MAX_HEADER_BYTES, max_bytes)
        self._orig_is_client: bool | None = None

    def tcp_data(self, from_orig: bool, data: bytes, ts_ns: int) -> None:
        if self._orig_is_client is None:
            # The client is the side that sends requests: a flow whose first packet seen is
            # the server's (capture started late) is still read right.
            self._orig_is_client = from_orig != data.startswith(b"HTTP/")
        from_client = from_orig == self._orig_is_client
        side = self._client if from_client else self._server
        if side.stopped:
            return
        if side.ts_ns is None:
            side.ts_ns = ts_ns
        buf = side.buf
        # Where this segment's bytes start: a header end can only be found from just before
        # there (what came before was searched already), so a header block that arrives a
        # byte at a time costs linear, not quadratic, time.
        fresh = len(buf) - 3
        buf += data
        pos = 0
        size = len(buf)
        try:
            while pos < size and not side.stopped:
                mode = side.mode
                if mode in (_BODY, _CHUNK_DATA):
                    # Skipped by count, never buffered beyond this segment.
                    take = min(side.body_left, size - pos)
                    pos += take
                    side.body_left -= take
                    if side.body_left == 0:
                        if mode == _BODY:
                            side.mode = _HEADERS
                            side.ts_ns = ts_ns
                        else:
                            side.mode = _CHUNK_SIZE
                    continue
                if mode == _UNTIL_CLOSE:
                    pos = size
                    break
                if mode == _HEADERS:
                    skipped = _LEADING_NEWLINES.match(buf, pos)
                    if skipped is not None:
                        pos = skipped.end()
                    if pos >= size:
                        side.ts_ns = None
                        break
                    end = _HEAD_END.search(buf, max(pos, fresh))
                    if end is None:
                        self._check_incomplete_head(side, from_client, bytes(buf[pos : pos + 26]))
                        if size - pos > self._header_limit:
                            self._stop(side, "HTTP header block exceeds the byte limit")
                        break
                    head = bytes(buf[pos : end.start()])
                    pos = end.end()
                    if from_client:
                        self._request(side, head)
                    else:
                        self._response(side, head)
                    if side.mode == _HEADERS:
                        side.ts_ns = ts_ns
                    continue
                # _CHUNK_SIZE and _TRAILERS are line oriented.
                newline = buf.find(b"\n", pos, pos + MAX_LINE)
                if newline < 0:
                    if size - pos >= MAX_LINE:
                        self._stop(side, "chunk-size or trailer line too long")
                    break
                line = bytes(buf[pos:newline]).strip()
                pos = newline + 1
                if mode == _CHUNK_SIZE:
                    size_text = line.split(b";", 1)[0].strip()
                    try:
                        chunk = int(size_text, 16)
                    except ValueError:
                        raise MalformedError(f"bad chunk size {size_text[:20]!r}") from None
                    if chunk < 0:
                        raise MalformedError("negative chunk size")
                    if chunk == 0:
                        side.mode = _TRAILERS
                    else:
                        side.mode = _CHUNK_DATA
                        side.body_left = chunk + 2  # the data and its CRLF
                elif not line:  # _TRAILERS: an empty line ends the message
                    side.mode = _HEADERS
                    side.ts_ns = ts_ns
        except MalformedError as exc:
            self._stop(side, str(exc))
        if side.mode == _HEADERS and pos >= size:
            side.ts_ns = None  # the next message starts with the next segment
        if side.stopped:
            side.buf = bytearray()
        else:
            del buf[:pos]

    def _check_incomplete_head(self, side: _Side, from_client: bool, start: bytes) -> None:
        # Give up early on a direction that plainly is not HTTP any more, rather than
        # buffering up to the header limit.
        if len(start) < 8:
            return
        if from_client:
            method, space, _ = start.partition(b" ")
            if not (0x41 <= start[0] <= 0x5A) or (space and not _METHOD.match(method)):
                raise MalformedError(f"not an HTTP request: {start[:16]!r}")
        elif not start.startswith(b"HTTP/"):
            raise MalformedError(f"not an HTTP response: {start[:16]!r}")

    def _stop(self, side: _Side, reason: str) -> None:
        side.stopped = True
        self.malformed(reason)

    def _request(self, side: _Side, head: bytes) -> None:
        lines = head.replace(b"\r\n", b"\n").split(b"\n")
        parts = lines[0].split(b" ")
        method = parts[0]
        if not _METHOD.match(method) or len(parts) < 2:
            raise MalformedError(f"not an HTTP request line: {lines[0][:40]!r}")
        if len(parts) >= 3 and parts[-1].startswith(b"HTTP/"):
            version: str | None = printable(parts[-1])
            uri = b" ".join(parts[1:-1])
        else:  # HTTP/0.9 style, or a URI with spaces and no version
            version = None
            uri = b" ".join(parts[1:])
        headers = _headers(lines[1:])
        request = _Request(
            side.ts_ns if side.ts_ns is not None else 0,
            method.decode("ascii"),
            printable(uri),
            version,
            headers,
        )
        self._requests.append(request)
        if len(self._requests) > MAX_PENDING_REQUESTS:
            self._emit(self._requests.popleft(), None, None, None)
            self.sink.bump("http_pending_overflow")
        self._body(side, headers, has_body=True, until_close=False)

    def _response(self, side: _Side, head: bytes) -> None:
        lines = head.replace(b"\r\n", b"\n").split(b"\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise MalformedError(f"not an HTTP status line: {lines[0][:40]!r}")
        code = parts[1]
        if len(code) != 3 or not code.isdigit():
            raise MalformedError(f"bad HTTP status code {code[:10]!r}")
        status = int(code)
        headers = _headers(lines[1:])
        if 100 <= status < 200 and status != 101:
            return  # interim response: no body, the request is still waiting
        request = self._requests.popleft() if self._requests else None
        if request is None:
            self.sink.bump("http_response_without_request")
        else:
            content_type = headers.get(b"content-type")
            self._emit(
                request,
                status,
                _content_length(headers),
                printable(content_type) if content_type is not None else None,
            )
        method = request.method if request is not None else ""
        if status == 101 or (method == "CONNECT" and 200 <= status < 300):
            # The connection now carries another protocol.
            self._flush()
            self.done = True
            side.stopped = True
            return
        has_body = method != "HEAD" and status not in (204, 304)
        self._body(side, headers, has_body=has_body, until_close=True)

    @staticmethod
    def _body(side: _Side, headers: dict[bytes, bytes], has_body: bool, until_close: bool) -> None:
        """Set the mode for what follows a header block (RFC 9112 section 6.3)."""
        side.mode = _HEADERS
        if not has_body:
            return
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            side.mode = _CHUNK_SIZE
            return
        length = _content_length(headers)
        if length is not None:
            if length:
                side.mode = _BODY
                side.body_left = length
        elif until_close:  # a response without length runs to the end of the connection
            side.mode = _UNTIL_CLOSE

    def _emit(
        self,
        request: _Request,
        status: int | None,
        length: int | None,
        content_type: str | None,
    ) -> None:
        self.sink.emit(
            "http",
            HttpEvent(
                ts_ns=request.ts_ns,
                flow=self.flow,
                http_method=request.method,
                hostname=request.host,
                url=request.uri,
                protocol=request.version,
                http_user_agent=request.user_agent,
                status=status,
                length=length,
                http_content_type=content_type,
                http_refer=request.referer,
                authorization_basic=request.authorization_basic,
            ),
        )

    def _flush(self) -> None:
        while self._requests:
            self._emit(self._requests.popleft(), None, None, None)

    def tcp_gap(self, from_orig: bool) -> None:
        side = self._client if from_orig == (self._orig_is_client is not False) else self._server
        side.stopped = True
        side.buf = bytearray()

    def end(self) -> None:
        self._flush()
