"""Streaming capture writers: classic pcap (µs or ns) and pcapng (several interfaces).

Written by hand rather than with `dpkt.pcap.Writer`: we need nanosecond pcap and pcapng with
several interfaces of different link types, and the hand-written path is a single `struct.pack`
per packet.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal

from tapetum.testing.wire import Packet, raw_ip

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101

Format = Literal["pcap", "pcap-ns", "pcapng"]
FORMATS: tuple[Format, ...] = ("pcap", "pcap-ns", "pcapng")

_SNAPLEN = 262144
_RECORD = struct.Struct("<IIII")
_EPB = struct.Struct("<IIIIIII")


@dataclass(frozen=True, slots=True)
class Interface:
    """A pcapng interface. Frames are built as Ethernet; a RAW interface gets the bare IP packet."""

    name: str
    linktype: int = LINKTYPE_ETHERNET


class CaptureWriter:
    """Write packets in time order to a capture file, never holding more than one in memory.

    Classic pcap has a single link type, so every packet is written as Ethernet there whatever its
    interface; pcapng writes one interface block per entry of `interfaces`, and adds an Ethernet
    interface when a packet names one not listed (pcapng allows interface blocks mid-file).
    """

    def __init__(
        self,
        path: str | Path,
        fmt: Format = "pcap",
        interfaces: Sequence[Interface] = (Interface("eth0"),),
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown capture format {fmt!r}; expected one of {FORMATS}")
        self.path = Path(path)
        self.fmt = fmt
        self.interfaces = tuple(interfaces)
        self.packets = 0
        self.bytes = 0
        self._file: BinaryIO = open(self.path, "wb", buffering=1 << 20)  # noqa: SIM115
        if fmt == "pcapng":
            self._write_pcapng_header()
        else:
            magic = 0xA1B23C4D if fmt == "pcap-ns" else 0xA1B2C3D4
            self._file.write(
                struct.pack("<IHHiIII", magic, 2, 4, 0, 0, _SNAPLEN, LINKTYPE_ETHERNET)
            )

    def _write_pcapng_header(self) -> None:
        shb_body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
        self._write_block(0x0A0D0D0A, shb_body)
        for interface in self.interfaces:
            self._write_interface(interface)

    def _write_interface(self, interface: Interface) -> None:
        options = _option(2, interface.name.encode()) + _option(9, b"\x09") + _option(0, b"")  # ns
        self._write_block(1, struct.pack("<HHI", interface.linktype, 0, _SNAPLEN) + options)

    def _write_block(self, block_type: int, body: bytes) -> None:
        length = 12 + len(body)
        self._file.write(struct.pack("<II", block_type, length) + body + struct.pack("<I", length))

    def write(self, packet: Packet) -> None:
        ts_ns, frame, interface = packet
        if self.fmt == "pcapng":
            while interface >= len(self.interfaces):
                self.interfaces += (Interface(f"eth{len(self.interfaces)}"),)
                self._write_interface(self.interfaces[-1])
            if self.interfaces[interface].linktype == LINKTYPE_RAW:
                frame = raw_ip(frame)
            n = len(frame)
            pad = -n & 3
            length = 32 + n + pad
            header = _EPB.pack(6, length, interface, ts_ns >> 32, ts_ns & 0xFFFFFFFF, n, n)
            self._file.write(header + frame + b"\x00" * pad + length.to_bytes(4, "little"))
        else:
            n = len(frame)
            seconds, fraction = divmod(ts_ns, 1_000_000_000)
            if self.fmt == "pcap":
                fraction //= 1000
            self._file.write(_RECORD.pack(seconds, fraction, n, n) + frame)
        self.packets += 1
        self.bytes += n

    def write_all(self, packets: Iterable[Packet]) -> None:
        for packet in packets:
            self.write(packet)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\x00" * (-len(value) & 3)


def write_capture(
    path: str | Path,
    packets: Iterable[Packet],
    fmt: Format = "pcap",
    interfaces: Sequence[Interface] = (Interface("eth0"),),
) -> CaptureWriter:
    """Write `packets` (already in time order) to `path`; returns the closed writer's counts."""
    with CaptureWriter(path, fmt, interfaces) as writer:
        writer.write_all(packets)
    return writer
