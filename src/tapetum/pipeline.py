"""The one module that wires the stages:

    sources → flows → protocols → features/detectors → alerts → incidents → sinks

Per packet batch: the meter assigns packets to flows and returns finished flows; the payload of
the first packets of each flow (every packet on DNS ports) goes to the protocol analyzer; finished
flows go to the streaming detectors, which emit alerts once their windows are complete in data
time; at the end of input everything is flushed and alerts are correlated into incidents.
Nothing here reads the wall clock for results, so the same input gives the same output.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tapetum.alerts.correlate import Correlator
from tapetum.alerts.entities import EntityResolver
from tapetum.alerts.feedback import Feedback
from tapetum.config import Config
from tapetum.detectors.base import StreamingDetector
from tapetum.errors import CaptureFormatError, InputError
from tapetum.flows.community import community_id_array
from tapetum.flows.key import addr_text_array, proto_name
from tapetum.flows.meter import FlowBatch, FlowMeter, PacketFlows
from tapetum.protocols.analyzer import ProtocolAnalyzer
from tapetum.protocols.base import Segment
from tapetum.records import (
    Alert,
    DnsEvent,
    FlowRef,
    HttpEvent,
    Incident,
    SshEvent,
    TlsEvent,
)
from tapetum.registry import build_detectors, open_source
from tapetum.sinks.base import Record, Sink
from tapetum.sinks.eve import vlan_list
from tapetum.sources import decode as D
from tapetum.sources.arp import arp_rows
from tapetum.sources.base import RecordBatch
from tapetum.sources.pcap import PacketBatch

#: Zeek's service names for the analyzers' event types.
SERVICE_OF = {DnsEvent: "dns", TlsEvent: "ssl", HttpEvent: "http", SshEvent: "ssh"}
TOP_N = 10
#: Bound on distinct keys kept by summary counters (a flood must not blow memory).
MAX_COUNTER_KEYS = 200_000

ProgressFn = Callable[[str, int, int, int], None]


@dataclass(slots=True)
class FileReport:
    path: str
    format: str = ""
    packets: int = 0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Summary:
    """What `analyze` prints: everything counted, nothing sampled."""

    files: list[FileReport] = field(default_factory=list)
    packets: int = 0
    bytes: int = 0
    ip_packets: int = 0
    flows: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    packet_status: dict[str, int] = field(default_factory=dict)
    protocols: Counter[str] = field(default_factory=Counter)
    services: Counter[str] = field(default_factory=Counter)
    talkers: Counter[str] = field(default_factory=Counter)
    dns_names: Counter[str] = field(default_factory=Counter)
    tls_snis: Counter[str] = field(default_factory=Counter)
    ja4s: Counter[str] = field(default_factory=Counter)
    http_hosts: Counter[str] = field(default_factory=Counter)
    ssh_software: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    alerts: list[Alert] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    meter: dict[str, int] = field(default_factory=dict)
    protocol_parsed: dict[str, int] = field(default_factory=dict)
    protocol_malformed: dict[str, int] = field(default_factory=dict)
    protocol_warnings: list[str] = field(default_factory=list)
    #: Protocol-stage counts that are not about one protocol: flows evicted, TCP gaps, caps.
    protocol_stats: dict[str, int] = field(default_factory=dict)
    #: Alerts dropped by analyst suppressions (alerts/feedback.py), per suppression id.
    suppressed_alerts: dict[str, int] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        if self.first_ns is None or self.last_ns is None:
            return 0.0
        return (self.last_ns - self.first_ns) / 1e9

    def to_dict(self) -> dict[str, Any]:
        from tapetum.sinks.eve import alert_event, incident_event, ts_text

        return {
            "files": [
                {
                    "path": f.path,
                    "format": f.format,
                    "packets": f.packets,
                    "error": f.error,
                    "warnings": f.warnings,
                    "counters": f.counters,
                }
                for f in self.files
            ],
            "packets": self.packets,
            "bytes": self.bytes,
            "ip_packets": self.ip_packets,
            "flows": self.flows,
            "first_seen": ts_text(self.first_ns) if self.first_ns is not None else None,
            "last_seen": ts_text(self.last_ns) if self.last_ns is not None else None,
            "duration_s": round(self.duration_s, 6),
            "packet_status": self.packet_status,
            "protocols": dict(self.protocols.most_common()),
            "services": dict(self.services.most_common()),
            "top_talkers": [{"ip": ip, "bytes": b} for ip, b in self.talkers.most_common(TOP_N)],
            "dns_names": [{"name": k, "count": v} for k, v in self.dns_names.most_common(TOP_N)],
            "tls_snis": [{"sni": k, "count": v} for k, v in self.tls_snis.most_common(TOP_N)],
            "ja4": [{"ja4": k, "count": v} for k, v in self.ja4s.most_common(TOP_N)],
            "http_hosts": [{"host": k, "count": v} for k, v in self.http_hosts.most_common(TOP_N)],
            "ssh_software": [
                {"software": k, "count": v} for k, v in self.ssh_software.most_common(TOP_N)
            ],
            "events": dict(self.events),
            "meter": self.meter,
            "protocol_parsed": self.protocol_parsed,
            "protocol_malformed": self.protocol_malformed,
            "protocol_warnings": self.protocol_warnings,
            "protocol_stats": self.protocol_stats,
            "suppressed_alerts": self.suppressed_alerts,
            "alerts": [alert_event(a) for a in self.alerts],
            "incidents": [incident_event(i) for i in self.incidents],
        }


def _bump(c: Counter[str], key: str, by: int = 1) -> None:
    if key in c or len(c) < MAX_COUNTER_KEYS:
        c[key] += by


def run_id_for(paths: Sequence[str], config: Config) -> str:
    """Stable id of an analysis: the same inputs and config give the same id (re-runs replace)."""
    import msgspec

    h = hashlib.sha1(msgspec.json.encode(config))
    for p in paths:
        st = os.stat(p) if os.path.exists(p) else None
        size, mtime = (st.st_size, st.st_mtime_ns) if st else (-1, -1)
        h.update(f"{os.path.abspath(p)}|{size}|{mtime}".encode())
    return h.hexdigest()[:16]


class Pipeline:
    def __init__(
        self,
        config: Config | None = None,
        sinks: Sequence[Sink] = (),
        detectors: list[StreamingDetector] | None = None,
        feedback: Feedback | None = None,
    ) -> None:
        self.config = config or Config()
        self.sinks = list(sinks)
        self.meter = FlowMeter(self.config.meter.to_meter())
        pc = self.config.protocols
        self.analyzer = ProtocolAnalyzer(max_flows=pc.max_flows) if pc.enabled else None
        self.detectors = build_detectors(self.config) if detectors is None else detectors
        self.correlator = Correlator(self.config.incidents.gap_s)
        # Analyst verdicts: judged-normal levels go into the detectors, suppressions drop alerts
        # before they are stored or correlated (counted in summary.suppressed_alerts).
        self.suppressor = None
        if feedback is not None:
            feedback.apply(self.detectors)
            self.suppressor = feedback.suppressor()
        # Who was behind an address (auth logs): incidents about it name the users.
        self.entities = EntityResolver()
        # Link-layer observations (ARP) go to the detectors that ask for them.
        self._arp_detectors = [d for d in self.detectors if hasattr(d, "observe_arp")]
        # Packet-level detectors (damped per-packet statistics) see every packet batch; the
        # batch is only valid during the call (the reader reuses its buffers).
        self._packet_detectors = [d for d in self.detectors if hasattr(d, "observe_packets")]
        # Authentication events (from auth logs) go to the detectors that ask for them.
        self._auth_detectors = [d for d in self.detectors if hasattr(d, "observe_auth")]
        self._records_now_ns: int | None = None
        self.summary = Summary()
        mcfg = self.config.meter
        # A jump back in time beyond the shortest idle timeout would make flows that start
        # after it expire early against the old clock: treat it as a new capture.
        self._jump_ns = int(
            min(mcfg.tcp_idle_s, mcfg.udp_idle_s, mcfg.icmp_idle_s, mcfg.other_idle_s) * 1e9
        )
        self.clock_jumps = 0
        #: Data time (latest packet seen) at which each alert came out: time-to-detect.
        self.alert_emitted_ns: dict[str, int] = {}
        self._dns_ports = np.array(sorted(set(pc.dns_ports)), dtype=np.int64)
        self._refs: dict[int, FlowRef] = {}
        self._addr_cache: dict[tuple[int, int], str] = {}
        self._services: dict[int, str] = {}
        self._status = np.zeros(len(D.STATUS_NAMES), dtype=np.int64)
        self._talker_bytes: defaultdict[str, int] = defaultdict(int)

    # -- public ---------------------------------------------------------------------------

    def run(self, paths: Sequence[str], progress: ProgressFn | None = None) -> Summary:
        for path in paths:
            self.run_file(path, progress)
        return self.finish()

    def run_file(self, path: str, progress: ProgressFn | None = None) -> FileReport:
        rep = FileReport(path=path)
        self.summary.files.append(rep)
        try:
            reader = open_source(path)
        except CaptureFormatError as exc:
            rep.error = str(exc)
            return rep
        try:
            for batch in reader:
                if isinstance(batch, RecordBatch):
                    self.process_records(batch)
                    done = batch.records
                else:
                    self.process_batch(batch)
                    done = batch.n
                if progress is not None:
                    progress(path, reader.progress_bytes, reader.total_bytes, done)
        except InputError as exc:
            rep.error = str(exc)
        finally:
            reader.close()
            rep.format = reader.format
            rep.packets = reader.counters.packets
            rep.warnings = [str(w) for w in reader.warnings]
            c = reader.counters
            rep.counters = {
                "corrupt_records": c.corrupt_records,
                "truncated_records": c.truncated_records,
                "skipped_bytes": c.skipped_bytes,
                "skipped_blocks": c.skipped_blocks,
                **{f"warnings.{k}": v for k, v in c.warnings_by_kind.items()},
            }
            self.summary.bytes += c.bytes_on_wire
        return rep

    def process_batch(self, batch: PacketBatch) -> None:
        s = self.summary
        n = batch.n
        s.packets += n
        if n == 0:
            return
        cols = batch.cols
        self._status += np.bincount(cols[:, D.C_STATUS], minlength=len(D.STATUS_NAMES))
        now = self.meter.now_ns
        if now is not None and int(cols[:, D.C_TS].min()) < now - self._jump_ns:
            self._clock_jump()
        pf, finished = self.meter.process(batch)
        ip = pf.uid >= 0
        if ip.any():
            ts = cols[ip, D.C_TS]
            lo, hi = int(ts.min()), int(ts.max())
            s.first_ns = lo if s.first_ns is None else min(s.first_ns, lo)
            s.last_ns = hi if s.last_ns is None else max(s.last_ns, hi)
            s.ip_packets += int(ip.sum())
        if self.analyzer is not None:
            self._feed_protocols(batch, pf)
        for det in self._packet_detectors:
            det.observe_packets(batch)
        if self._arp_detectors:
            arp = arp_rows(batch)
            if arp is not None:
                s.events["arp"] += len(arp)
                for det in self._arp_detectors:
                    det.observe_arp(arp)
        self._finish_flows(finished)

    def process_records(self, rb: RecordBatch) -> None:
        """Records from a sensor's logs: they join after the meter. Events first (they name the
        services of their flows), then flows, then authentication events and foreign alerts."""
        s = self.summary
        times = [e.ts_ns for e in rb.events] + [a.ts_ns for a in rb.auth]
        if rb.flows is not None and len(rb.flows):
            times += [int(rb.flows.num["start_ns"].min()), int(rb.flows.num["end_ns"].max())]
        if times:
            lo, hi = min(times), max(times)
            s.first_ns = lo if s.first_ns is None else min(s.first_ns, lo)
            s.last_ns = hi if s.last_ns is None else max(s.last_ns, hi)
            self._records_now_ns = hi if self._records_now_ns is None else max(
                self._records_now_ns, hi)  # fmt: skip
        if rb.events:
            self._write_events(rb.events)
        if rb.auth:
            s.events["auth"] += len(rb.auth)
            self.entities.observe_auth(rb.auth)
            for det in self._auth_detectors:
                det.observe_auth(rb.auth)
            self._emit(list(rb.auth))
        self._finish_flows([rb.flows] if rb.flows is not None and len(rb.flows) else [])
        if rb.alerts:
            self._alerts(rb.alerts)
        if rb.auth and not (rb.flows is not None and len(rb.flows)):
            for det in self.detectors:  # no flows to drive the poll: auth alone advances time
                self._alerts(det.poll(self._records_now_ns))

    def tick(self, now_ns: int) -> None:
        """Live mode only (`tapetum watch`): data time has reached `now_ns` although no packet
        says so (the interface is idle). Flows idle at `now_ns` are exported and detectors'
        windows complete against it, so alerts do not wait for the next packet. The caller
        advances `now_ns` from the last packet's time by the wall clock: the one place wall
        time enters, and never for files (replay equals live because packets carry the time)."""
        if self.meter.now_ns is None:
            return
        now_ns = max(now_ns, self.meter.now_ns)
        self._finish_flows(self.meter.expire(now_ns))
        for det in self.detectors:
            self._alerts(det.poll(now_ns))

    def _clock_jump(self) -> None:
        """Time went back by more than any idle timeout (files out of order, a clock reset):
        end everything in flight as at the end of a capture, then start a new clock. Otherwise
        every new packet would look long expired next to the old clock."""
        self.clock_jumps += 1
        self._finish_flows(self.meter.flush())
        for det in self.detectors:
            self._alerts(det.flush())
        self.meter.restart_clock()

    def finish(self) -> Summary:
        """End of input: flush flows, parsers and detectors; correlate; close nothing."""
        self._finish_flows(self.meter.flush())
        if self.analyzer is not None:
            self.analyzer.close()
            self._write_events(self.analyzer.drain())
        for det in self.detectors:
            self._alerts(det.flush())
        incidents = [self.entities.annotate(i) for i in self.correlator.incidents()]
        self.summary.incidents = incidents
        self._emit(list(incidents))
        for sink in self.sinks:
            sink.flush()
        s = self.summary
        s.packet_status = {
            name: int(v) for name, v in zip(D.STATUS_NAMES, self._status.tolist(), strict=True) if v
        }
        mc = self.meter.counters
        s.meter = {
            "flows": mc.flows,
            "clock_jumps": self.clock_jumps,
            "peak_active_flows": mc.peak_active_flows,
            "evicted_flows": mc.evicted,
            "fragments_unmatched": mc.fragments_unmatched,
        }
        s.talkers = Counter(dict(self._talker_bytes))
        if self.analyzer is not None:
            s.protocol_parsed = dict(self.analyzer.counters.parsed)
            s.protocol_malformed = dict(self.analyzer.counters.malformed)
            s.protocol_warnings = list(self.analyzer.warnings[:20])
            s.protocol_stats = {k: int(v) for k, v in self.analyzer.stats.items()}
        return s

    # -- stages ---------------------------------------------------------------------------

    def _new_flow_refs(self, batch: PacketBatch, pf: PacketFlows, idx: np.ndarray) -> None:
        """FlowRefs for the flows of rows idx not seen before, built in bulk per batch."""
        uids = pf.uid[idx]
        known = self._refs
        fresh = np.fromiter((u not in known for u in uids.tolist()), bool, uids.shape[0])
        if not fresh.any():
            return
        _, first = np.unique(uids[fresh], return_index=True)
        rows = idx[fresh][first]
        a = batch.addr[rows]
        c = batch.cols[rows]
        orig = (pf.direction[rows] == 0)[:, None]
        src = np.where(orig, a[:, 0:2], a[:, 2:4])
        dst = np.where(orig, a[:, 2:4], a[:, 0:2])
        sport = np.where(orig[:, 0], c[:, D.C_SPORT], c[:, D.C_DPORT])
        dport = np.where(orig[:, 0], c[:, D.C_DPORT], c[:, D.C_SPORT])
        proto = c[:, D.C_PROTO]
        cids = community_id_array(
            src[:, 0], src[:, 1], dst[:, 0], dst[:, 1], proto, sport, dport,
            self.config.meter.community_id_seed,
        )  # fmt: skip
        src_ip = addr_text_array(src[:, 0], src[:, 1], self._addr_cache)
        dest_ip = addr_text_array(dst[:, 0], dst[:, 1], self._addr_cache)
        fields = zip(
            pf.uid[rows].tolist(),
            pf.flow_id[rows].tolist(),
            sport.tolist(),
            dport.tolist(),
            proto.tolist(),
            c[:, D.C_VLAN].tolist(),
            strict=True,
        )
        for k, (uid, fid, sp, dp, pr, vl) in enumerate(fields):
            known[uid] = FlowRef(
                flow_id=fid,
                community_id=cids[k],
                src_ip=src_ip[k],
                src_port=sp,
                dest_ip=dest_ip[k],
                dest_port=dp,
                proto=proto_name(pr),
                vlan=tuple(vlan_list(vl)),
            )

    def _feed_protocols(self, batch: PacketBatch, pf: PacketFlows) -> None:
        assert self.analyzer is not None
        cols = batch.cols
        proto = cols[:, D.C_PROTO]
        ordinal = pf.payload_ordinal
        dns = np.isin(cols[:, D.C_SPORT], self._dns_ports) | np.isin(
            cols[:, D.C_DPORT], self._dns_ports
        )
        data = (
            (ordinal >= 0)
            & ((ordinal < self.config.protocols.max_payload_packets) | dns)
            & (cols[:, D.C_PAYCAP] > 0)
        )
        # SYNs carry the initial sequence numbers the TCP reassembly starts from.
        syn = (proto == 6) & ((cols[:, D.C_FLAGS] & 0x02) != 0)
        want = (data | syn) & ((proto == 6) | (proto == 17)) & (cols[:, D.C_FRAG] != 2)
        idx = np.flatnonzero(want)
        if idx.shape[0] == 0:
            return
        buf = batch.buf
        sub = cols[idx]
        offs = sub[:, D.C_PAYOFF].tolist()
        ends = (sub[:, D.C_PAYOFF] + sub[:, D.C_PAYCAP]).tolist()
        ts = sub[:, D.C_TS].tolist()
        ipp = sub[:, D.C_PROTO].tolist()
        seqs = sub[:, D.C_SEQ].tolist()
        flags = sub[:, D.C_FLAGS].tolist()
        foffs = sub[:, D.C_FILEOFF].tolist()
        uids = pf.uid[idx].tolist()
        orig = (pf.direction[idx] == 0).tolist()
        self._new_flow_refs(batch, pf, idx)
        refs = self._refs
        feed = self.analyzer.feed
        wants = self.analyzer.wants
        for k in range(len(uids)):
            uid = uids[k]
            if not wants(uid):  # parser finished (maybe earlier in this batch): skip the copy
                continue
            feed(
                refs[uid],
                Segment(uid, ts[k], orig[k], ipp[k], buf[offs[k] : ends[k]].tobytes(),
                        seqs[k], flags[k], foffs[k]),
            )  # fmt: skip

    def _finish_flows(self, finished: list[FlowBatch]) -> None:
        if not finished:
            if self.analyzer is not None:
                self._write_events(self.analyzer.drain())
            return
        if self.analyzer is not None:
            for fb in finished:
                for uid in fb.num["uid"].tolist():
                    if self._refs.pop(uid, None) is not None:
                        self.analyzer.flow_ended(uid)
            self._write_events(self.analyzer.drain())
        for fb in finished:
            self._account_flows(fb)
            services = [self._services.pop(f, "") for f in fb.num["flow_id"].tolist()]
            for name in services:
                if name:
                    _bump(self.summary.services, name)
            for sink in self.sinks:
                sink.write_flows(fb, services)
            for det in self.detectors:
                det.observe(fb)
        for det in self.detectors:
            self._alerts(det.poll(None))

    def _account_flows(self, fb: FlowBatch) -> None:
        s = self.summary
        s.flows += len(fb)
        for name, cnt in Counter(fb.proto_names()).items():
            s.protocols[name] += cnt
        total = fb.num["bytes_toserver"] + fb.num["bytes_toclient"]
        # Talkers: bytes sent and received, both endpoints.
        for ips, b in ((fb.src_ip, total), (fb.dest_ip, total)):
            for ip, v in zip(ips, b.tolist(), strict=True):
                if ip in self._talker_bytes or len(self._talker_bytes) < MAX_COUNTER_KEYS:
                    self._talker_bytes[ip] += v

    def _write_events(self, events: list[DnsEvent | TlsEvent | HttpEvent | SshEvent]) -> None:
        if not events:
            return
        s = self.summary
        for e in events:
            svc = SERVICE_OF.get(type(e))
            if isinstance(e, TlsEvent) and e.transport == "quic":
                svc = "quic"
            if svc and e.flow.flow_id not in self._services:
                self._services[e.flow.flow_id] = svc
            s.events[type(e).__name__.removesuffix("Event").lower()] += 1
            if isinstance(e, DnsEvent):
                _bump(s.dns_names, e.rrname)
            elif isinstance(e, TlsEvent):
                if e.sni:
                    _bump(s.tls_snis, e.sni)
                if e.ja4:
                    _bump(s.ja4s, e.ja4)
            elif isinstance(e, HttpEvent):
                if e.hostname:
                    _bump(s.http_hosts, e.hostname)
            elif isinstance(e, SshEvent):
                for ep in (e.client, e.server):
                    if ep is not None:
                        _bump(s.ssh_software, ep.software_version)
        for det in self.detectors:
            det.observe_events(events)
        self._emit(list(events))

    def _alerts(self, alerts: list[Alert]) -> None:
        if alerts and self.suppressor is not None:
            alerts, _ = self.suppressor.split(alerts)
            self.summary.suppressed_alerts = dict(self.suppressor.counts)
        if not alerts:
            return
        self.summary.alerts.extend(alerts)
        self.summary.events["alert"] += len(alerts)
        now = self.meter.now_ns if self.meter.now_ns is not None else self._records_now_ns
        now = now if now is not None else self.summary.last_ns
        for a in alerts:
            self.alert_emitted_ns[a.alert_id] = max(now or a.ts_ns, a.last_ts_ns or a.ts_ns)
        self.correlator.add(alerts)
        self._emit(list(alerts))

    def _emit(self, records: list[Record]) -> None:
        if records:
            for sink in self.sinks:
                sink.write(records)
