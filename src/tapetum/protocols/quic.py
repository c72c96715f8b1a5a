"""QUIC Initial packet decryption (RFC 9001 section 5) → the TLS ClientHello/ServerHello inside.

Initial packets are protected with keys anyone can derive from the client's first Destination
Connection ID and a version-specific salt, so a passive observer can read the TLS handshake's
first flight: HKDF-Extract(salt, DCID) → "client in"/"server in" secrets → key, IV and header
protection key; header protection is removed with AES-ECB over a 16-byte sample, the payload
opened with AES-128-GCM. CRYPTO frames are then reassembled by offset (they may come out of order
and spread over several packets) and handed to the TLS parser of `tls.py`.

Versions: QUIC v1 (RFC 9000), v2 (RFC 9369), IETF drafts 22-34, Facebook mvfst and Google's
T050/T051 (which carry TLS; Google's Q0xx versions do not and are ignored). Salts as published
in the RFCs and drafts, and as Wireshark's dissector lists them for the vendor versions.
"""

from __future__ import annotations

import hmac
import re
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tapetum.protocols._parser import EventSink, MalformedError, Parser
from tapetum.protocols.tls import Handshake, TlsMemo, parse_client_hello, parse_server_hello
from tapetum.records import FlowRef

_SALT_V1 = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")
_SALT_V2 = bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9")
_SALT_D29 = bytes.fromhex("afbfec289993d24c9e9786f19c6111e04390a899")
_SALT_D23 = bytes.fromhex("c3eef712c72ebb5a11a7d2432bb46365bef9f502")
_SALT_D22 = bytes.fromhex("7fbcdb0e7c66bbe9193a96cd21519ebd7a02644a")
_SALT_T50 = bytes.fromhex("7ff579e5acd072915580304c43a2367c60488310")
_SALT_T51 = bytes.fromhex("7a4edef4e7ccee5fa4506c19124fc8ccda6e033d")


class _Version:
    __slots__ = ("gquic_frames", "initial_type", "label_prefix", "retry_type", "salt")

    def __init__(
        self,
        salt: bytes,
        label_prefix: bytes = b"quic ",
        v2: bool = False,
        gquic_frames: bool = False,
    ) -> None:
        self.salt = salt
        self.label_prefix = label_prefix
        # RFC 9369 renumbered the long header packet types.
        self.initial_type = 1 if v2 else 0
        self.retry_type = 0 if v2 else 3
        #: Google's T05x keep gQUIC frame types: CRYPTO is 0x08.
        self.gquic_frames = gquic_frames


VERSIONS: dict[int, _Version] = {
    0x00000001: _Version(_SALT_V1),
    0x6B3343CF: _Version(_SALT_V2, b"quicv2 ", v2=True),
    0xFF000016: _Version(_SALT_D22),
    0xFACEB001: _Version(_SALT_D22),
    0xFACEB002: _Version(_SALT_D23),
    0xFACEB00E: _Version(_SALT_D23),
    0x54303530: _Version(_SALT_T50, gquic_frames=True),
    0x54303531: _Version(_SALT_T51, gquic_frames=True),
    **{0xFF000000 + draft: _Version(_SALT_D23) for draft in range(23, 29)},
    **{0xFF000000 + draft: _Version(_SALT_D29) for draft in range(29, 35)},
}

#: Decryption failures tolerated per flow before it is given up.
MAX_DECRYPT_FAILURES = 8
#: Coalesced packets looked at per datagram.
MAX_PACKETS_PER_DATAGRAM = 8
#: CRYPTO frames kept per direction while waiting for the bytes before them.
MAX_CRYPTO_CHUNKS = 64

_NONZERO = re.compile(rb"[^\x00]")


def version_parameters(version: int) -> _Version | None:
    """How to read Initial packets of `version` (the first guess), None when we cannot."""
    candidates = _candidates(version)
    return candidates[0] if candidates else None


