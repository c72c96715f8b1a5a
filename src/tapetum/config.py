"""Configuration: one TOML file parsed once into typed structs that reject unknown keys.

Every option has a default and a one-line doc. Each component receives only its own section.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

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
    #: A notBefore further in the future than this many days means the capture's clock is wrong
    #: (anonymised captures dated 2000), not the certificate: counted, not alerted.
    not_yet_valid_max_days: float = 365.0
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


class DnsTunnelSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Length of the window in which a host's queries to one parent domain are counted, seconds.
    window_s: float = 600.0
    #: Tunnel evidence in one window that makes a tunnel (score 0.5): distinct encoded-looking
    #: subdomains of one parent domain, weighted up to 2x by the TXT/NULL/CNAME/MX share and up
    #: to 2x by volume (see `volume_bytes`). A host's own normal raises the bar (2x its maximum).
    min_subdomains: int = 100
    #: Mean subdomain length (characters) at which names count fully as encoded data; names of
    #: 8 characters or fewer do not count at all.
    min_subdomain_len: int = 24
    #: Mean character entropy of the subdomains (bits/char) at which names count fully as
    #: encoded data; 1 bit/char below it they do not count at all.
    min_entropy_bits: float = 3.5
    #: Bytes of names sent plus answer data received for one parent domain per window at which
    #: the volume factor of the tunnel evidence is full (2x).
    volume_bytes: int = 100_000
    #: Characters of distinct encoded-looking subdomains sent to one parent domain in a window
    #: that make DNS exfiltration (score 0.5): upstream data hidden in names.
    exfil_bytes: int = 100_000
    #: A parent domain queried by at least this many hosts is common (CDN, cloud, telemetry) ...
    common_domain_hosts: int = 8
    #: ... and its bars (tunnel and exfiltration) are this many times higher.
    common_domain_factor: float = 4.0
    #: Parent domains never judged (a name equal to or under one of them): anti-virus cloud
    #: lookups and DNS block lists encode hashes and addresses in names by design. Defaults:
    #: Sophos, McAfee GTI, ESET LiveGrid, Team Cymru hash registry, Spamhaus, SpamCop, SORBS,
    #: Barracuda, SURBL, URIBL, abuseat CBL, DNSWL, Mailspike, SenderScore.
    allowlist: list[str] = msgspec.field(
        default_factory=lambda: [
            "sophosxl.net",
            "avqs.mcafee.com",
            "avts.mcafee.com",
            "e5.sk",
            "hash.cymru.com",
            "spamhaus.org",
            "spamhaus.net",
            "spamcop.net",
            "sorbs.net",
            "barracudacentral.org",
            "surbl.org",
            "uribl.com",
            "abuseat.org",
            "dnswl.org",
            "mailspike.net",
            "senderscore.com",
        ]
    )
    #: (host, parent domain) pairs tracked per window; more are counted as dropped.
    max_pairs: int = 100_000
    #: Distinct subdomains remembered per (host, parent domain, window); more still count in
    #: queries and bytes, and are counted as distinct (a tunnel rarely repeats a name).
    max_names_per_pair: int = 20_000
    #: Hosts with a learned baseline, and parent domains with a learned host count (prevalence).
    max_hosts: int = 100_000
    max_domains: int = 200_000


class ExfilSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Networks of the monitored site (CIDR); empty: private, link-local and loopback addresses.
    internal_networks: list[str] = msgspec.field(
        default_factory=lambda: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]
    )
    #: Window lengths, seconds: short windows catch bursts, long ones slow uploads. A pair that
    #: alerted in a short window is not reported again for the long window around it.
    windows_s: list[float] = msgspec.field(default_factory=lambda: [600.0, 3600.0])
    #: Never alert on fewer bytes sent by the internal host in a window, whatever its baseline.
    min_bytes_out: int = 20_000_000
    #: Upload/download ratio (bytes sent / received) an upload needs when the host has a baseline.
    min_ratio: float = 3.0
    #: Without a baseline for the host (first run): bytes sent to one destination in a window ...
    floor_bytes: int = 100_000_000
    #: ... with at least this upload/download ratio (to a destination only this host talks to;
    #: each further internal host that talks to it raises the bar, see `common_factor`).
    floor_ratio: float = 10.0
    #: Windows with external traffic a host needs before its own baseline replaces the floor.
    min_history_windows: int = 6
    #: Windows at one hour of the day before that hour's own profile is used.
    min_hour_windows: int = 3
    #: Upper edge of normal: EWMA mean + this many EW mean absolute deviations of log10 bytes.
    mad_k: float = 4.0
    #: EWMA weight of a new window; each update is clipped to the edge of normal, so one burst
    #: cannot rewrite the baseline.
    alpha: float = 0.1
    #: Most a destination's prevalence raises the bar: bar x min(this, hosts that talk to it).
    common_factor: float = 10.0
    #: Bar multiplier when the host has talked to the destination before (not a first contact).
    known_destination_factor: float = 2.0
    #: Earlier days on which a pair uploaded at least `min_bytes_out` within an hour of this
    #: window's hour that make it routine (a nightly backup) ...
    routine_days: int = 2
    #: ... judged against this many times its usual (median) volume at that hour.
    routine_factor: float = 4.0
    #: Offset of local time from UTC, hours (hour-of-day profiles and explanations).
    utc_offset_h: float = 0.0
    #: Internal hosts with a profile; destinations with a prevalence count; pairs with a
    #: recurrence history; (host, destination) pairs per window. Beyond: dropped and counted.
    max_hosts: int = 50_000
    max_destinations: int = 200_000
    max_routine_pairs: int = 50_000
    max_pairs_per_window: int = 200_000


def _bruteforce_ports() -> dict[str, list[int]]:
    from tapetum.features.bruteforce import DEFAULT_SERVICE_PORTS

    return {k: list(v) for k, v in DEFAULT_SERVICE_PORTS.items()}


def _bruteforce_max_bytes() -> dict[str, int]:
    from tapetum.features.bruteforce import DEFAULT_MAX_BYTES_TOCLIENT

    return dict(DEFAULT_MAX_BYTES_TOCLIENT)


class BruteforceSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Length of the window in which login attempts are counted, seconds.
    window_s: float = 300.0
    #: Failed-looking attempts on one target in a window that make password guessing
    #: (Zeek's detect-bruteforcing: 30 failures in 30 min).
    guess_attempts: int = 20
    #: Targets with failed-looking attempts in a window that make password spraying.
    spray_targets: int = 15
    #: Web ports (the "web" service) need this many times the evidence of other services.
    web_factor: float = 5.0
    #: Web attempts count only if their sizes are this similar (robust coefficient of variation).
    web_max_cv: float = 0.15
    #: Web attempts count only if they keep the server busy: summed connection time over their
    #: span at least this (tools go back to back or in parallel; beacons and polling idle between).
    web_min_busy: float = 0.5
    #: Sizes within this robust coefficient of variation count as fully similar; beyond it the
    #: evidence is discounted, down to half at 1.0.
    similar_cv: float = 0.25
    #: Below this share of failed-looking attempts the evidence is discounted proportionally.
    min_failure_ratio: float = 0.5
    #: A failed-looking attempt has at most this many packets (both directions).
    max_packets: int = 60
    #: A failed-looking attempt lasts at most this long, seconds.
    max_duration_s: float = 60.0
    #: Per service ("default" for the rest): most payload bytes from the server in a failed attempt.
    max_bytes_toclient: dict[str, int] = msgspec.field(default_factory=_bruteforce_max_bytes)
    #: Service name -> TCP ports (SSH is also recognised on any port by its banner).
    ports: dict[str, list[int]] = msgspec.field(default_factory=_bruteforce_ports)
    #: (source, service) baselines kept; beyond it new ones are not learnt (and counted).
    max_baselines: int = 100_000
    #: Flows tagged by their application events (SSH banner, HTTP auth) awaiting their flow.
    max_tagged_flows: int = 200_000
    #: Auth logs: failed logins (exact outcomes) from one source to one service in a window
    #: that make password guessing (fail2ban's default bans at 5 in 10 min).
    auth_guess_failures: int = 10
    #: Auth logs: distinct user names with failed logins from one source and service in a
    #: window that make password spraying ...
    auth_spray_users: int = 5
    #: ... when the median of failures per user name is at most this (few tries each).
    auth_spray_max_per_user: float = 3.0
    #: Auth logs: lines may arrive this late (seconds) before a window is judged.
    auth_lag_s: float = 60.0
    #: Auth logs: (source, service) tallies per window at most (further ones counted, dropped).
    max_auth_sources: int = 100_000


class BeaconSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Connections a series needs before it is scored.
    min_connections: int = 10
    #: Connection start times kept per series (the newest).
    max_points: int = 512
    #: Series kept at once; beyond it the least recently active are evicted (and counted).
    max_series: int = 50_000
    #: Combined regularity (0..1) at which the alert score is 0.5 (the alert threshold).
    alert_regularity: float = 0.75
    #: Intervals within this fraction of the period (of k periods: times sqrt(k)) count as on
    #: the period's grid; covers implants' jitter (±30 %) and missed beacons.
    jitter_tolerance: float = 0.35
    #: Median intervals shorter than this are bursts, not beacons, seconds.
    min_period_s: float = 1.0
    #: A series is complete (and scored) when idle for this many periods (plus the meter's lag).
    idle_periods: float = 5.0
    #: A running series is scored this long after it began and again after each such period
    #: (data time), so long-lived beacons alert before they end, seconds.
    recheck_s: float = 600.0
    #: Series are swept for completion at most this often in data time, seconds.
    check_interval_s: float = 60.0
    #: In long runs a series must span this long for full coverage credit, seconds.
    coverage_horizon_s: float = 3600.0
    #: A destination contacted by at least this share of the sources seen is popular, not C2 ...
    prevalence_fraction: float = 0.5
    #: ... once at least this many sources contacted it.
    prevalence_min_sources: int = 5
    #: Regularity multiplier for popular destinations.
    prevalence_weight: float = 0.6
    #: Periodic infrastructure ("port/proto"): DNS, NTP, DHCP, NetBIOS, SSDP, mDNS, LLMNR.
    infrastructure_ports: list[str] = msgspec.field(
        default_factory=lambda: [
            "53/udp", "53/tcp", "123/udp", "67/udp", "68/udp", "137/udp", "138/udp",
            "1900/udp", "5353/udp", "5355/udp",
        ]
    )  # fmt: skip
    #: Regularity multiplier for infrastructure ports.
    infrastructure_weight: float = 0.6
    #: Destinations never scored: addresses, CIDR blocks or names (SNI / HTTP host; "*.x" suffix).
    allow_destinations: list[str] = msgspec.field(default_factory=list)
    #: Also build series per (source, TLS SNI / HTTP host) from application events.
    by_name: bool = True
    #: Look for beacons inside one long flow (first-packet timings).
    in_flow: bool = True
    #: Originator data packets among a flow's first packets needed for in-flow scoring.
    in_flow_min_packets: int = 8
    #: A flow must last this long to be judged as an in-flow beacon, seconds (keep-alives of
    #: chat, VPN and calls look the same over a minute; C2 sessions persist).
    in_flow_min_duration_s: float = 300.0
    #: Destinations (and names) whose sources are tracked for prevalence.
    max_destinations: int = 100_000
    #: Sources remembered per destination (enough to judge prevalence).
    max_sources_per_destination: int = 256


class LateralSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Span in which new admin peers of one source and service count as one fan-out, seconds.
    window_s: float = 3600.0
    #: New internal admin peers (never used with that service) within the window that alert.
    min_new_peers: int = 3
    #: A source's bar is at least this times its learnt new-peers-per-window (admin hosts).
    baseline_factor: float = 1.5
    #: A new admin session from B within this many seconds of B receiving one is a chain.
    chain_window_s: float = 1800.0
    #: Learn-only period at the start of a stream when nothing is learnt yet, seconds of data
    #: time; a stream that ends sooner is judged without a baseline (see docs/evaluation).
    warmup_s: float = 86400.0
    #: Payload bytes (both directions) a session needs to count; less is a probe.
    min_payload_bytes: int = 200
    #: Admin services by destination port (SSH, Telnet, RPC/DCOM, SMB, RDP, WinRM, VNC).
    services: dict[str, list[int]] = msgspec.field(
        default_factory=lambda: {
            "ssh": [22],
            "telnet": [23],
            "rpc": [135],
            "smb": [139, 445],
            "rdp": [3389],
            "winrm": [5985, 5986],
            "vnc": [5900],
        }
    )
    #: Networks counted as internal besides private, link-local and loopback (CIDR).
    internal_networks: list[str] = msgspec.field(default_factory=list)
    #: Learnt (source, destination, service) pairs kept; the least recently seen are evicted.
    max_pairs: int = 200_000
    #: Hosts with learnt fan-out baselines kept; the least recently active are evicted.
    max_hosts: int = 50_000
    #: New contacts awaiting a decision kept; the oldest are dropped (and counted) beyond it.
    max_pending: int = 100_000


class DosSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Window in which flood rates to one victim are measured, seconds.
    window_s: float = 10.0
    #: Half-open TCP attempts per second to one victim port that make a SYN flood.
    syn_floor_per_s: float = 200.0
    #: Share of the attempts to that port that never completed the handshake, at least.
    min_half_open_share: float = 0.5
    #: Unanswered UDP packets per second to one victim that make a UDP flood.
    udp_floor_per_s: float = 2000.0
    #: A UDP flow counts as unanswered when replies are at most this share of its packets.
    udp_max_reply_share: float = 0.1
    #: ICMP echo packets per second to one victim that make an ICMP flood.
    icmp_floor_per_s: float = 500.0
    #: The bar is at least this times the victim's learnt rate (busy servers raise their bar).
    baseline_factor: float = 3.0
    #: A flood is one source's (entity: the source) when it sent this share of the packets.
    single_source_share: float = 0.5
    #: Consecutive alerting windows merge into one alert of at most this many seconds.
    episode_max_s: float = 300.0
    #: Web ports watched for slow HTTP (slowloris, slow POST, slow read).
    slow_ports: list[int] = msgspec.field(default_factory=lambda: [80, 443, 8000, 8080, 8443])
    #: A slow connection lasts at least this many seconds …
    slow_min_duration_s: float = 10.0
    #: … with the client sending at most this many payload bytes per second …
    slow_max_bytes_per_s: float = 100.0
    #: … and the server answering at most this many payload bytes.
    slow_max_response_bytes: int = 2000
    #: Concurrent slow connections from one source to one web port that alert.
    slow_min_connections: int = 40
    #: Window (by flow end) in which slow connections are gathered, seconds.
    slow_window_s: float = 300.0
    #: A flow longer than one window is spread over at most this many windows.
    max_spread_windows: int = 360
    #: Victim baselines kept; the least recently updated are evicted (and counted).
    max_victims: int = 100_000


class AnomalySection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Without a loaded model, learn only (no alerts) for this much data time (s) ...
    warmup_s: float = 3600.0
    #: ... and for at least this many flows, then score (see detectors/anomaly.py).
    warmup_flows: int = 200
    #: Target false-alarm rate per flow for `anomaly.flow` (threshold calibrated on learnt flows).
    flow_fpr: float = 1e-4
    #: Target false-alarm rate per host window for `anomaly.host` (calibrated likewise).
    host_fpr: float = 1e-3
    #: Host baseline window (s): bytes out, flows, distinct peers and ports per host.
    window_s: float = 300.0
    #: Hour-of-day buckets of each host baseline (4: night, morning, afternoon, evening).
    seasonal_buckets: int = 4
    #: Windows a baseline needs before it is used (else the host's all-day one, else peers').
    min_baseline_windows: int = 6
    #: Smallest spread of a baseline in log units (0.5 = a factor of 1.65 is one unit).
    min_log_spread: float = 0.5
    #: Lowest host threshold in robust z units, whatever the calibration says.
    min_host_z: float = 3.0
    #: Baseline adaptation rate once a baseline has 1/alpha windows (bounded, see docs).
    alpha: float = 0.02
    #: Learnt flows kept (reservoir sample) to fit the flow model on.
    reservoir_flows: int = 10_000
    #: Refit the flow model after this many newly learnt flows.
    refit_flows: int = 5_000
    #: Hosts with a baseline at most; new hosts beyond are not tracked (counted).
    max_hosts: int = 50_000
    #: Only internal (private) addresses get host baselines.
    internal_hosts_only: bool = True
    #: Seed of the flow model.
    seed: int = 0


class DgaSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Length of the window in which a host's DNS queries are counted, seconds.
    window_s: float = 600.0
    #: Distinct DGA-looking registered domains one host queries in a window that make a
    #: `dga.domains` alert (score 0.5); the host's own normal raises the bar (3x its level).
    min_dga_domains: int = 5
    #: Model score (0..1) at which a name looks generated; 0 uses the threshold shipped with
    #: the model (chosen for 0.5% false positives on held-out benign domains).
    name_threshold: float = 0.0
    #: Distinct registered domains answered NXDOMAIN in a window that make a
    #: `dga.nxdomain_burst` alert at least (absolute floor).
    nxdomain_floor: int = 20
    #: An NXDOMAIN burst (and a DGA count) must also exceed this multiple of the host's level.
    baseline_factor: float = 3.0
    #: Per learnt window the host's level decays by this factor (then rises to the new count).
    baseline_decay: float = 0.95
    #: Zones whose names never count (besides names without a public suffix and reverse
    #: lookups, which never count either).
    local_zones: list[str] = msgspec.field(
        default_factory=lambda: ["local", "lan", "home.arpa", "internal", "localdomain", "corp"]
    )
    #: Do not score labels under Public Suffix List private suffixes (cloudfront.net,
    #: github.io, …): hosting platforms whose customer labels are often machine-made.
    skip_private_suffixes: bool = True
    #: Hosts tracked per window; queries of further hosts are dropped (counted).
    max_hosts: int = 50_000
    #: Distinct registered domains tracked per host and window (counts are lower bounds beyond).
    max_names_per_host: int = 5_000
    #: Hosts with a learnt baseline at most; the least recently seen are forgotten beyond it.
    max_baseline_hosts: int = 100_000


class KitsuneSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Run in `tapetum analyze` without being named (off by default: it costs about 5 µs per
    #: packet, several times the rest of the pipeline); a model learnt with it runs it anyway.
    enabled: bool = False
    #: Data time (s) at the start of learning whose packets choose the feature groups (the
    #: paper's feature-mapping grace period).
    fm_grace_s: float = 60.0
    #: Further data time (s) of learning before the autoencoders are trained (training grace).
    train_grace_s: float = 540.0
    #: ... and at least this many learnt packets before training.
    min_train_packets: int = 10_000
    #: Learnt packets kept (a uniform reservoir beyond) to train and refit on.
    max_train_packets: int = 100_000
    #: Refit on the reservoir after this many newly learnt packets (0: never).
    refit_packets: int = 1_000_000
    #: One source address may provide at most this share of the packets learnt between refits.
    max_source_share: float = 0.25
    #: Target false-alarm rate per packet of the threshold calibrated on held-out learnt packets.
    false_alarm_rate: float = 1e-3
    #: Window (s) in which a host's anomalous packets are counted for one alert.
    window_s: float = 60.0
    #: Anomalous packets of a host (sent, or answers drawn) in a window that raise an alert.
    min_anomalous_packets: int = 20
    #: Anomalous conversations (host pair and window) held; beyond, their packets are counted.
    max_pairs: int = 10_000
    #: A host that answered an alerted conversation is not alerted on for this long (s) after
    #: it (its statistics remember the attack; slowest half-life 100 s), unless it has more
    #: anomalous packets than that conversation had.
    collateral_s: float = 300.0
    #: Largest number of statistics per autoencoder (the paper's m).
    max_ae_size: int = 10
    #: Hosts with damped statistics at most (the stalest eighth is evicted when full, counted).
    max_hosts: int = 65_536
    #: Host pairs with damped statistics at most (likewise).
    max_channels: int = 262_144
    #: Sockets (address:port pairs) with damped statistics at most (likewise).
    max_sockets: int = 524_288
    #: Seed of weight initialisation, batch shuffling and reservoir sampling.
    seed: int = 0


class UbaSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: A login hour whose probability mass under the user's own hour-of-week profile (hours no
    #: more likely than it) is below this is unusual: a false-alarm rate per login. After n
    #: logins an hour never used has mass about 0.6/(n+1), so this alerts from ~30 logins on.
    unusual_time_p: float = 0.02
    #: Successful logins learnt before a user's hours (and first sensitive access) are judged.
    min_history_logins: int = 20
    #: Logins with a known country learnt before a new country is unusual.
    min_country_logins: int = 5
    #: Travel faster than this between two successful logins is impossible, km/h (airliners
    #: cruise at ~900).
    max_speed_kmh: float = 1000.0
    #: Countries closer than this never make impossible travel (GeoIP is wrong near borders), km.
    min_travel_km: float = 500.0
    #: Failed logins of a user within `burst_window_s` before a success that make
    #: "success after a failure burst" (the user's own usual burst, doubled, when higher).
    burst_failures: int = 5
    #: The window before a success in which the user's failures count, seconds.
    burst_window_s: float = 900.0
    #: Hosts (names), addresses and CIDR networks whose logins are sensitive.
    sensitive_assets: list[str] = msgspec.field(default_factory=list)
    #: Logins to a sensitive asset are unusual in time at this multiple of `unusual_time_p`.
    sensitive_time_factor: float = 5.0
    #: The same finding about the same user is alerted again only after this long, seconds.
    repeat_s: float = 86_400.0
    #: Users with a profile at most; the least recently active are forgotten beyond (counted).
    max_users: int = 100_000


class DetectorsSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    scan: ScanSection = msgspec.field(default_factory=ScanSection)
    lateral: LateralSection = msgspec.field(default_factory=LateralSection)
    dos: DosSection = msgspec.field(default_factory=DosSection)
    dnstunnel: DnsTunnelSection = msgspec.field(default_factory=DnsTunnelSection)
    exfil: ExfilSection = msgspec.field(default_factory=ExfilSection)
    protocol: ProtocolAnomalySection = msgspec.field(default_factory=ProtocolAnomalySection)
    intel: IntelSection = msgspec.field(default_factory=IntelSection)
    bruteforce: BruteforceSection = msgspec.field(default_factory=BruteforceSection)
    anomaly: AnomalySection = msgspec.field(default_factory=AnomalySection)
    beacon: BeaconSection = msgspec.field(default_factory=BeaconSection)
    dga: DgaSection = msgspec.field(default_factory=DgaSection)
    kitsune: KitsuneSection = msgspec.field(default_factory=KitsuneSection)
    uba: UbaSection = msgspec.field(default_factory=UbaSection)


class IncidentSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Alerts about one entity closer than this in time join the same incident, seconds.
    gap_s: float = 3600.0


class OutputSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Include the first-packets sequences (sizes, directions, times) in JSON flow events.
    flow_sequences_in_json: bool = False


RESPONSE_MODES = ("dry-run", "approve", "auto")
RESPONSE_ACTION_KINDS = ("block_ip", "block_flow", "quarantine", "rate_limit", "webhook", "command")


class ResponseConditionSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Incidents at least this severe match (1 high .. 3 low; 3 matches all).
    min_severity: int = 3
    #: Incidents at least this confident match (0..1).
    min_confidence: float = 0.0
    #: Detector names ("scan") or signature prefixes ("bruteforce.ssh"); empty: any.
    detectors: list[str] = msgspec.field(default_factory=list)
    #: ATT&CK tactics (lower-case-hyphenated, e.g. "command-and-control"); empty: any.
    tactics: list[str] = msgspec.field(default_factory=list)
    #: Alert categories ("scan", "brute-force", "c2-beacon", ...); empty: any.
    categories: list[str] = msgspec.field(default_factory=list)
    #: Entity tags (from `[response] tags`, plus "internal"/"external"); empty: any.
    entity_tags: list[str] = msgspec.field(default_factory=list)


class ResponseActionSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: block_ip, block_flow, quarantine, rate_limit, webhook or command.
    kind: str
    #: Seconds before the action is reverted (0: `[response] default_ttl_s`).
    ttl_s: float = 0.0
    #: Kind-specific parameters (docs/response.md lists them).
    params: dict[str, Any] = msgspec.field(default_factory=dict)


class PlaybookSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Name shown in the audit log and in errors.
    name: str
    #: Condition on the incident (keys of ResponseConditionSection).
    when: dict[str, Any] = msgspec.field(default_factory=dict)
    #: Actions, each {kind, ttl_s, params}.
    actions: list[dict[str, Any]] = msgspec.field(default_factory=list)
    #: Mode of this playbook's actions (None: `[response] mode`).
    mode: str | None = None

    def __post_init__(self) -> None:
        # Checked here so every error names its playbook (msgspec would only give a path).
        from tapetum.response.playbook import check_playbook

        check_playbook(self)

    def condition(self) -> ResponseConditionSection:
        return msgspec.convert(self.when, ResponseConditionSection)

    def action_specs(self) -> list[ResponseActionSpec]:
        return [msgspec.convert(a, ResponseActionSpec) for a in self.actions]


def _default_playbooks() -> list[PlaybookSection]:
    return [
        PlaybookSection(
            name="block-confident-attackers",
            when={"min_severity": 2, "min_confidence": 0.8},
            actions=[{"kind": "block_ip", "ttl_s": 3600.0}],
        )
    ]


class ResponseSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: dry-run (record what would be done), approve (queue for an analyst) or auto.
    mode: str = "dry-run"
    #: Networks never blocked, quarantined or rate-limited (CIDR): add gateways, DNS servers and
    #: the analysts' own hosts. Quarantined hosts may still reach these.
    allowlist: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    #: TTL of actions whose playbook gives none, seconds.
    default_ttl_s: float = 3600.0
    #: Entity tags by network (CIDR -> tags), matched by `when.entity_tags`.
    tags: dict[str, list[str]] = msgspec.field(default_factory=dict)
    #: Playbooks, checked in order; every matching playbook's actions are planned.
    playbooks: list[PlaybookSection] = msgspec.field(default_factory=_default_playbooks)
    #: nft executable.
    nft: str = "nft"
    #: Run nft inside this network namespace (`ip netns exec NS nft`), for tests and containers.
    netns: str | None = None
    #: Seconds a command action (and each nft call) may run.
    command_timeout_s: float = 10.0
    #: Webhook request timeout, seconds, and attempts (with 0.5 s, 1 s, ... pauses between).
    webhook_timeout_s: float = 5.0
    webhook_attempts: int = 3
    #: Destinations of one incident that block_flow acts on at most.
    max_targets: int = 16

    def __post_init__(self) -> None:
        from tapetum.response.playbook import check_section

        check_section(self)


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    meter: MeterSection = msgspec.field(default_factory=MeterSection)
    protocols: ProtocolSection = msgspec.field(default_factory=ProtocolSection)
    detectors: DetectorsSection = msgspec.field(default_factory=DetectorsSection)
    incidents: IncidentSection = msgspec.field(default_factory=IncidentSection)
    output: OutputSection = msgspec.field(default_factory=OutputSection)
    response: ResponseSection = msgspec.field(default_factory=ResponseSection)


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
