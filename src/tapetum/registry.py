"""Registries: later work adds detectors, sources and sinks here without editing the pipeline.

A new component is one module, one line below, one test file.
"""

from __future__ import annotations

from collections.abc import Callable

from tapetum.config import Config
from tapetum.detectors.base import StreamingDetector


def _scan(cfg: Config) -> StreamingDetector:
    from tapetum.detectors.scan import ScanDetector

    lag_s = max(cfg.meter.tcp_idle_s, cfg.meter.udp_idle_s, cfg.meter.icmp_idle_s)
    return ScanDetector(cfg.detectors.scan, lag_s=lag_s)


#: Detector name -> factory taking the whole config (each factory passes on its own section).
DETECTORS: dict[str, Callable[[Config], StreamingDetector]] = {
    "scan": _scan,
}


def build_detectors(cfg: Config, names: list[str] | None = None) -> list[StreamingDetector]:
    chosen = list(DETECTORS) if names is None else names
    unknown = [n for n in chosen if n not in DETECTORS]
    if unknown:
        from tapetum.errors import ConfigError

        raise ConfigError(f"unknown detector(s): {', '.join(unknown)}; known: {', '.join(DETECTORS)}")
    return [DETECTORS[n](cfg) for n in chosen]