def _candidates(version: int) -> tuple[_Version, ...]:
    known = VERSIONS.get(version)
    if known is not None:
        return (known,)
    if version & 0x0F0F0F0F == 0x0A0A0A0A:
        # Reserved versions (RFC 9000 section 15) force version negotiation; clients protect
        # such Initials like those of a version they support: draft-29 in the interop
        # captures (Wireshark guesses the same), v1 in current stacks.
        return (VERSIONS[0xFF00001D], VERSIONS[1])
    return ()


def looks_like_initial(data: bytes) -> bool:
    """A long-header Initial packet of a version we can decrypt."""
    if len(data) < 7 or data[0] & 0xC0 != 0xC0:
        return False
    version = version_parameters(int.from_bytes(data[1:5], "big"))
    return version is not None and (data[0] >> 4) & 3 == version.initial_type


def _expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    # HKDF-Expand-Label (RFC 8446 section 7.1) with an empty context; every output here is
    # at most one SHA-256 block long.
    full = b"tls13 " + label
    info = struct.pack("!HB", length, len(full)) + full + b"\x00"
    return hmac.digest(secret, info + b"\x01", "sha256")[:length]


class _Keys:
    __slots__ = ("aead", "hp", "iv")

    def __init__(self, secret: bytes, prefix: bytes) -> None:
        self.aead = AESGCM(_expand_label(secret, prefix + b"key", 16))
        self.iv = int.from_bytes(_expand_label(secret, prefix + b"iv", 12), "big")
        hp_key = _expand_label(secret, prefix + b"hp", 16)
        self.hp: CipherContext = Cipher(algorithms.AES(hp_key), modes.ECB()).encryptor()


def initial_keys(version: _Version, dcid: bytes) -> tuple[_Keys, _Keys]:
    """Client and server Initial keys for a client's first Destination Connection ID."""
    initial_secret = hmac.digest(version.salt, dcid, "sha256")
    client = _expand_label(initial_secret, b"client in", 32)
    server = _expand_label(initial_secret, b"server in", 32)
    return _Keys(client, version.label_prefix), _Keys(server, version.label_prefix)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise MalformedError("variable-length integer runs past the packet")
    first = data[pos]
    size = 1 << (first >> 6)
    if pos + size > len(data):
        raise MalformedError("variable-length integer runs past the packet")
    value = first & 0x3F
    for i in range(1, size):
        value = (value << 8) | data[pos + i]
    return value, pos + size


def crypto_frames(payload: bytes, gquic: bool = False) -> tuple[list[tuple[int, bytes]], str]:
    """(offset, data) of the CRYPTO frames in a decrypted Initial payload, and an error text.

    Reading stops at the first frame that is not allowed in an Initial packet (the error text
    then says which); the CRYPTO frames before it are kept.
    """
    found: list[tuple[int, bytes]] = []
    crypto_type = 0x08 if gquic else 0x06
    pos = 0
    n = len(payload)
    while pos < n:
        ftype = payload[pos]
        if ftype == 0x00:  # PADDING: skip the whole run at C speed
            match = _NONZERO.search(payload, pos)
            pos = match.start() if match else n
        elif ftype == crypto_type:
            offset, pos = _varint(payload, pos + 1)
            length, pos = _varint(payload, pos)
            if pos + length > n:
                raise MalformedError("CRYPTO frame runs past the packet")
            found.append((offset, payload[pos : pos + length]))
            pos += length
        elif gquic:
            break  # other gQUIC frames (ACK...) have layouts we do not need to read
        elif ftype == 0x01:  # PING
            pos += 1
        elif ftype in (0x02, 0x03):  # ACK
            _, pos = _varint(payload, pos + 1)  # largest acknowledged
            _, pos = _varint(payload, pos)  # delay
            count, pos = _varint(payload, pos)
            _, pos = _varint(payload, pos)  # first range
            if count > n:
                raise MalformedError("ACK range count larger than the packet")
            for _ in range(2 * count + (3 if ftype == 0x03 else 0)):
                _, pos = _varint(payload, pos)
        elif ftype in (0x1C, 0x1D):  # CONNECTION_CLOSE
            _, pos = _varint(payload, pos + 1)
            if ftype == 0x1C:
                _, pos = _varint(payload, pos)
            length, pos = _varint(payload, pos)
            pos += length
        else:
            return found, f"frame type 0x{ftype:02x} is not allowed in an Initial packet"
    return found, ""


