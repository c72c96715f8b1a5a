"""The error hierarchy. Bad input is reported with the file and byte offset, never a traceback."""

from __future__ import annotations


class TapetumError(Exception):
    """Base class of every error Tapetum reports to a user."""


class ConfigError(TapetumError):
    """A configuration file or option is invalid."""


class InputError(TapetumError):
    """Input that cannot be read at all (missing file, wrong magic, unknown format)."""

    def __init__(self, path: str, offset: int | None, message: str) -> None:
        self.path = path
        self.offset = offset
        self.message = message
        where = f"{path}" if offset is None else f"{path} at byte {offset}"
        super().__init__(f"{where}: {message}")


class CaptureFormatError(InputError):
    """A capture file is not pcap/pcapng or its global header is broken."""


class ModelError(TapetumError):
    """A saved model cannot be used (version or feature-schema mismatch)."""


class StoreError(TapetumError):
    """The DuckDB store cannot be opened or queried."""


class NotFound(TapetumError):
    """A named object (incident, verdict, suppression) is not in the store."""


class InputWarning:
    """A recoverable problem in input: counted, reported once per kind with file and offset."""

    __slots__ = ("kind", "message", "offset", "path")

    def __init__(self, path: str, offset: int | None, kind: str, message: str) -> None:
        self.path = path
        self.offset = offset
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        where = self.path if self.offset is None else f"{self.path} at byte {self.offset}"
        return f"{where}: {self.message}"
