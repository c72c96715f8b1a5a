"""Realistic synthetic packet captures, deterministic for a given seed.

A *traffic function* produces the packets of one session in time order::

    def my_protocol(ctx: Ctx, client: Host, server: Host, ...) -> Iterator[Packet]:
        conn = TcpConnection(ctx, client, server, 4242)
        yield from conn.open()
        yield from conn.send(b"hello", from_client=True)
        yield from conn.send(b"world", from_client=False, delay=0.002)
        yield from conn.close()

`ctx.t` is the session's start (ns since the epoch) and `ctx.rng` its own random generator, so a
session's packets depend only on the seed and its position, not on what runs beside it.
`CaptureBuilder.add(at, my_protocol, client, server)` schedules it; `merge_sessions` interleaves any
number of sessions in timestamp order while holding only one pending packet per active session,
which is how the benchmark generator streams millions of packets.

Timing model: the capture point sits on a link; each `Host` has a one-way latency to it. A reply
appears `2 * latency` of the replying host after the packet it answers, plus processing time.

What is real and what is not: TCP/IP headers, checksums, sequence numbers, options and timing are
consistent (tshark reports no analysis warnings); TLS handshakes are real OpenSSL output (see
`tapetum.testing.tls`); DNS messages are real; SSH banners and KEXINIT are real, the rest of SSH
and all TLS application data are random bytes of realistic sizes.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import heapq
import random
import struct
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Concatenate, Literal, ParamSpec

import dpkt

from tapetum.testing import tls as tls_handshakes
from tapetum.testing.capture import CaptureWriter, Format, Interface, write_capture
from tapetum.testing.wire import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    Host,
    OsProfile,
    Packet,
    arp_frame,
    icmp_echo_frame,
    tcp_frame,
    udp_frames,
)

P = ParamSpec("P")

NS_PER_S = 1_000_000_000
DEFAULT_START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)

#: Linux delayed-ACK timeout: a lone segment is acknowledged this long after it arrives.
DELAYED_ACK_NS = 40_000_000
#: Congestion window cap in segments (~6 MB at 1448 bytes, Linux's default tcp_wmem maximum).
CWND_MAX = 4000


def ns(seconds: float) -> int:
    return round(seconds * NS_PER_S)


class Noise:
    """A pool of seeded random bytes; slices of it stand in for ciphertext and compressed data."""

    def __init__(self, seed: int, size: int = 1 << 20) -> None:
        self._pool = random.Random(f"noise:{seed}").randbytes(size)

    def take(self, rng: random.Random, n: int) -> bytes:
        pool = self._pool
        if n > len(pool):
            return (pool * (n // len(pool) + 1))[:n]
        start = rng.randrange(len(pool) - n + 1)
        return pool[start : start + n]


class Ctx:
    """What a traffic function receives: start time, its own RNG, shared helpers."""

    __slots__ = ("noise", "rng", "t", "valid_at")

    def __init__(self, t: int, rng: random.Random, noise: Noise, valid_at: dt.date) -> None:
        self.t = t
        self.rng = rng
        self.noise = noise
        #: The capture's calendar date: certificates are valid (or expired) relative to it.
        self.valid_at = valid_at

    def child(self, t: int | None = None) -> Ctx:
        """A context for a sub-session, with an RNG derived from this one."""
        return Ctx(
            self.t if t is None else t,
            random.Random(self.rng.getrandbits(64)),
            self.noise,
            self.valid_at,
        )

    def lognormal(self, median: float, sigma: float, low: float, high: float) -> int:
        """A heavy-tailed size (bytes, counts) clamped to [low, high]."""
        return int(min(high, max(low, self.rng.lognormvariate(0.0, sigma) * median)))


# --------------------------------------------------------------------------------------------
# TCP


class _End:
    """One side of a TCP connection."""

    __slots__ = ("cwnd", "host", "ip_id", "peer_ts", "port", "rcv", "seq", "ts_base", "window")

    def __init__(self, host: Host, port: int, rng: random.Random) -> None:
        self.host = host
        self.port = port
        self.seq = rng.getrandbits(32)
        self.rcv = 0
        # Linux and Windows both start a connection's IP ids at a random value and count up.
        self.ip_id = rng.getrandbits(16)
        self.ts_base = rng.getrandbits(32)
        self.peer_ts = 0
        self.window = host.os.established_window
        self.cwnd = 10  # RFC 6928 initial window

    def tsval(self, t: int) -> int:
        return (self.ts_base + t // 1_000_000) & 0xFFFFFFFF  # 1 kHz timestamp clock, as Linux


def _syn_options(os: OsProfile, mss: int, timestamps: bytes | None) -> bytes:
    """SYN / SYN-ACK options in each stack's own order (p0f signatures rely on the order)."""
    mss_option = struct.pack("!BBH", 2, 4, mss)
    scale = bytes((3, 3, os.window_scale))
    if os.name == "windows":
        tail = b"\x04\x02" + timestamps if timestamps else b"\x01\x01\x04\x02"
        return mss_option + b"\x01" + scale + tail
    if os.name == "macos":
        middle = timestamps + b"\x04\x02\x00\x00" if timestamps else b"\x04\x02"
        return mss_option + b"\x01" + scale + b"\x01\x01" + middle
    if timestamps:
        return mss_option + b"\x04\x02" + timestamps + b"\x01" + scale
    return mss_option + b"\x01\x01\x04\x02\x01" + scale


def _payload_segments(data: bytes | Iterable[bytes], mss: int) -> Iterator[tuple[bytes, bool]]:
    """Cut a byte stream into MSS-sized segments; the flag marks the last one (PSH)."""
    if isinstance(data, bytes):
        for offset in range(0, len(data), mss):
            yield data[offset : offset + mss], offset + mss >= len(data)
        return
    buffer = b""
    for piece in data:
        buffer += piece
        offset = 0
        while len(buffer) - offset > mss:
            yield buffer[offset : offset + mss], False
            offset += mss
        buffer = buffer[offset:]
    if buffer:
        yield buffer, True