class _CryptoStream:
    """CRYPTO bytes of one direction, reassembled from offset 0 on."""

    __slots__ = ("chunks", "data", "limit")

    def __init__(self, limit: int) -> None:
        self.data = bytearray()
        self.chunks: dict[int, bytes] = {}
        self.limit = limit

    def add(self, offset: int, chunk: bytes) -> None:
        end = offset + len(chunk)
        if end <= len(self.data) or not chunk:
            return  # retransmitted
        if end > self.limit:
            raise MalformedError(f"CRYPTO data beyond {self.limit} bytes")
        if offset > len(self.data):
            if len(self.chunks) >= MAX_CRYPTO_CHUNKS:
                raise MalformedError("too many out-of-order CRYPTO frames")
            if len(chunk) > len(self.chunks.get(offset, b"")):
                self.chunks[offset] = chunk
            return
        self.data += chunk[len(self.data) - offset :]
        # Pull in the chunks that now touch the contiguous prefix.
        progressed = True
        while progressed and self.chunks:
            progressed = False
            for start in sorted(self.chunks):
                if start > len(self.data):
                    break
                piece = self.chunks.pop(start)
                if start + len(piece) > len(self.data):
                    self.data += piece[len(self.data) - start :]
                progressed = True

    def message(self, expected_type: int) -> bytes | None:
        """The body of the first handshake message once it is complete."""
        data = self.data
        if len(data) < 4:
            return None
        if data[0] != expected_type:
            raise MalformedError(f"first handshake message has type {data[0]}")
        length = (data[1] << 16) | (data[2] << 8) | data[3]
        if 4 + length > self.limit:
            raise MalformedError(f"handshake message of {length} bytes exceeds the byte limit")
        if len(data) < 4 + length:
            return None
        return bytes(data[4 : 4 + length])


class _Packet:
    """Where one long-header Initial packet lies in its datagram."""

    __slots__ = ("data", "dcid", "end", "pn_off", "start", "version", "version_number")

    def __init__(
        self,
        data: bytes,
        start: int,
        pn_off: int,
        end: int,
        dcid: bytes,
        version_number: int,
        version: _Version,
    ) -> None:
        self.data = data
        self.start = start
        self.pn_off = pn_off
        self.end = end
        self.dcid = dcid
        self.version_number = version_number
        self.version = version


