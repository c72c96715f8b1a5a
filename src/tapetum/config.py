"""Configuration: one TOML file parsed once into typed structs that reject unknown keys.

Every option has a default and a one-line doc. Each component receives only its own section.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import msgspec

from tapetum.errors import ConfigError
from tapetum.flows.meter import MeterConfig

_METER = MeterConfig()  # the meter's own defaults are the one source of truth


class MeterSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Idle timeout of TCP connections, seconds (Zeek: tcp_inactivity_timeout).
    tcp_idle_s: float = _METER.tcp_idle_s
    #: Seconds a closed (FIN both ways or RST) TCP connection lingers (Zeek: tcp_close_delay).
    tcp_closed_s: float = _METER.tcp_closed_s
    #: Idle timeout of UDP flows, seconds.
    udp_idle_s: float = _METER.udp_idle_s
    #: Idle timeout of ICMP flows, seconds.
    icmp_idle_s: float = _METER.icmp_idle_s
    #: Idle timeout of other IP protocols, seconds.
    other_idle_s: float = _METER.other_idle_s
    #: Split flows longer than this many seconds (0: never, as in Zeek).
    active_s: float = _METER.active_s
    #: Cap on concurrent flows; beyond it the least recently active are evicted and counted.
    max_flows: int = _METER.max_flows
    #: Community ID seed.
    community_id_seed: int = _METER.seed

    def to_meter(self) -> MeterConfig:
        fields = msgspec.structs.asdict(self)
        fields["seed"] = fields.pop("community_id_seed")
        return dataclasses.replace(_METER, **fields)


class ProtocolSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Parse application metadata (DNS, TLS, HTTP, SSH, QUIC) at all.
    enabled: bool = True
    #: Payload packets per direction handed to the parsers (DNS ports: every packet).
    max_payload_packets: int = 10
    #: Ports whose every packet is parsed as DNS (53 DNS, 5353 mDNS, 5355 LLMNR).
    dns_ports: list[int] = msgspec.field(default_factory=lambda: [53, 5353, 5355])
    #: Flows with parser state kept at once; the oldest are dropped beyond it.
    max_flows: int = 200_000


class ScanSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Length of the window in which probes are counted, seconds.
    window_s: float = 300.0
    #: Distinct ports on one host that make a vertical scan.
    vertical_ports: int = 25
    #: Distinct hosts probed on one port that make a horizontal scan.
    horizontal_hosts: int = 25
    #: Distinct hosts sent ICMP echo requests that make a ping sweep.
    sweep_hosts: int = 10
    #: Distinct addresses one host sends ARP requests for that make an ARP sweep (a router
    #: resolving its clients asks for many too: it learns its own normal and is judged by it).
    arp_hosts: int = 20
    #: Longer window for slow scans that stay under the thresholds in every `window_s` (0: off).
    slow_window_s: float = 3600.0
    #: Distinct probes kept for the slow window; beyond it the rest are dropped and counted.
    slow_max_probes: int = 1_000_000
    #: Count only probes that failed or carried no data (S0, REJ, RSTO/RSTOS0, OTH, SH …).
    failed_only: bool = True


class ProtocolAnomalySection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Window after an anomaly's first sighting in which repeats are counted before the alert.
    window_s: float = 300.0
    #: An (entity, anomaly, server) episode ends after this many quiet seconds (then: a new alert).
    episode_gap_s: float = 3600.0
    #: Alert on self-signed server certificates.
    self_signed: bool = True
    #: Alert on expired or not yet valid server certificates.
    expired: bool = True
    #: Alert when the SNI matches neither the certificate's subject CN nor any SAN.
    sni_mismatch: bool = True
    #: Alert on HTTP Basic authorization sent in cleartext HTTP.
    cleartext_credentials: bool = True
    #: Alert on a service found on a port of another service (see `port_services`).
    unexpected_port: bool = True
    #: Also alert on a service on any port outside its own standard ports (noisy on real networks).
    unexpected_port_strict: bool = False
    #: Standard ports per service as the parsers name it (ssh, tls, quic, http, and other
    #: well-known services whose ports another protocol should not use).
    port_services: dict[str, list[int]] = msgspec.field(
        default_factory=lambda: {
            "ssh": [22, 2222],
            "tls": [443, 465, 563, 636, 853, 989, 990, 992, 993, 994, 995, 5061, 6697, 8443],
            "quic": [443, 784, 853, 8443],
            "http": [80, 591, 3128, 8000, 8008, 8080, 8081, 8888],
            "dns": [53],
            "ftp": [20, 21],
            "telnet": [23],
            "smtp": [25, 587],
            "rdp": [3389],
            "smb": [139, 445],
        }
    )
    #: Alert on client fingerprints (JA4, else JA3) seen from one host only and rarely.
    rare_fingerprint: bool = True
    #: TLS client hellos seen before rare fingerprints are judged (warm-up).
    rare_warmup_handshakes: int = 200
    #: Distinct client hosts seen before rare fingerprints are judged (warm-up).
    rare_warmup_hosts: int = 10
    #: A fingerprint is rare below this share of all client hellos seen.
    rare_max_share: float = 0.01
    #: Distinct fingerprints remembered; beyond it new ones are counted and not tracked.
    max_fingerprints: int = 100_000
    #: Open episodes kept at once; beyond it new ones are counted and dropped.
    max_episodes: int = 100_000


class IntelSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: DuckDB store whose `intel` table is loaded (`tapetum analyze` fills in its --store).
    store: str | None = None
    #: Indicator files (plain lists or STIX 2.1 bundles) loaded directly, besides the store.
    files: list[str] = msgspec.field(default_factory=list)
    #: Indicators below this confidence (0-100) do not alert.
    min_confidence: int = 0
    #: Window after a match's first sighting in which repeats are counted before the alert.
    window_s: float = 300.0
    #: An (entity, indicator) episode ends after this many quiet seconds.
    episode_gap_s: float = 3600.0
    #: Open episodes kept at once; beyond it new ones are counted and dropped.
    max_episodes: int = 100_000


class DetectorsSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    scan: ScanSection = msgspec.field(default_factory=ScanSection)
    protocol: ProtocolAnomalySection = msgspec.field(default_factory=ProtocolAnomalySection)
    intel: IntelSection = msgspec.field(default_factory=IntelSection)


class IncidentSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Alerts about one entity closer than this in time join the same incident, seconds.
    gap_s: float = 3600.0


class OutputSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Include the first-packets sequences (sizes, directions, times) in JSON flow events.
    flow_sequences_in_json: bool = False


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    meter: MeterSection = msgspec.field(default_factory=MeterSection)
    protocols: ProtocolSection = msgspec.field(default_factory=ProtocolSection)
    detectors: DetectorsSection = msgspec.field(default_factory=DetectorsSection)
    incidents: IncidentSection = msgspec.field(default_factory=IncidentSection)
    output: OutputSection = msgspec.field(default_factory=OutputSection)


def load_config(path: str | Path | None) -> Config:
    """Read a TOML config file (None: all defaults). Unknown keys are errors."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    try:
        return msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{p}: {exc}") from None
