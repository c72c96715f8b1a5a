"""DNS tunnel traffic: iodine-like and dnscat2-like query streams carrying a file.

Both put upstream data in the labels left of the tunnel's domain (base32, base64 or hex, in
labels of at most 63 characters and names of at most `max_name` characters) and get data back
in the answers, as the real tools do:

- `iodine_session`: one UDP socket; each query name is a one-character command, a 3-character
  sequence header and a chunk of the encoded data under `domain`; answers are NULL records
  (or TXT) carrying up to `fragment` bytes of downstream data, or a few bytes when there is
  none; when the upload is done the client keeps polling with short ping names.
- `dnscat2_session`: each query name is the hex of a dnscat2 packet (2-byte packet id, type,
  session id, sequence and acknowledgement numbers, data) under `domain`; query types rotate
  through TXT, CNAME and MX and the answers carry the server's packet in hex in that type.

The messages are real DNS (built with dpkt), sent with `udp_exchange`; `chunk_names` and
`decode_names` let tests check that the names really carry the file.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator, Sequence
from typing import Literal

import dpkt

from tapetum.testing.synth import Ctx, ns, udp_exchange
from tapetum.testing.wire import Host, Packet

Encoding = Literal["base32", "base64", "hex"]

_QTYPES = {"A": 1, "CNAME": 5, "NULL": 10, "MX": 15, "TXT": 16}
_DNS_IN = 1


def encode(data: bytes, encoding: Encoding) -> str:
    """Text of `data` in a DNS-safe alphabet (base32 lower case without padding, as iodine)."""
    if encoding == "hex":
        return data.hex()
    if encoding == "base32":
        return base64.b32encode(data).decode("ascii").rstrip("=").lower()
    # iodine's base64 uses "-" and "+"; "+" is legal in a DNS label, "/" is avoided.
    return base64.b64encode(data, altchars=b"-+").decode("ascii").rstrip("=")


def decode(text: str, encoding: Encoding) -> bytes:
    if encoding == "hex":
        return bytes.fromhex(text)
    if encoding == "base32":
        t = text.upper()
        return base64.b32decode(t + "=" * (-len(t) % 8))
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-+")


def _labels(text: str, label_len: int) -> str:
    return ".".join(text[i : i + label_len] for i in range(0, len(text), label_len))


def _payload_chars(domain: str, header: int, max_name: int, label_len: int, unit: int) -> int:
    """Encoded characters that fit in one name next to `header` and `domain` (whole units)."""
    room = max_name - len(domain) - 1 - header
    chars = room - room // (label_len + 1)  # one dot per full label
    return max(unit, chars - chars % unit)


def chunk_names(
    data: bytes,
    domain: str,
    *,
    encoding: Encoding = "base32",
    max_name: int = 253,
    label_len: int = 63,
    header: Sequence[str] = (),
) -> list[str]:
    """Query names carrying `data`: each is header[i] + encoded chunk, split in labels.

    Chunks are whole groups of the encoding (5 bytes in base32, 3 in base64, 1 in hex), so each
    name decodes on its own, as each tunnel message must.
    """
    unit_chars, unit_bytes = {"base32": (8, 5), "base64": (4, 3), "hex": (2, 1)}[encoding]
    head = max((len(h) for h in header), default=0)
    chars = _payload_chars(domain, head, max_name, label_len, unit_chars)
    step = chars // unit_chars * unit_bytes
    names = []
    for n, off in enumerate(range(0, len(data), step)):
        text = (header[n % len(header)] if header else "") + encode(
            data[off : off + step], encoding
        )
        names.append(f"{_labels(text, label_len)}.{domain}")
    return names


def decode_names(
    names: Sequence[str], domain: str, *, encoding: Encoding = "base32", header_len: int = 0
) -> bytes:
    """The data `chunk_names` put in these names (in order)."""
    out = []
    for name in names:
        text = name[: -len(domain) - 1].replace(".", "")[header_len:]
        out.append(decode(text, encoding))
    return b"".join(out)


def _message(ident: int, name: str, qtype: int, answers: Sequence[object] = ()) -> bytes:
    q = dpkt.dns.DNS.Q(name=name, type=qtype, cls=_DNS_IN)
    if not answers:
        return bytes(dpkt.dns.DNS(id=ident, rd=1, qd=[q]))
    return bytes(dpkt.dns.DNS(id=ident, qr=1, rd=1, ra=1, aa=0, qd=[q], an=list(answers)))


def _rr(name: str, qtype: int, **fields: object) -> object:
    return dpkt.dns.DNS.RR(name=name, type=qtype, cls=_DNS_IN, ttl=0, **fields)


def _txt_strings(data: bytes) -> list[bytes]:
    return [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]


def iodine_session(
    ctx: Ctx,
    client: Host,
    resolver: Host,
    domain: str,
    data: bytes,
    *,
    encoding: Encoding = "base32",
    qtype: Literal["NULL", "TXT"] = "NULL",
    downstream: bytes = b"",
    fragment: int = 1000,
    interval_s: float = 0.05,
    polls: int = 20,
    max_name: int = 253,
) -> Iterator[Packet]:
    """An iodine-like tunnel uploading `data` and receiving `downstream`, then idle pings."""
    rng = ctx.rng
    sport = rng.randint(*client.os.ephemeral_ports)
    user = "0123456789abcdef"[rng.randrange(16)]
    headers = [f"{user}{encode(struct.pack('>H', (n * 7) & 0xFFFF), 'base32')[:3]}"
               for n in range(64)]  # fmt: skip
    names = chunk_names(data, domain, encoding=encoding, max_name=max_name, header=headers)
    # Idle pings: "p", the user id and a cache-busting counter, as iodine sends.
    names += [f"p{user}{encode(rng.randbytes(5), 'base32')}.{domain}" for _ in range(polls)]
    code = _QTYPES[qtype]
    down = memoryview(downstream)
    t = ctx.t
    for name in names:
        piece = bytes(down[:fragment]) if len(down) else rng.randbytes(rng.randint(2, 4))
        down = down[len(piece) :] if len(down) else down
        if code == 10:
            answer = _rr(name, code, rdata=piece)
        else:
            answer = _rr(name, code, text=_txt_strings(encode(piece, "base32").encode()))
        ident = rng.getrandbits(16)
        query = _message(ident, name, code)
        response = _message(ident, name, code, [answer])
        yield from udp_exchange(ctx.child(t), client, resolver, 53, query, response, sport=sport)
        t += ns(interval_s * rng.uniform(0.5, 1.5))


def dnscat2_session(
    ctx: Ctx,
    client: Host,
    resolver: Host,
    domain: str,
    data: bytes,
    *,
    downstream: bytes = b"",
    qtypes: Sequence[Literal["TXT", "CNAME", "MX"]] = ("TXT", "CNAME", "MX"),
    interval_s: float = 0.2,
    polls: int = 20,
    max_name: int = 253,
) -> Iterator[Packet]:
    """A dnscat2-like session uploading `data` and receiving `downstream`, then idle polls."""
    rng = ctx.rng
    session = rng.getrandbits(16)
    head = 9  # packet id, type, session id, seq, ack
    per_query = max(1, (_payload_chars(domain, 0, max_name, 63, 2) // 2) - head)
    chunks = [data[i : i + per_query] for i in range(0, len(data), per_query)]
    chunks += [b""] * polls
    seq, ack = rng.getrandbits(16), rng.getrandbits(16)
    down = memoryview(downstream)
    t = ctx.t
    for n, chunk in enumerate(chunks):
        packet = struct.pack(">HBHHH", rng.getrandbits(16), 0x01, session, seq, ack) + chunk
        seq = (seq + len(chunk)) & 0xFFFF
        name = f"{_labels(packet.hex(), 63)}.{domain}"
        qtype = qtypes[n % len(qtypes)]
        room = 100 if qtype == "TXT" else 60  # answers in names are shorter than TXT strings
        piece = bytes(down[:room])
        down = down[len(piece) :]
        ack = (ack + len(piece)) & 0xFFFF
        reply = struct.pack(">HBHHH", rng.getrandbits(16), 0x01, session, ack, seq) + piece
        if qtype == "TXT":
            answer = _rr(name, 16, text=[reply.hex().encode()])
        elif qtype == "CNAME":
            answer = _rr(name, 5, cname=f"{_labels(reply.hex(), 63)}.{domain}")
        else:
            answer = _rr(name, 15, preference=10, mxname=f"{_labels(reply.hex(), 63)}.{domain}")
        ident = rng.getrandbits(16)
        query = _message(ident, name, _QTYPES[qtype])
        response = _message(ident, name, _QTYPES[qtype], [answer])
        yield from udp_exchange(ctx.child(t), client, resolver, 53, query, response)
        t += ns(interval_s * rng.uniform(0.5, 1.5))