class QuicParser(Parser):
    name = "quic"
    __slots__ = (
        "_client_crypto",
        "_client_side",
        "_failures",
        "_hs",
        "_keys",
        "_server_crypto",
    )

    def __init__(self, sink: EventSink, flow: FlowRef, flow_uid: int, max_bytes: int) -> None:
        super().__init__(sink, flow, flow_uid, max_bytes)
        self._hs = Handshake()
        self._keys: tuple[_Keys, _Keys] | None = None
        self._client_crypto = _CryptoStream(max_bytes)
        self._server_crypto = _CryptoStream(max_bytes)
        self._failures = 0
        self._client_side: bool | None = None

    def datagram(self, from_orig: bool, data: bytes, ts_ns: int) -> None:
        # The client is the side that sent the first Initial seen, whatever the flow's
        # orientation (a capture may start after the client's first packet).
        if self._client_side is None:
            self._client_side = from_orig
        try:
            self._datagram(from_orig == self._client_side, data, ts_ns)
        except MalformedError as exc:
            self.malformed(str(exc))
            self._fail()

    def _fail(self) -> None:
        self._failures += 1
        if self._failures >= MAX_DECRYPT_FAILURES:
            self.end()

    def _datagram(self, from_client: bool, data: bytes, ts_ns: int) -> None:
        pos = 0
        n = len(data)
        for _ in range(MAX_PACKETS_PER_DATAGRAM):
            if pos + 7 > n or data[pos] & 0x80 == 0:
                return  # nothing left, or a short-header packet: 1-RTT, not readable
            version_number = int.from_bytes(data[pos + 1 : pos + 5], "big")
            version = version_parameters(version_number)
            if version is None:
                return
            off = pos + 5
            dcid_len = data[off]
            if dcid_len > 20 or off + 1 + dcid_len >= n:
                raise MalformedError(f"bad destination connection ID length {dcid_len}")
            dcid = data[off + 1 : off + 1 + dcid_len]
            off += 1 + dcid_len
            scid_len = data[off]
            if scid_len > 20:
                raise MalformedError(f"bad source connection ID length {scid_len}")
            off += 1 + scid_len
            ptype = (data[pos] >> 4) & 3
            if ptype == version.retry_type:
                return  # Retry: no length field, nothing to decrypt
            initial = ptype == version.initial_type
            if initial:
                token_len, off = _varint(data, off)
                off += token_len
            length, off = _varint(data, off)
            end = off + length
            if end > n:
                raise MalformedError("QUIC packet length runs past the datagram")
            if initial:
                packet = _Packet(data, pos, off, end, dcid, version_number, version)
                self._initial(from_client, packet, ts_ns)
                if self.done:
                    return
            pos = end

    def _initial(self, from_client: bool, packet: _Packet, ts_ns: int) -> None:
        if self._keys is None:
            if not from_client:
                return  # the server's Initial before any client one: keys unknown
            payload = self._first_keys(packet)
            self._hs.ts_ns = ts_ns
        else:
            payload = self._decrypt(from_client, packet)
        hs = self._hs
        if (hs.client_hello if from_client else hs.server_hello) is not None:
            return  # that side's hello is already read: the rest is not needed
        frames, error = crypto_frames(payload, packet.version.gquic_frames)
        if error:
            self.malformed(error)
        stream = self._client_crypto if from_client else self._server_crypto
        for offset, chunk in frames:
            stream.add(offset, chunk)
        if from_client:
            body = stream.message(1)
            if body is not None:
                hs.client_hello = parse_client_hello(body)
                self._client_crypto = _CryptoStream(0)  # frees the buffer
        else:
            body = stream.message(2)
            if body is not None:
                hs.server_hello = parse_server_hello(body)
                self._server_crypto = _CryptoStream(0)
        if hs.client_hello is not None and hs.server_hello is not None:
            self.end()

    def _first_keys(self, packet: _Packet) -> bytes:
        """Derive keys from a client Initial's DCID; return its decrypted payload."""
        for candidate in _candidates(packet.version_number):
            keys = initial_keys(candidate, packet.dcid)
            try:
                payload = self._open(keys[0], packet)
            except InvalidTag:
                continue
            self._keys = keys
            return payload
        raise MalformedError("Initial packet does not decrypt")

    def _decrypt(self, from_client: bool, packet: _Packet) -> bytes:
        assert self._keys is not None
        keys = self._keys[0] if from_client else self._keys[1]
        try:
            return self._open(keys, packet)
        except InvalidTag:
            if not from_client:
                raise MalformedError("Initial packet does not decrypt") from None
        # After a Retry or a version negotiation the client starts over with keys derived
        # from its new Destination CID (and the new version's salt).
        return self._first_keys(packet)

    @staticmethod
    def _open(keys: _Keys, packet: _Packet) -> bytes:
        data = packet.data
        start = packet.start
        pn_off = packet.pn_off
        sample_off = pn_off + 4
        if sample_off + 16 > packet.end:
            raise MalformedError("Initial packet too short for its header protection sample")
        mask = keys.hp.update(data[sample_off : sample_off + 16])
        first = data[start] ^ (mask[0] & 0x0F)
        pn_len = (first & 0x03) + 1
        header = bytearray(data[start : pn_off + pn_len])
        header[0] = first
        packet_number = 0
        for i in range(pn_len):
            byte = header[pn_off - start + i] ^ mask[1 + i]
            header[pn_off - start + i] = byte
            packet_number = (packet_number << 8) | byte
        nonce = (keys.iv ^ packet_number).to_bytes(12, "big")
        return keys.aead.decrypt(nonce, data[pn_off + pn_len : packet.end], bytes(header))

    def end(self) -> None:
        if self.done:
            return
        self.done = True
        if self._hs.seen_anything:
            self.sink.emit("quic", self._hs.event(self.flow, "quic", TlsMemo.of(self.sink)))
