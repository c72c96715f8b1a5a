"""Domain-name features shared by the DNS detectors (DGA, tunnelling): the registered domain
(eTLD+1, from the Public Suffix List bundled with `publicsuffixlist`, no download), the labels
below it, and character statistics."""

from __future__ import annotations

import math
from collections import Counter
from functools import lru_cache

from publicsuffixlist import PublicSuffixList


@lru_cache(maxsize=2)
def psl(only_icann: bool = False) -> PublicSuffixList:
    """The bundled Public Suffix List, built on first use (it takes a noticeable moment) and
    shared: with private-section suffixes (cloudfront.net, github.io …), or ICANN's only."""
    return PublicSuffixList(only_icann=only_icann)


def normalize(name: str) -> str:
    """Lower case, no trailing dot; what DNS compares (names are case-insensitive)."""
    return name.strip().rstrip(".").lower()


@lru_cache(maxsize=262_144)
def registered_domain(name: str) -> str:
    """The domain a registrant controls ("www.bbc.co.uk" -> "bbc.co.uk").

    Names with no known public suffix (".local", ".lan", bare words) keep their last two labels,
    so "printer.corp.lan" -> "corp.lan": tunnels under a private zone still group per zone.
    """
    n = normalize(name)
    if not n:
        return ""
    reg = psl().privatesuffix(n)
    if reg is not None:
        return str(reg)
    labels = n.split(".")
    return ".".join(labels[-2:])


def subdomain(name: str) -> str:
    """The labels left of the registered domain ("a.b.example.com" -> "a.b")."""
    n = normalize(name)
    reg = registered_domain(n)
    if n == reg:
        return ""
    return n[: -len(reg) - 1] if reg else n


def entropy_bits(text: str) -> float:
    """Shannon entropy of the characters, bits per character (0 for empty text)."""
    if not text:
        return 0.0
    counts = Counter(text)
    n = len(text)
    return max(0.0, -sum(c / n * math.log2(c / n) for c in counts.values()))
