"""Registries: later work adds detectors, sources and sinks here without editing the pipeline.

A new component is one module, one line below, one test file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from tapetum.config import Config
from tapetum.detectors.base import StreamingDetector
from tapetum.errors import CaptureFormatError
from tapetum.sinks.base import Sink
from tapetum.sources.base import Source


def _scan(cfg: Config) -> StreamingDetector:
    from tapetum.detectors.scan import ScanDetector

    lag_s = max(cfg.meter.tcp_idle_s, cfg.meter.udp_idle_s, cfg.meter.icmp_idle_s)
    return ScanDetector(cfg.detectors.scan, lag_s=lag_s)


def _protocol(cfg: Config) -> StreamingDetector:
    from tapetum.detectors.protocol import ProtocolDetector

    return ProtocolDetector(cfg.detectors.protocol)


def _intel(cfg: Config) -> StreamingDetector:
    from tapetum.detectors.intel import IntelDetector

    return IntelDetector.from_config(cfg.detectors.intel)


def _bruteforce(cfg: Config) -> StreamingDetector:
    from tapetum.detectors.bruteforce import BruteforceDetector

    lag_s = max(cfg.meter.tcp_idle_s, cfg.meter.udp_idle_s, cfg.meter.icmp_idle_s)
    return BruteforceDetector(cfg.detectors.bruteforce, lag_s=lag_s)


def _beacon(cfg: Config) -> StreamingDetector:
    from tapetum.detectors.beacon import BeaconDetector

    lag_s = max(cfg.meter.tcp_idle_s, cfg.meter.udp_idle_s, cfg.meter.icmp_idle_s)
    return BeaconDetector(cfg.detectors.beacon, lag_s=lag_s)


def _dnstunnel(cfg: Config) -> StreamingDetector:
    from tapetum.detectors.dnstunnel import DnsTunnelDetector

    lag_s = max(cfg.meter.tcp_idle_s, cfg.meter.udp_idle_s, cfg.meter.icmp_idle_s)
    return DnsTunnelDetector(cfg.detectors.dnstunnel, lag_s=lag_s)


def _exfil(cfg: Config) -> StreamingDetector:
    from tapetum.detectors.exfil import ExfilDetector

    lag_s = max(cfg.meter.tcp_idle_s, cfg.meter.udp_idle_s, cfg.meter.icmp_idle_s)
    return ExfilDetector(cfg.detectors.exfil, lag_s=lag_s)


def _lateral(cfg: Config) -> StreamingDetector:
    from tapetum.detectors.lateral import LateralDetector

    lag_s = max(cfg.meter.tcp_idle_s, cfg.meter.udp_idle_s, cfg.meter.icmp_idle_s)
    return LateralDetector(cfg.detectors.lateral, lag_s=lag_s)


def _dos(cfg: Config) -> StreamingDetector:
    from tapetum.detectors.dos import DosDetector

    lag_s = max(cfg.meter.tcp_idle_s, cfg.meter.udp_idle_s, cfg.meter.icmp_idle_s)
    return DosDetector(cfg.detectors.dos, lag_s=lag_s)


def _anomaly(cfg: Config) -> StreamingDetector:
    from tapetum.detectors.anomaly import AnomalyDetector

    lag_s = max(cfg.meter.tcp_idle_s, cfg.meter.udp_idle_s, cfg.meter.icmp_idle_s)
    return AnomalyDetector(cfg.detectors.anomaly, lag_s=lag_s)


def _dga(cfg: Config) -> StreamingDetector:
    from tapetum.detectors.dga import DgaDetector

    lag_s = max(cfg.meter.tcp_idle_s, cfg.meter.udp_idle_s, cfg.meter.icmp_idle_s)
    return DgaDetector(cfg.detectors.dga, lag_s=lag_s)


def _kitsune(cfg: Config) -> StreamingDetector:
    from tapetum.detectors.kitsune import KitsuneDetector

    return KitsuneDetector(cfg.detectors.kitsune)


def _uba(cfg: Config) -> StreamingDetector:
    from tapetum.detectors.uba import UbaDetector

    return UbaDetector(cfg.detectors.uba)


#: Detector name -> factory taking the whole config (each factory passes on its own section).
DETECTORS: dict[str, Callable[[Config], StreamingDetector]] = {
    "scan": _scan,
    "dnstunnel": _dnstunnel,
    "exfil": _exfil,
    "bruteforce": _bruteforce,
    "beacon": _beacon,
    "protocol": _protocol,
    "intel": _intel,
    "lateral": _lateral,
    "dos": _dos,
    "anomaly": _anomaly,
    "dga": _dga,
    "kitsune": _kitsune,
    "uba": _uba,
}


def enabled_by_default(cfg: Config, name: str) -> bool:
    """A detector whose config section has `enabled = false` (costly ones, e.g. kitsune) is left
    out of the default set; named explicitly it is built anyway."""
    return bool(getattr(getattr(cfg.detectors, name, None), "enabled", True))


def build_detectors(cfg: Config, names: list[str] | None = None) -> list[StreamingDetector]:
    """The named detectors, or (names None) every registered one enabled by default."""
    chosen = [n for n in DETECTORS if enabled_by_default(cfg, n)] if names is None else names
    unknown = [n for n in chosen if n not in DETECTORS]
    if unknown:
        from tapetum.errors import ConfigError

        raise ConfigError(
            f"unknown detector(s): {', '.join(unknown)}; known: {', '.join(DETECTORS)}"
        )
    return [DETECTORS[n](cfg) for n in chosen]


def _pcap_probe(path: str, head: bytes) -> bool:
    magics = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1",
              b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a")  # fmt: skip
    return head[:4] in magics


def _pcap_open(path: str) -> Source:
    from tapetum.sources.pcap import CaptureReader

    return CaptureReader(path)


def _auth_probe(kind: str) -> Callable[[str, bytes], bool]:
    def probe(path: str, head: bytes) -> bool:
        from tapetum.sources import authlog, winauth

        fn = {"syslog": authlog.probe_syslog, "json": authlog.probe_json,
              "evtx": winauth.probe_evtx}[kind]  # fmt: skip
        return fn(path, head)

    return probe


def _auth_open(kind: str) -> Callable[[str], Source]:
    def opener(path: str) -> Source:
        from tapetum.sources import authlog, winauth

        if kind == "syslog":
            return authlog.AuthLogSource(path)
        return authlog.JsonAuthSource(path) if kind == "json" else winauth.EvtxSource(path)

    return opener


def _src(name: str) -> Any:
    """A source module imported on first use (Zeek logs, Suricata EVE)."""
    import importlib

    return importlib.import_module(f"tapetum.sources.{name}")


#: Source name -> (probe, opener). A probe gets the path and the input's first bytes
#: (`HEAD_BYTES`, decompressed when the file is gzip; empty for a folder). First match wins.
SOURCES: dict[str, tuple[Callable[[str, bytes], bool], Callable[[str], Source]]] = {
    "pcap": (_pcap_probe, _pcap_open),
    "zeek": (lambda p, h: _src("zeek").probe(p, h), lambda p: _src("zeek").open_source(p)),
    "eve": (lambda p, h: _src("eve").probe(p, h), lambda p: _src("eve").open_source(p)),
    "evtx": (_auth_probe("evtx"), _auth_open("evtx")),
    "auth-syslog": (_auth_probe("syslog"), _auth_open("syslog")),
    "auth-json": (_auth_probe("json"), _auth_open("json")),
}

HEAD_BYTES = 4096


def read_head(path: str) -> bytes:
    """The first bytes of an input as probes see them (a folder has none)."""
    import gzip
    import zlib

    if os.path.isdir(path):
        return b""
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as gz:
                return gz.read(HEAD_BYTES)
        except (OSError, EOFError, zlib.error):
            return head  # a broken gzip: let the readers name the problem
    return head


def open_source(path: str) -> Source:
    """Open an input by its content (not its name)."""
    try:
        head = read_head(path)
    except OSError as exc:
        raise CaptureFormatError(path, None, exc.strerror or str(exc)) from None
    for probe, opener in SOURCES.values():
        if probe(path, head):
            return opener(path)
    # No probe matched: let the capture reader name the problem precisely (empty, bad magic …).
    return _pcap_open(path)


def _jsonl_sink(target: str | Path | IO[bytes], config: Config, **_: Any) -> Sink:
    from tapetum.sinks.jsonl import JsonlSink

    return JsonlSink(target, flow_sequences=config.output.flow_sequences_in_json)


def _duckdb_sink(target: str | Path | IO[bytes], config: Config, **kw: Any) -> Sink:
    from tapetum.sinks.duckdb import DuckDBSink

    assert not hasattr(target, "write"), "the DuckDB sink needs a file path"
    return DuckDBSink(str(target), kw["run_id"])


def _export(module: str, cls: str, **fixed: Any) -> Callable[..., Sink]:
    """Factory of an export sink `tapetum.sinks.<module>.<cls>(target, **fixed)` (SIEM formats)."""

    def make(target: str | Path | IO[bytes], config: Config, **_: Any) -> Sink:
        import importlib

        sink: Sink = getattr(importlib.import_module(f"tapetum.sinks.{module}"), cls)(
            target, **fixed
        )
        return sink

    return make


#: Sink name -> factory(target, config, run_id=…).
SINKS: dict[str, Callable[..., Sink]] = {
    "jsonl": _jsonl_sink,
    "duckdb": _duckdb_sink,
    "ocsf": _export("ocsf", "OcsfSink"),
    "ecs": _export("ecs", "EcsSink"),
    "syslog": _export("syslog", "SyslogSink"),
    "syslog+cef": _export("syslog", "SyslogSink", cef=True),
    "webhook": _export("webhook", "WebhookSink"),
    "webhook+slack": _export("webhook", "WebhookSink", slack=True),
}

#: Sinks `--export KIND:TARGET` may name (the store and EVE JSON lines have their own options).
EXPORTS = ("ocsf", "ecs", "syslog", "syslog+cef", "webhook", "webhook+slack")


def build_export(spec: str, config: Config) -> Sink:
    """`KIND:TARGET` (e.g. `ocsf:alerts.json`, `syslog+cef:tcp://127.0.0.1:6514`) -> a sink."""
    from tapetum.errors import ConfigError

    kind, sep, target = spec.partition(":")
    if not sep or not target or kind not in EXPORTS:
        raise ConfigError(f"--export {spec!r}: expected KIND:TARGET with KIND one of "
                          f"{', '.join(EXPORTS)}")  # fmt: skip
    return SINKS[kind](target, config)