class TcpConnection:
    """A TCP connection with consistent sequence numbers, options, windows and timing.

    Each method yields the packets of one step in time order and advances the connection's
    clock; `send` models slow start, ACK clocking, delayed ACKs (every second segment, or 40 ms
    after a lone one unless the reply carries the ACK) and the link rate.
    """

    def __init__(
        self,
        ctx: Ctx,
        client: Host,
        server: Host,
        port: int,
        *,
        sport: int = 0,
        rate_mbps: float = 0.0,
    ) -> None:
        rng = ctx.rng
        self.rng = rng
        self.client = _End(client, sport or rng.randint(*client.os.ephemeral_ports), rng)
        self.server = _End(server, port, rng)
        self.timestamps = client.os.timestamps and server.os.timestamps
        self.syn_mss = 1460 if client.version == 4 else 1440
        self.mss = self.syn_mss - 12 if self.timestamps else self.syn_mss
        if not rate_mbps:
            local = max(client.latency_ms, server.latency_ms) < 1.0
            rate_mbps = rng.uniform(500, 940) if local else rng.uniform(15, 250)
        # Time between back-to-back full-size segments on the bottleneck link.
        self.segment_gap_ns = int((self.mss + 78) * 8 * NS_PER_S / (rate_mbps * 1e6))
        self.t = ctx.t
        self._last: _End | None = None
        self._pending_ack: tuple[int, _End] | None = None

    # -- internals ---------------------------------------------------------------------------

    def _peer(self, end: _End) -> _End:
        return self.server if end is self.client else self.client

    def _turnaround(self, end: _End) -> int:
        """Delay between a packet passing the capture point and `end`'s reaction passing it."""
        return int(2 * end.host.latency_ns * self.rng.uniform(1.0, 1.1)) + self.rng.randint(
            15_000, 80_000
        )

    def _start(self, by: _End, delay_s: float) -> int:
        t = self.t + ns(delay_s)
        if self._last is not None and self._last is not by:
            t += self._turnaround(by)
        return t

    def _emit(
        self,
        t: int,
        src: _End,
        dst: _End,
        flags: int,
        payload: bytes = b"",
        *,
        options: bytes | None = None,
        seq: int | None = None,
        ack: int | None = None,
        window: int | None = None,
        echo: bool = True,
    ) -> Packet:
        if options is None:
            options = b""
            if self.timestamps:
                tsval = src.tsval(t)
                options = struct.pack("!BBBBII", 1, 1, 8, 10, tsval, src.peer_ts)
                if echo:
                    dst.peer_ts = tsval
        frame = tcp_frame(
            src.host,
            dst.host,
            src.port,
            dst.port,
            src.seq if seq is None else seq,
            (src.rcv if flags & ACK else 0) if ack is None else ack,
            flags,
            src.window if window is None else window,
            options,
            payload,
            ip_id=src.ip_id,
        )
        src.ip_id = (src.ip_id + 1) & 0xFFFF
        if seq is None:
            src.seq = (src.seq + len(payload) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
            dst.rcv = src.seq
        if t >= self.t:
            self.t = t
            self._last = src
        return Packet(t, frame, src.host.interface or dst.host.interface)

    def _syn(self, t: int) -> Packet:
        end = self.client
        timestamps = None
        if end.host.os.timestamps:
            timestamps = struct.pack("!BBII", 8, 10, end.tsval(t), 0)
            self.server.peer_ts = end.tsval(t)
        options = _syn_options(end.host.os, self.syn_mss, timestamps)
        return self._emit(t, end, self.server, SYN, options=options, window=end.host.os.syn_window)

    def _settle(self, t_next: int) -> Iterator[Packet]:
        """Send an owed delayed ACK if it falls due before the next packet."""
        if self._pending_ack is None:
            return
        due, owner = self._pending_ack
        self._pending_ack = None
        if due < t_next:
            yield self._emit(due, owner, self._peer(owner), ACK)

    # -- steps --------------------------------------------------------------------------------

    def open(self, *, delay: float = 0.0) -> Iterator[Packet]:
        """Three-way handshake."""
        client, server = self.client, self.server
        t = self.t + ns(delay)
        yield self._syn(t)
        t += self._turnaround(server)
        timestamps = None
        if self.timestamps:
            timestamps = struct.pack("!BBII", 8, 10, server.tsval(t), server.peer_ts)
            client.peer_ts = server.tsval(t)
        options = _syn_options(server.host.os, self.syn_mss, timestamps)
        yield self._emit(
            t, server, client, SYN | ACK, options=options, window=server.host.os.syn_window
        )
        t += self._turnaround(client)
        yield self._emit(t, client, server, ACK)

    def send(
        self,
        data: bytes | Iterable[bytes],
        *,
        from_client: bool,
        delay: float = 0.0,
    ) -> Iterator[Packet]:
        """Send `data` from one side after `delay` seconds of think or processing time."""
        sender, receiver = (self.client, self.server) if from_client else (self.server, self.client)
        t = self._start(sender, delay)
        if t - self.t > 200_000_000:
            sender.cwnd = 10  # slow start restart after idle (RFC 2861, Linux default)
        yield from self._settle(t)
        acks: list[Packet] = []  # the receiver's ACKs, pending in time order
        ack_seen: list[int] = []  # per segment: when its ACK passed the capture point
        sender_turnaround = 2 * sender.host.latency_ns
        count = 0
        last_segment_t = t
        initial = sender.cwnd
        scale = receiver.host.os.window_scale
        for chunk, last in _payload_segments(data, self.mss):
            # In flight is limited by the receiver's advertised window and by the congestion
            # window: in slow start each ACKed segment lets two more go, so segment n waits for
            # the ACK of segment (n - initial) / 2.
            limit = max(2, min(CWND_MAX, (receiver.window << scale) // self.mss))
            if count >= min(initial, limit):
                slow_start = (count - initial) // 2 if count >= initial else 0
                needed = max(slow_start, count - limit)
                t = max(t, ack_seen[needed] + sender_turnaround)
            while acks and acks[0].ts_ns <= t:
                yield heapq.heappop(acks)
            yield self._emit(t, sender, receiver, ACK | PSH if last else ACK, chunk)
            last_segment_t = t
            count += 1
            if count % 2 == 0:
                # Receive-buffer autotuning: the advertised window grows as data flows.
                receiver.window = min(
                    receiver.host.os.max_window, receiver.window + (2 * self.mss >> scale) + 1
                )
                t_ack = t + self._turnaround(receiver)
                heapq.heappush(acks, self._emit(t_ack, receiver, sender, ACK, echo=False))
                ack_seen += (t_ack, t_ack)
            t += self.segment_gap_ns
        sender.cwnd = min(initial + len(ack_seen), CWND_MAX)
        while acks:
            yield heapq.heappop(acks)
        if ack_seen and self.timestamps:
            sender.peer_ts = receiver.tsval(ack_seen[-1])
        if count % 2:
            due = last_segment_t + 2 * receiver.host.latency_ns + DELAYED_ACK_NS
            self._pending_ack = (due, receiver)

    def close(self, *, by_client: bool = True, delay: float = 0.0) -> Iterator[Packet]:
        """FIN, FIN-ACK, ACK."""
        closer = self.client if by_client else self.server
        other = self._peer(closer)
        t = self._start(closer, delay)
        yield from self._settle(t)
        yield self._emit(t, closer, other, FIN | ACK)
        yield self._emit(self.t + self._turnaround(other), other, closer, FIN | ACK)
        yield self._emit(self.t + self._turnaround(closer), closer, other, ACK)

    def reset(self, *, by_client: bool = True, delay: float = 0.0) -> Iterator[Packet]:
        """Abort with RST-ACK (e.g. a browser tab closed mid-transfer)."""
        sender = self.client if by_client else self.server
        t = self._start(sender, delay)
        yield from self._settle(t)
        yield self._emit(t, sender, self._peer(sender), RST | ACK)

    def unanswered(self, *, retries: int = 2) -> Iterator[Packet]:
        """A SYN nobody answers, retransmitted with Linux's exponential backoff (1 s, 2 s, ...)."""
        t = self.t
        isn = self.client.seq
        for attempt in range(retries + 1):
            self.client.seq = isn
            yield self._syn(t)
            t += NS_PER_S << attempt

    def refused(self) -> Iterator[Packet]:
        """SYN to a closed port, answered by RST-ACK."""
        yield self._syn(self.t)
        t = self.t + self._turnaround(self.server)
        yield self._emit(t, self.server, self.client, RST | ACK, options=b"", seq=0, window=0)

    def syn_reset(self) -> Iterator[Packet]:
        """SYN, SYN-ACK, then the client resets instead of completing (half-open probe)."""
        handshake = self.open()
        yield next(handshake)
        yield next(handshake)
        t = self.t + self._turnaround(self.client)
        yield self._emit(t, self.client, self.server, RST, options=b"", ack=0, window=0)


# --------------------------------------------------------------------------------------------
# Application content

USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/132.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:135.0) Gecko/20100101 Firefox/135.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.3 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/132.0.0.0 Safari/537.36 Edg/132.0.0.0",
    "curl/7.88.1",
    "Debian APT-HTTP/1.3 (2.6.1)",
)
_PATHS = (
    "/",
    "/index.html",
    "/news/",
    "/static/css/main.4f2a1c.css",
    "/static/js/app.93b1e7.js",
    "/images/logo.png",
    "/favicon.ico",
    "/api/v1/status",
    "/docs/getting-started",
    "/debian/dists/bookworm/InRelease",
    "/search?q=quarterly+report",
    "/assets/fonts/inter-var.woff2",
)
_CONTENT_TYPES = {
    ".css": "text/css",
    ".js": "application/javascript",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    "/api": "application/json",
    "Release": "text/plain",
}
_SERVERS = ("nginx/1.22.1", "Apache/2.4.62 (Debian)", "cloudflare", "Microsoft-IIS/10.0", "envoy")
# One string keeps the list compact; split below.
_WORDS_TEXT = (
    "the network report quarterly sales office meeting project update team customer service "
    "product release notes security policy calendar invoice travel budget weather local sports "
    "market research analysis community support documentation download contact about privacy"
)
_WORDS = _WORDS_TEXT.split(" ")
_TEXT = " ".join(random.Random(7).choice(_WORDS) for _ in range(40000)).encode()


def _text(ctx: Ctx, n: int) -> bytes:
    if n <= 0:
        return b""
    start = ctx.rng.randrange(max(1, len(_TEXT) - n))
    body = _TEXT[start : start + n]
    return body if len(body) == n else (body * (n // max(1, len(body)) + 1))[:n]


def http_request(
    ctx: Ctx, host: str, *, path: str = "", method: str = "GET", agent: str = "", body: bytes = b""
) -> bytes:
    """An HTTP/1.1 request with the header set the user agent really sends."""
    rng = ctx.rng
    agent = agent or rng.choice(USER_AGENTS)
    path = path or rng.choice(_PATHS)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"User-Agent: {agent}"]
    if agent.startswith("curl") or agent.startswith("Debian"):
        lines.append("Accept: */*")
    else:
        lines += [
            "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,"
            "image/avif,image/webp,*/*;q=0.8",
            "Accept-Language: en-US,en;q=0.9",
            "Accept-Encoding: gzip, deflate",
            "Connection: keep-alive",
        ]
        if rng.random() < 0.5:
            lines.append(f"Cookie: session={ctx.noise.take(rng, 16).hex()}")
    if body:
        lines += ["Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def http_response(
    ctx: Ctx, path: str, size: int, *, status: int = 200, host: str = ""
) -> list[bytes]:
    """Response header plus a body of `size` bytes (text for text types, noise otherwise)."""
    content_type = "text/html; charset=utf-8"
    for suffix, kind in _CONTENT_TYPES.items():
        if suffix in path:
            content_type = kind
    reason = {200: "OK", 301: "Moved Permanently", 304: "Not Modified", 404: "Not Found"}[status]
    if status == 304:
        size = 0
    date = email.utils.formatdate(ctx.t / NS_PER_S, usegmt=True)
    location = f"Location: https://{host or 'www.example.com'}{path}\r\n" if status == 301 else ""
    server = ctx.rng.choice(_SERVERS)
    header = (
        f"HTTP/1.1 {status} {reason}\r\nDate: {date}\r\nServer: {server}\r\n{location}"
        f"Content-Type: {content_type}\r\nContent-Length: {size}\r\nConnection: keep-alive\r\n"
        f"Cache-Control: max-age={ctx.rng.choice((0, 60, 3600, 86400))}\r\n\r\n"
    ).encode()
    if size == 0:
        body = b""  # a 304 (or empty 200) has no body: a PNG of minimum size would be 57 bytes
    elif content_type.startswith(("text", "application/j")):
        body = _text(ctx, size)
    elif content_type == "image/png":
        body = _png(ctx, size)
    else:
        body = ctx.noise.take(ctx.rng, size)
    return [header, body]


def _png(ctx: Ctx, size: int) -> bytes:
    """A structurally valid PNG of exactly `size` bytes (when size >= 57): noise in IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack("!I", len(data)) + kind + data + struct.pack("!I", zlib.crc32(kind + data))
        )

    header = chunk(b"IHDR", struct.pack("!IIBBBBB", 64, 64, 8, 6, 0, 0, 0))
    image = ctx.noise.take(ctx.rng, max(0, size - 8 - len(header) - 12 - 12))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", image) + chunk(b"IEND", b"")


def response_size(ctx: Ctx, median: int = 4000) -> int:
    """Web object sizes: by default median ~4 KB, mean ~11 KB, heavy tail (HTTP Archive-like)."""
    return ctx.lognormal(median, 1.4, 120, 8_000_000)


# --------------------------------------------------------------------------------------------
# Traffic functions


def tcp_session(
    ctx: Ctx,
    client: Host,
    server: Host,
    port: int,
    exchanges: Sequence[tuple[bytes, bytes]],
    *,
    ending: Literal["fin", "rst", "none"] = "fin",
) -> Iterator[Packet]:
    """A generic TCP session: handshake, request/response pairs, then FIN teardown or RST."""
    conn = TcpConnection(ctx, client, server, port)
    yield from conn.open()
    for request, response in exchanges:
        if request:
            yield from conn.send(request, from_client=True, delay=ctx.rng.uniform(0.0002, 0.002))
        if response:
            yield from conn.send(response, from_client=False, delay=ctx.rng.uniform(0.0005, 0.02))
    if ending == "fin":
        yield from conn.close(delay=ctx.rng.uniform(0.01, 2.0))
    elif ending == "rst":
        yield from conn.reset(delay=ctx.rng.uniform(0.01, 0.5))


def tcp_failed(
    ctx: Ctx,
    client: Host,
    server: Host,
    port: int,
    *,
    kind: Literal["unanswered", "refused", "syn-reset"] = "refused",
) -> Iterator[Packet]:
    """A connection that never carries data: no answer, closed port, or SYN-ACK then RST."""
    conn = TcpConnection(ctx, client, server, port)
    if kind == "unanswered":
        yield from conn.unanswered()
    elif kind == "refused":
        yield from conn.refused()
    else:
        yield from conn.syn_reset()


def http_session(
    ctx: Ctx,
    client: Host,
    server: Host,
    *,
    host: str,
    requests: int = 1,
    port: int = 80,
    agent: str = "",
    post: bool = False,
    response_median: int = 4000,
) -> Iterator[Packet]:
    """HTTP/1.1 keep-alive session: GETs (or one POST first) with think time between them."""
    rng = ctx.rng
    agent = agent or rng.choice(USER_AGENTS)
    conn = TcpConnection(ctx, client, server, port)
    yield from conn.open()
    for index in range(requests):
        path = rng.choice(_PATHS)
        if post and index == 0:
            form = b"user=jdoe&token=" + ctx.noise.take(rng, 12).hex().encode() + b"&action=save"
            request = http_request(
                ctx, host, path="/api/v1/forms", method="POST", agent=agent, body=form
            )
        else:
            request = http_request(ctx, host, path=path, agent=agent)
        think = rng.uniform(0.0003, 0.003) if index == 0 else rng.expovariate(1 / 1.5)
        yield from conn.send(request, from_client=True, delay=think)
        status = rng.choices((200, 304, 404, 301), (0.86, 0.08, 0.04, 0.02))[0]
        body = http_response(
            ctx, path, response_size(ctx, response_median), status=status, host=host
        )
        yield from conn.send(body, from_client=False, delay=rng.uniform(0.001, 0.06))
    # Idle keep-alive connections are closed by the server's timeout (nginx: 65 s, Apache: 5 s).
    yield from conn.close(by_client=rng.random() < 0.4, delay=rng.uniform(0.5, 15.0))


def _tls_records(
    ctx: Ctx, size: int, *, content_type: int = 23, version: str = "1.3"
) -> Iterator[bytes]:
    """Encrypted records carrying `size` bytes of plaintext (AEAD overhead included)."""
    overhead = 17 if version == "1.3" else 24  # 1.3: type byte + tag; 1.2 GCM: nonce + tag
    while True:
        chunk = min(size, 16384)
        length = chunk + overhead
        yield struct.pack("!BHH", content_type, 0x0303, length) + ctx.noise.take(ctx.rng, length)
        size -= chunk
        if size <= 0:
            return


def tls_session(
    ctx: Ctx,
    client: Host,
    server: Host,
    *,
    sni: str,
    version: tls_handshakes.Version = "1.3",
    alpn: tuple[str, ...] = ("h2", "http/1.1"),
    cert_kind: tls_handshakes.CertKind = "ca",
    client_profile: tls_handshakes.ClientProfile = "modern",
    requests: int = 1,
    port: int = 443,
    download: int = 0,
    response_median: int = 4000,
) -> Iterator[Packet]:
    """TLS with a real handshake, then `requests` request/response record exchanges.

    `download` forces the size of the first response (e.g. a software update: a long flow).
    """
    rng = ctx.rng
    transcript = tls_handshakes.handshake(
        sni,
        version=version,
        alpn=alpn,
        cert_kind=cert_kind,
        client=client_profile,
        valid_at=ctx.valid_at,
    )
    negotiated = "1.3" if transcript.version == "TLSv1.3" else "1.2"
    conn = TcpConnection(ctx, client, server, port)
    yield from conn.open()
    for from_client, flight in transcript.flights:
        # Server flights wait for signing (RSA-2048: ~1-3 ms); client flights for key derivation.
        delay = rng.uniform(0.0001, 0.0006) if from_client else rng.uniform(0.0008, 0.003)
        yield from conn.send(flight, from_client=from_client, delay=delay)
    for index in range(requests):
        think = rng.uniform(0.0001, 0.001) if index == 0 else rng.expovariate(1 / 2.0)
        request = _tls_records(ctx, ctx.lognormal(450, 0.5, 60, 4000), version=negotiated)
        yield from conn.send(request, from_client=True, delay=think)
        size = download if download and index == 0 else response_size(ctx, response_median)
        response = _tls_records(ctx, size, version=negotiated)
        yield from conn.send(response, from_client=False, delay=rng.uniform(0.002, 0.08))
    # close_notify is an encrypted alert: type 21 in TLS 1.2, disguised as data (23) in 1.3.
    alert_type = 23 if negotiated == "1.3" else 21
    by_client = rng.random() < 0.7
    closing = _tls_records(ctx, 2, content_type=alert_type, version=negotiated)
    yield from conn.send(closing, from_client=by_client, delay=rng.uniform(0.05, 10.0))
    yield from conn.close(by_client=by_client, delay=0.00005)


def dns_lookup(
    ctx: Ctx,
    client: Host,
    resolver: Host,
    name: str,
    *,
    a: Sequence[str] = (),
    aaaa: Sequence[str] = (),
    cname: str = "",
    qtypes: Sequence[str] = ("A", "AAAA"),
    nxdomain: bool = False,
    ttl: int = 300,
    extra_txt: int = 0,
) -> Iterator[Packet]:
    """Parallel queries from one socket (glibc sends A and AAAA together) and their answers.

    `extra_txt` adds that many bytes of TXT answer, which makes a response large enough to be
    fragmented over IPv4 (the case DNSSEC and big TXT records cause in practice).
    """
    rng = ctx.rng
    sport = rng.randint(*client.os.ephemeral_ports)
    # Cache hit on the resolver: sub-millisecond; miss: a recursive lookup upstream.
    work = rng.uniform(0.00005, 0.0004) if rng.random() < 0.7 else rng.uniform(0.005, 0.08)
    t = ctx.t
    owner = cname or name
    queries: list[tuple[int, bytes]] = []
    for qtype in qtypes:
        qid = rng.getrandbits(16)
        code = {"A": dpkt.dns.DNS_A, "AAAA": dpkt.dns.DNS_AAAA, "TXT": dpkt.dns.DNS_TXT}[qtype]
        question = dpkt.dns.DNS.Q(name=name, type=code, cls=dpkt.dns.DNS_IN)
        query = dpkt.dns.DNS(id=qid, rd=1, qd=[question], ar=[_edns()])
        for frame in udp_frames(
            client, resolver, sport, 53, bytes(query), ip_id=rng.getrandbits(16)
        ):
            yield Packet(t, frame, client.interface)
        answers = []
        if not nxdomain:
            if cname:
                answers.append(
                    dpkt.dns.DNS.RR(name=name, type=dpkt.dns.DNS_CNAME, ttl=ttl, cname=cname)
                )
            if qtype == "A":
                answers += [_rr(owner, dpkt.dns.DNS_A, ttl, ip=_packed(x)) for x in a]
            elif qtype == "AAAA":
                answers += [_rr(owner, dpkt.dns.DNS_AAAA, ttl, ip6=_packed(x)) for x in aaaa]
            elif extra_txt:
                strings = [_text(ctx, min(255, extra_txt - i)) for i in range(0, extra_txt, 255)]
                answers.append(_rr(owner, dpkt.dns.DNS_TXT, ttl, text=strings))
        response = dpkt.dns.DNS(
            id=qid,
            qr=1,
            rd=1,
            ra=1,
            rcode=3 if nxdomain else 0,
            qd=[question],
            an=answers,
            ar=[_edns()],
        )
        queries.append((rng.getrandbits(16), bytes(response)))
        t += rng.randint(20_000, 90_000)
    t = t + 2 * resolver.latency_ns + ns(work)
    for ip_id, response_bytes in queries:
        for frame in udp_frames(resolver, client, 53, sport, response_bytes, ip_id=ip_id):
            yield Packet(t, frame, client.interface)
        t += rng.randint(10_000, 60_000)


def _edns() -> object:
    return dpkt.dns.DNS.RR(name="", type=dpkt.dns.DNS_OPT, cls=1232, ttl=0, rdata=b"")


def _rr(name: str, kind: int, ttl: int, **fields: object) -> object:
    return dpkt.dns.DNS.RR(name=name, type=kind, cls=dpkt.dns.DNS_IN, ttl=ttl, **fields)


def _packed(ip: str) -> bytes:
    return Host(ip).addr


def udp_exchange(
    ctx: Ctx,
    client: Host,
    server: Host,
    port: int,
    request: bytes,
    response: bytes = b"",
    *,
    sport: int = 0,
) -> Iterator[Packet]:
    """One UDP request and optional response; IPv4 datagrams over the MTU go out fragmented."""
    rng = ctx.rng
    sport = sport or rng.randint(*client.os.ephemeral_ports)
    t = ctx.t
    for frame in udp_frames(client, server, sport, port, request, ip_id=rng.getrandbits(16)):
        yield Packet(t, frame, client.interface)
        t += rng.randint(5_000, 30_000)  # fragments leave back to back
    if response:
        t += 2 * server.latency_ns + rng.randint(30_000, 500_000)
        for frame in udp_frames(server, client, port, sport, response, ip_id=rng.getrandbits(16)):
            yield Packet(t, frame, client.interface)
            t += rng.randint(5_000, 30_000)


def ntp_exchange(
    ctx: Ctx, client: Host, server: Host, *, polls: int = 1, interval: float = 64.0
) -> Iterator[Packet]:
    """NTPv4 client/server polls on port 123 (ntpd binds source port 123 too)."""
    rng = ctx.rng
    t = ctx.t
    for _ in range(polls):
        transmit = _ntp_time(t)
        request = struct.pack("!BBbb", 0x23, 0, 6, -20) + bytes(36) + transmit
        for frame in udp_frames(client, server, 123, 123, request, ip_id=rng.getrandbits(16)):
            yield Packet(t, frame, client.interface)
        reply_t = t + 2 * server.latency_ns + rng.randint(20_000, 200_000)
        received = _ntp_time(reply_t - server.latency_ns - 10_000)
        reference = _ntp_time(reply_t - ns(rng.uniform(16, 1024)))
        reply = (
            struct.pack("!BBbbII", 0x24, 2, 6, -23, 0x0000_0A3D, 0x0000_1A2B)
            + Host("192.0.2.123").addr  # reference id: the upstream server's address
            + reference
            + transmit
            + received
            + _ntp_time(reply_t - server.latency_ns)
        )
        for frame in udp_frames(server, client, 123, 123, reply, ip_id=rng.getrandbits(16)):
            yield Packet(reply_t, frame, client.interface)
        t += ns(interval * rng.uniform(0.97, 1.03))


def _ntp_time(t_ns: int) -> bytes:
    seconds, fraction = divmod(t_ns, NS_PER_S)
    return struct.pack("!II", seconds + 2_208_988_800, (fraction << 32) // NS_PER_S)


def ping(
    ctx: Ctx, src: Host, dst: Host, *, count: int = 4, interval: float = 1.0
) -> Iterator[Packet]:
    """ICMP or ICMPv6 echo, with the payload the sender's ping really uses."""
    rng = ctx.rng
    ident = rng.getrandbits(16)
    ip_id = rng.getrandbits(16)
    t = ctx.t
    for seq in range(1, count + 1):
        if src.os.name == "windows":
            payload = b"abcdefghijklmnopqrstuvwabcdefghi"
        else:  # iputils: struct timeval, then bytes 0x10.. up to 56 bytes
            seconds, rest = divmod(t, NS_PER_S)
            payload = struct.pack("<qq", seconds, rest // 1000) + bytes(range(0x10, 0x38))
        yield Packet(
            t,
            icmp_echo_frame(
                src, dst, reply=False, ident=ident, seq=seq, payload=payload, ip_id=ip_id
            ),
            src.interface,
        )
        reply_t = t + 2 * dst.latency_ns + rng.randint(20_000, 90_000)
        yield Packet(
            reply_t,
            icmp_echo_frame(
                dst, src, reply=True, ident=ident, seq=seq, payload=payload, ip_id=ip_id ^ 0x5A5A
            ),
            src.interface,
        )
        ip_id += 1
        t += ns(interval) + rng.randint(0, 400_000)


# SSH: real OpenSSH 9.2p1 banners and KEXINIT name-lists (hassh fingerprints depend on them).
SSH_CLIENT_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
SSH_SERVER_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
_SSH_KEX = (
    "sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,"
    "ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,diffie-hellman-group-exchange-sha256,"
    "diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,diffie-hellman-group14-sha256"
)
_SSH_HOSTKEYS_CLIENT = (
    "ssh-ed25519-cert-v01@openssh.com,ecdsa-sha2-nistp256-cert-v01@openssh.com,"
    "ecdsa-sha2-nistp384-cert-v01@openssh.com,ecdsa-sha2-nistp521-cert-v01@openssh.com,"
    "sk-ssh-ed25519-cert-v01@openssh.com,sk-ecdsa-sha2-nistp256-cert-v01@openssh.com,"
    "rsa-sha2-512-cert-v01@openssh.com,rsa-sha2-256-cert-v01@openssh.com,ssh-ed25519,"
    "ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,sk-ssh-ed25519@openssh.com,"
    "sk-ecdsa-sha2-nistp256@openssh.com,rsa-sha2-512,rsa-sha2-256"
)
_SSH_HOSTKEYS_SERVER = "rsa-sha2-512,rsa-sha2-256,ecdsa-sha2-nistp256,ssh-ed25519"
_SSH_CIPHERS = (
    "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,"
    "aes128-gcm@openssh.com,aes256-gcm@openssh.com"
)
_SSH_MACS = (
    "umac-64-etm@openssh.com,umac-128-etm@openssh.com,hmac-sha2-256-etm@openssh.com,"
    "hmac-sha2-512-etm@openssh.com,hmac-sha1-etm@openssh.com,umac-64@openssh.com,umac-128@openssh.com,"
    "hmac-sha2-256,hmac-sha2-512,hmac-sha1"
)


def _ssh_string(value: bytes) -> bytes:
    return struct.pack("!I", len(value)) + value


def _ssh_packet(ctx: Ctx, payload: bytes) -> bytes:
    """Unencrypted SSH binary packet (RFC 4253 §6): length, padding length, payload, padding."""
    padding = 8 - (5 + len(payload)) % 8
    if padding < 4:
        padding += 8
    return (
        struct.pack("!IB", 1 + len(payload) + padding, padding)
        + payload
        + ctx.noise.take(ctx.rng, padding)
    )


def _ssh_kexinit(ctx: Ctx, *, server: bool, post_quantum: bool) -> bytes:
    strict = "kex-strict-s-v00@openssh.com" if server else "ext-info-c,kex-strict-c-v00@openssh.com"
    kex = _SSH_KEX if post_quantum or not server else _SSH_KEX.split(",", 1)[1]
    lists = [
        f"{kex},{strict}",
        _SSH_HOSTKEYS_SERVER if server else _SSH_HOSTKEYS_CLIENT,
        _SSH_CIPHERS,
        _SSH_CIPHERS,
        _SSH_MACS,
        _SSH_MACS,
        "none,zlib@openssh.com",
        "none,zlib@openssh.com",
        "",
        "",
    ]
    payload = (
        b"\x14" + ctx.noise.take(ctx.rng, 16) + b"".join(_ssh_string(x.encode()) for x in lists)
    )
    return _ssh_packet(ctx, payload + b"\x00" + bytes(4))


def _ssh_encrypted(ctx: Ctx, payload_length: int) -> bytes:
    """chacha20-poly1305 packet: 4-byte encrypted length, padded body, 16-byte tag.

    The AEAD modes align padding-length byte + payload + padding (not the length) to 8 bytes with
    at least 4 bytes of padding, so a keystroke (10-byte CHANNEL_DATA) is 36 bytes on the wire.
    """
    padding = 8 - (1 + payload_length) % 8
    if padding < 4:
        padding += 8
    return ctx.noise.take(ctx.rng, 4 + 1 + payload_length + padding + 16)


def ssh_handshake(
    ctx: Ctx,
    conn: TcpConnection,
    client_banner: bytes,
    server_banner: bytes,
    post_quantum: bool,
) -> Iterator[Packet]:
    """An SSH connection up to NEWKEYS: TCP open, banners, KEXINIT both ways, key exchange."""
    rng = ctx.rng
    yield from conn.open()
    yield from conn.send(server_banner, from_client=False, delay=rng.uniform(0.002, 0.01))
    yield from conn.send(client_banner, from_client=True, delay=0.0002)
    yield from conn.send(
        _ssh_kexinit(ctx, server=False, post_quantum=post_quantum), from_client=True, delay=0.0001
    )
    yield from conn.send(
        _ssh_kexinit(ctx, server=True, post_quantum=post_quantum), from_client=False, delay=0.0003
    )
    # KEX_ECDH_INIT: client key (sntrup761 public key 1158 bytes + X25519 32); the reply carries
    # the ed25519 host key, the server key (sntrup761 ciphertext 1039 + X25519) and a signature,
    # followed by NEWKEYS.
    client_key, server_key = (1190, 1071) if post_quantum else (32, 32)
    init = b"\x1e" + _ssh_string(ctx.noise.take(rng, client_key))
    yield from conn.send(_ssh_packet(ctx, init), from_client=True, delay=0.002)
    host_key = _ssh_string(b"ssh-ed25519") + _ssh_string(ctx.noise.take(rng, 32))
    signature = _ssh_string(b"ssh-ed25519") + _ssh_string(ctx.noise.take(rng, 64))
    reply = (
        b"\x1f"
        + _ssh_string(host_key)
        + _ssh_string(ctx.noise.take(rng, server_key))
        + _ssh_string(signature)
    )
    yield from conn.send(
        _ssh_packet(ctx, reply) + _ssh_packet(ctx, b"\x15"), from_client=False, delay=0.004
    )
    yield from conn.send(_ssh_packet(ctx, b"\x15"), from_client=True, delay=0.001)


def ssh_session(
    ctx: Ctx,
    client: Host,
    server: Host,
    *,
    duration: float = 60.0,
    port: int = 22,
    client_banner: bytes = SSH_CLIENT_BANNER,
    server_banner: bytes = SSH_SERVER_BANNER,
    post_quantum: bool = False,
) -> Iterator[Packet]:
    """Interactive SSH: banners, KEXINIT, key exchange, auth, then typing.

    Two OpenSSH 9.2 ends agree on sntrup761x25519 (`post_quantum=True`); by default the server
    is hardened to curve25519-sha256, which tshark 4.0 decodes (it flags sntrup761 keys as invalid).
    """
    rng = ctx.rng
    conn = TcpConnection(ctx, client, server, port)
    end = ctx.t + ns(duration)
    yield from ssh_handshake(ctx, conn, client_banner, server_banner, post_quantum)
    # Service request, ext-info, public-key auth, channel open, pty and shell: payload sizes as
    # OpenSSH sends them.
    for from_client, sizes in (
        (True, (17,)),
        (False, (250, 17)),
        (True, (80,)),
        (False, (40,)),
        (True, (620,)),
        (False, (1, 24)),
        (True, (30,)),
        (False, (28, 900)),
        (True, (75, 20, 1200)),
        (False, (40, 240)),
    ):
        records = b"".join(_ssh_encrypted(ctx, size) for size in sizes)
        yield from conn.send(records, from_client=from_client, delay=rng.uniform(0.0003, 0.02))
    # Typing: every keystroke is a packet and is echoed; Enter returns command output.
    while conn.t < end:
        for key in range(rng.randint(3, 25)):
            # The first key of a command comes after reading the last output.
            pause = rng.expovariate(1 / 4.0) if key == 0 else rng.expovariate(1 / 0.18)
            yield from conn.send(_ssh_encrypted(ctx, 10), from_client=True, delay=pause)
            yield from conn.send(
                _ssh_encrypted(ctx, 10), from_client=False, delay=rng.uniform(0.0001, 0.001)
            )
        output = ctx.lognormal(600, 1.4, 20, 400_000)
        chunks = (_ssh_encrypted(ctx, min(32_000, output - i)) for i in range(0, output, 32_000))
        yield from conn.send(chunks, from_client=False, delay=rng.uniform(0.002, 0.2))
    yield from conn.send(_ssh_encrypted(ctx, 10) * 2, from_client=True, delay=0.3)  # "exit"
    yield from conn.send(_ssh_encrypted(ctx, 30) * 3, from_client=False, delay=0.002)
    yield from conn.close(by_client=True, delay=0.001)


def _nmap_probe(
    ctx: Ctx, t: int, attacker: Host, target: Host, sport: int, dport: int, is_open: bool
) -> list[Packet]:
    """One nmap -sS probe and its answer: RST-ACK when closed; SYN-ACK then our RST when open.

    nmap crafts the SYN itself: window 1024, only an MSS option, a random TTL in 37..59; the
    scanner's kernel resets the SYN-ACK because no socket owns the connection.
    """
    rng = ctx.rng
    seq = rng.getrandbits(32)
    iface = attacker.interface or target.interface
    mss_only = struct.pack("!BBH", 2, 4, 1460)
    ttl = rng.randint(37, 59)
    ip_id = rng.getrandbits(16)
    syn = tcp_frame(
        attacker, target, sport, dport, seq, 0, SYN, 1024, mss_only, ip_id=ip_id, ttl=ttl
    )
    answer_t = t + 2 * target.latency_ns + rng.randint(15_000, 60_000)
    packets = [Packet(t, syn, iface)]
    if not is_open:
        rst = tcp_frame(target, attacker, dport, sport, 0, seq + 1, RST | ACK, 0)
        return [*packets, Packet(answer_t, rst, iface)]
    their_seq = rng.getrandbits(32)
    window = target.os.syn_window
    synack = tcp_frame(
        target, attacker, dport, sport, their_seq, seq + 1, SYN | ACK, window, mss_only
    )
    rst_t = answer_t + 2 * attacker.latency_ns + rng.randint(10_000, 40_000)
    rst = tcp_frame(attacker, target, sport, dport, seq + 1, 0, RST, 0, ip_id=0)
    return [*packets, Packet(answer_t, synack, iface), Packet(rst_t, rst, iface)]


#: nmap's most common TCP ports, then the rest of a "top 1000" filled from 1-10000.
COMMON_PORTS = (
    80, 23, 443, 21, 22, 25, 3389, 110, 445, 139, 143, 53, 135, 3306, 8080, 1723, 111, 995, 993,
    5900, 1025, 587, 8888, 199, 1720, 465, 548, 113, 81, 6001, 10000, 514, 5060, 179, 1026, 2000,
    8443, 8000, 32768, 554, 26, 1433, 49152, 2001, 515, 8008, 49154, 1027, 5666, 646, 5000, 5631,
    631, 49153, 8081, 2049, 88, 79, 5800, 106, 2121, 1110, 49155, 6000, 513, 990, 5357, 427, 49156,
    543, 544, 5101, 144, 7, 389,
)  # fmt: skip


def scan_ports(rng: random.Random, count: int) -> list[int]:
    """`count` distinct ports, common ones first, in nmap's random probe order."""
    ports = list(COMMON_PORTS[:count])
    chosen = set(ports)
    while len(ports) < count:
        port = rng.randint(1, 10000)
        if port not in chosen:
            chosen.add(port)
            ports.append(port)
    rng.shuffle(ports)
    return ports


def vertical_scan(
    ctx: Ctx,
    attacker: Host,
    target: Host,
    ports: Sequence[int],
    *,
    open_ports: Collection[int] = (),
    rate_pps: float = 400.0,
) -> Iterator[Packet]:
    """nmap -sS of many ports on one host: probes at `rate_pps`, exponential gaps."""
    sport = ctx.rng.randint(33000, 65000)  # nmap keeps one source port for a scan
    probes = (
        _nmap_probe(ctx, t, attacker, target, sport, port, port in open_ports)
        for t, port in zip(_poisson_times(ctx, rate_pps), ports, strict=False)
    )
    yield from _interleave(probes)


def horizontal_scan(
    ctx: Ctx,
    attacker: Host,
    targets: Sequence[str],
    port: int,
    *,
    live: dict[str, Host],
    open_on: Collection[str] = (),
    local: bool = True,
    router: Host | None = None,
    rate_pps: float = 150.0,
) -> Iterator[Packet]:
    """One port across many addresses.

    On the local segment (`local=True`) nmap must ARP every address first and can only probe
    those that answer, so the capture shows an ARP sweep then SYNs to the live hosts. Through a
    router (`local=False`, frames to `router`'s MAC) every address gets a SYN; dead ones are silent.
    """
    rng = ctx.rng
    sport = rng.randint(33000, 65000)
    times = _poisson_times(ctx, rate_pps)
    if local:
        arp: list[list[Packet]] = []
        for ip, t in zip(targets, times, strict=False):
            request = [Packet(t, arp_frame(attacker, ip), attacker.interface)]
            if ip in live:
                reply_t = t + 2 * live[ip].latency_ns + rng.randint(20_000, 200_000)
                request.append(
                    Packet(
                        reply_t,
                        arp_frame(live[ip], attacker.ip, reply_to=attacker),
                        attacker.interface,
                    )
                )
            arp.append(request)
        yield from _interleave(iter(arp))
        ctx.t = max(ctx.t, max(p.ts_ns for group in arp for p in group)) + ns(0.3)
        times = _poisson_times(ctx, rate_pps)
        targets = [ip for ip in targets if ip in live]
    probes = []
    for ip, t in zip(targets, times, strict=False):
        if ip in live:
            probes.append(_nmap_probe(ctx, t, attacker, live[ip], sport, port, ip in open_on))
        elif router is not None:
            probes.append(
                _nmap_probe(ctx, t, attacker, Host(ip, mac=router.mac), sport, port, False)[:1]
            )
    yield from _interleave(iter(probes))


def _poisson_times(ctx: Ctx, rate: float) -> Iterator[int]:
    t = ctx.t
    while True:
        yield t
        t += ns(ctx.rng.expovariate(rate))


def _interleave(groups: Iterator[list[Packet]]) -> Iterator[Packet]:
    """Order packet groups whose first packets are in order but whose answers overlap."""
    pending: list[Packet] = []
    for group in groups:
        start = group[0].ts_ns
        while pending and pending[0].ts_ns <= start:
            yield heapq.heappop(pending)
        yield group[0]
        for packet in group[1:]:
            heapq.heappush(pending, packet)
    while pending:
        yield heapq.heappop(pending)


def ordered(*sessions: Iterable[Packet]) -> Iterator[Packet]:
    """Merge concurrent sub-sessions (each in time order), e.g. a browser's parallel connections."""
    return heapq.merge(*sessions, key=lambda packet: packet.ts_ns)


# --------------------------------------------------------------------------------------------
# Scheduling and output


class SessionMerger:
    """Interleave sessions in timestamp order, streaming.

    `arrivals` yields (start_ns, packets, flows) in start order; a session's packets must be in
    time order and not before its start. Only one packet per active session is held, so memory
    depends on concurrency, not on capture length. `flows` counts declared flows of the sessions
    whose first packet has been emitted (for summaries).
    """

    def __init__(self, arrivals: Iterable[tuple[int, Iterable[Packet], int]]) -> None:
        self._arrivals = iter(arrivals)
        self.sessions = 0
        self.flows = 0

    def __iter__(self) -> Iterator[Packet]:
        heap: list[tuple[int, int, Packet, Iterator[Packet], int]] = []
        order = 0
        last_ts = 0
        upcoming = next(self._arrivals, None)
        while heap or upcoming is not None:
            while upcoming is not None and (not heap or upcoming[0] <= heap[0][0]):
                start, packets, flows = upcoming
                iterator = iter(packets)
                first = next(iterator, None)
                if first is not None:
                    if first.ts_ns < start:
                        raise RuntimeError(
                            f"session starts at {first.ts_ns}, before its start {start}"
                        )
                    heapq.heappush(heap, (first.ts_ns, order, first, iterator, flows))
                    order += 1
                upcoming = next(self._arrivals, None)
            ts, _, packet, iterator, flows = heapq.heappop(heap)
            if ts < last_ts:
                raise RuntimeError(f"a traffic function emitted packets out of time order at {ts}")
            last_ts = ts
            if flows:
                self.sessions += 1
                self.flows += flows
            following = next(iterator, None)
            if following is not None:
                heapq.heappush(heap, (following.ts_ns, order, following, iterator, 0))
                order += 1
            yield packet


def merge_sessions(arrivals: Iterable[tuple[int, Iterable[Packet], int]]) -> Iterator[Packet]:
    return iter(SessionMerger(arrivals))


class CaptureBuilder:
    """Collect scheduled sessions and write them as one time-ordered capture.

    >>> b = CaptureBuilder(seed=1)
    >>> b.add(0.5, ping, Host("10.0.0.1"), Host("10.0.0.2"), count=2)
    >>> len(list(b.packets()))
    4
    """

    def __init__(self, seed: int = 0, start: dt.datetime = DEFAULT_START) -> None:
        self.seed = seed
        self.start_ns = int(start.timestamp()) * NS_PER_S + start.microsecond * 1000
        self.valid_at = start.date()
        self.noise = Noise(seed)
        self._sessions: list[tuple[int, int, Iterable[Packet], int]] = []

    def context(self, at: float) -> Ctx:
        """The context the next session scheduled at `at` seconds gets (own seeded RNG)."""
        rng = random.Random(f"{self.seed}:{len(self._sessions)}")
        return Ctx(self.start_ns + ns(at), rng, self.noise, self.valid_at)

    def add(
        self,
        at: float,
        session: Callable[Concatenate[Ctx, P], Iterable[Packet]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> None:
        """Schedule `session(ctx, *args, **kwargs)` to start `at` seconds into the capture."""
        self.add_flows(at, 1, session, *args, **kwargs)

    def add_flows(
        self,
        at: float,
        flows: int,
        session: Callable[Concatenate[Ctx, P], Iterable[Packet]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> None:
        """Like `add`, declaring how many flows the session makes (for summaries)."""
        ctx = self.context(at)
        self._sessions.append((ctx.t, len(self._sessions), session(ctx, *args, **kwargs), flows))

    def merger(self) -> SessionMerger:
        ordered_sessions = sorted(self._sessions, key=lambda s: (s[0], s[1]))
        return SessionMerger((t, packets, flows) for t, _, packets, flows in ordered_sessions)

    def packets(self) -> Iterator[Packet]:
        return iter(self.merger())

    def write(
        self,
        path: str | Path,
        fmt: Format = "pcap",
        interfaces: Sequence[Interface] = (Interface("eth0"),),
    ) -> CaptureWriter:
        """Write the capture; sessions are generated lazily while writing."""
        return write_capture(path, self.packets(), fmt, interfaces)
