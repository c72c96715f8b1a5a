"""Pseudonymised exports: prefix-preserving Crypto-PAn for addresses, keyed HMAC for user names.

`PseudonymSink(inner, Pseudonymizer.from_key_file(path))` wraps any sink. Every address in the
records and flows it passes on is replaced, including addresses written inside free text
(explanations, summaries, titles), so a SIEM sees consistent pseudonyms: two hosts in one /24
stay in one /24, and the same key gives the same pseudonym in every export and every run.

The key never lives in the config text: it comes from a file (`--pseudonymize-key-file`) or the
environment variable `TAPETUM_PSEUDONYM_KEY`. Any secret of at least 16 bytes works; the
Crypto-PAn key (32 bytes) and the HMAC key are derived from it with HMAC-SHA256 and distinct labels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from tapetum.detectors.common import is_internal
from tapetum.errors import ConfigError
from tapetum.flows.meter import FlowBatch
from tapetum.sinks.base import Record, Sink

ENV_KEY = "TAPETUM_PSEUDONYM_KEY"
MIN_KEY_BYTES = 16
#: Hex digits of the HMAC kept for a user pseudonym (64 bits: collisions negligible per site).
USER_HEX = 16
#: Pseudonyms remembered per kind (Crypto-PAn costs one AES block per address bit).
CACHE_MAX = 200_000

# Candidate addresses inside text: dotted quads, and colon groups with at least two colons
# (checked with ipaddress, so times like 10:00:00 that fail to parse are left alone).
_V4 = r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])"
_V6 = r"(?<![0-9A-Fa-f:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![0-9A-Fa-f:])"  # noqa: E501
_ADDR_RE = re.compile(f"{_V4}|{_V6}")
#: Fields holding user names (records and their builtins form).
USER_FIELDS = frozenset({"user", "users", "analyst"})


def load_key(path: str | Path | None = None, env: dict[str, str] | None = None) -> bytes:
    """The secret from a file (raw bytes, surrounding whitespace ignored) or the environment."""
    if path is not None:
        try:
            raw = Path(path).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the pseudonymisation key: {exc}") from None
        where = str(path)
    else:
        text = (os.environ if env is None else env).get(ENV_KEY, "")
        raw, where = text.strip().encode(), ENV_KEY
    if len(raw) < MIN_KEY_BYTES:
        raise ConfigError(
            f"{where}: the pseudonymisation key needs at least {MIN_KEY_BYTES} bytes "
            f"(e.g. `head -c 32 /dev/urandom | base64 > key`)"
        )
    return raw


class Pseudonymizer:
    """Keyed, deterministic replacement of addresses (Crypto-PAn) and user names (HMAC)."""

    def __init__(self, secret: bytes) -> None:
        try:
            from yacryptopan import CryptoPAn  # optional extra `pseudonym`
        except ImportError:
            raise ConfigError(
                "pseudonymisation needs yacryptopan: pip install 'tapetum[pseudonym]'"
            ) from None

        if len(secret) < MIN_KEY_BYTES:
            raise ConfigError(f"the pseudonymisation key needs at least {MIN_KEY_BYTES} bytes")
        pan_key = hmac.new(secret, b"tapetum crypto-pan", hashlib.sha256).digest()
        self._pan = CryptoPAn(pan_key)
        self._user_key = hmac.new(secret, b"tapetum user", hashlib.sha256).digest()
        self._ips: dict[str, str] = {}
        self._users: dict[str, str] = {}
        #: Pseudonyms of internal addresses: direction (inbound/outbound/lateral) survives.
        self._inside: set[str] = set()

    @classmethod
    def from_key_file(cls, path: str | Path) -> Pseudonymizer:
        return cls(load_key(path))

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Pseudonymizer:
        return cls(load_key(None, env))

    # -- single values ------------------------------------------------------------------------

    def ip(self, addr: str) -> str:
        """The pseudonym of an address; text that is not an address comes back unchanged."""
        out = self._ips.get(addr)
        if out is not None:
            return out
        try:
            parsed = ipaddress.ip_address(addr)
        except ValueError:
            return addr
        out = str(self._pan.anonymize(str(parsed)))
        if len(self._ips) < CACHE_MAX:
            self._ips[addr] = out
            if is_internal(addr):
                self._inside.add(out)
        return out

    def is_internal(self, pseudonym: str) -> bool:
        """Whether the address behind a pseudonym is inside the monitored networks (known for
        the first CACHE_MAX addresses; beyond that the pseudonym itself is judged)."""
        return pseudonym in self._inside or is_internal(pseudonym)

    def user(self, name: str) -> str:
        if not name:
            return name
        out = self._users.get(name)
        if out is None:
            digest = hmac.new(self._user_key, name.encode(), hashlib.sha256).hexdigest()
            out = "user-" + digest[:USER_HEX]
            if len(self._users) < CACHE_MAX:
                self._users[name] = out
        return out

    def text(self, s: str) -> str:
        """Free text with every embedded address replaced (and user names known so far)."""

        def sub(m: re.Match[str]) -> str:
            return self.ip(m.group(0))

        out = _ADDR_RE.sub(sub, s)
        # Names already pseudonymised elsewhere in the record (e.g. "users") must not survive
        # verbatim in an explanation either. Longest first so "bob" does not split "bobby".
        for name in sorted(self._users, key=len, reverse=True):
            if name in out:
                out = re.sub(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", self._users[name], out)
        return out

    def value(self, v: Any, key: str = "") -> Any:
        """A JSON-like value (dicts, lists, strings, numbers) with addresses and users replaced."""
        if isinstance(v, str):
            return self.user(v) if key in USER_FIELDS else self.text(v)
        if isinstance(v, dict):
            # User fields first: their names are then replaced inside the free text too.
            order = sorted(v, key=lambda k: k not in USER_FIELDS)
            done = {k: self.value(v[k], k) for k in order}
            return {k: done[k] for k in v}
        if isinstance(v, list | tuple):
            return [self.value(x, key) for x in v]
        return v

    # -- records and flows --------------------------------------------------------------------

    def record(self, r: Record) -> Record:
        """The same record type with every string field pseudonymised."""
        data = self.value(msgspec.to_builtins(r))
        out: Record = msgspec.convert(data, type(r))
        return out

    def flows(self, fb: FlowBatch) -> FlowBatch:
        """A copy of the batch with pseudonymous addresses; community ids are recomputed from
        them (the originals would let anyone who knows a flow confirm its real addresses)."""
        from tapetum.flows.community import community_id_array
        from tapetum.flows.key import addr_parse

        n = len(fb)
        if n == 0:
            return fb
        src = [self.ip(a) for a in fb.src_ip]
        dst = [self.ip(a) for a in fb.dest_ip]
        halves = [addr_parse(a) for a in src], [addr_parse(a) for a in dst]
        s_hi = np.array([h for h, _ in halves[0]], dtype=np.uint64)
        s_lo = np.array([lo for _, lo in halves[0]], dtype=np.uint64)
        d_hi = np.array([h for h, _ in halves[1]], dtype=np.uint64)
        d_lo = np.array([lo for _, lo in halves[1]], dtype=np.uint64)
        num = fb.num
        cids = community_id_array(
            s_hi, s_lo, d_hi, d_lo, num["proto"], num["src_port"], num["dest_port"]
        )
        return dataclasses.replace(
            fb,
            src_hi=s_hi,
            src_lo=s_lo,
            dst_hi=d_hi,
            dst_lo=d_lo,
            src_ip=src,
            dest_ip=dst,
            community_id=cids if fb.community_id else [],
        )


class PseudonymSink:
    """Any sink, fed pseudonymised records and flows."""

    def __init__(self, inner: Sink, pseudonymizer: Pseudonymizer) -> None:
        self.inner = inner
        self.p = pseudonymizer
        if hasattr(inner, "internal"):
            inner.internal = pseudonymizer.is_internal

    def write_flows(self, flows: FlowBatch, services: list[str]) -> None:
        self.inner.write_flows(self.p.flows(flows), services)

    def write(self, records: list[Record]) -> None:
        self.inner.write([self.p.record(r) for r in records])

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()

    def warnings(self) -> list[str]:
        inner: list[str] = getattr(self.inner, "warnings", list)()
        return inner


def wrap(p: Pseudonymizer | None) -> Callable[[Sink], Sink]:
    """A function that wraps a sink when pseudonymisation is on, else returns it as it is."""
    return (lambda s: PseudonymSink(s, p)) if p is not None else (lambda s: s)
