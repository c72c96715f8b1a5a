"""Prometheus text exposition (format 0.0.4) of Tapetum's counters.

`render(counters)` takes a flat dict as `tapetum watch` keeps it (`Watcher.counters()`), or a
pipeline `Summary` (turned into one with `summary_counters`). Known keys get stable metric names
with HELP and TYPE lines (table `METRICS`); other numeric keys are exported as
`tapetum_<key>` with type `untyped`, so nothing counted is lost. Mappings give labelled series:
`alerts` (signature -> count) becomes `tapetum_alerts_total{signature="…"}`, `incidents`
(severity name -> count) `tapetum_incidents_total{severity="…"}`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: counter key -> (metric name, type, help, scale applied to the value).
METRICS: dict[str, tuple[str, str, str, float]] = {
    "packets": ("tapetum_packets_total", "counter", "Packets read.", 1),
    "bytes_on_wire": ("tapetum_bytes_total", "counter", "Bytes read (on the wire).", 1),
    "bytes": ("tapetum_bytes_total", "counter", "Bytes read (on the wire).", 1),
    "flows": ("tapetum_flows_total", "counter", "Flows finished by the meter.", 1),
    "evicted_flows": ("tapetum_flows_evicted_total", "counter",
                      "Flows exported early because the flow table was full.", 1),
    "active_flows": ("tapetum_flows_active", "gauge", "Flows in the flow table now.", 1),
    "peak_active_flows": ("tapetum_flows_active_peak", "gauge",
                          "Most flows in the flow table at once.", 1),
    "max_flows": ("tapetum_flows_max", "gauge", "Flow table capacity.", 1),
    "kernel_packets": ("tapetum_kernel_packets_total", "counter",
                       "Packets the kernel saw on the capture socket.", 1),
    "kernel_drops": ("tapetum_kernel_drops_total", "counter",
                     "Packets the kernel dropped before Tapetum could read them.", 1),
    "kernel_freezes": ("tapetum_kernel_freezes_total", "counter",
                       "Times the kernel ring froze its queue.", 1),
    "batches": ("tapetum_batches_total", "counter", "Packet batches read.", 1),
    "empty_batches": ("tapetum_batches_empty_total", "counter",
                      "Reads that returned no packet.", 1),
    "alerts_written": ("tapetum_alerts_written_total", "counter",
                       "Alerts written to the sinks.", 1),
    "alerts_suppressed_as_written_before": (
        "tapetum_alerts_rewritten_suppressed_total", "counter",
        "Alerts not written again after a resume (already written before).", 1),
    "checkpoints": ("tapetum_checkpoints_total", "counter", "Checkpoints saved.", 1),
    "last_checkpoint_s": ("tapetum_checkpoint_duration_seconds", "gauge",
                          "Time the last checkpoint took.", 1),
    "uptime_s": ("tapetum_uptime_seconds", "gauge", "Seconds since the capture started.", 1),
    "cpu_s": ("tapetum_cpu_seconds_total", "counter", "CPU time used (user + system).", 1),
    "max_rss_mib": ("tapetum_max_rss_bytes", "gauge", "Peak resident memory.", 1 << 20),
    "duration_s": ("tapetum_data_duration_seconds", "gauge",
                   "Data time covered by the input (last packet - first).", 1),
}  # fmt: skip
#: Labelled families: counter key -> (metric name, label name, help).
FAMILIES: dict[str, tuple[str, str, str]] = {
    "alerts": ("tapetum_alerts_total", "signature", "Alerts raised, by signature."),
    "incidents": ("tapetum_incidents_total", "severity", "Incidents, by severity."),
    "events": ("tapetum_events_total", "type", "Application events parsed, by type."),
}
_NAME_OK = re.compile(r"[^a-zA-Z0-9_]")


def escape_label(value: str) -> str:
    """Label values: backslash, double quote and line feed escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _value(v: float) -> str:
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) < 2**53):
        return str(int(v))
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{_NAME_OK.sub("_", k)}="{escape_label(str(v))}"' for k, v in labels.items())
    return "{" + inner + "}"


def summary_counters(summary: Any) -> dict[str, Any]:
    """The counters of a pipeline Summary (an `analyze` run) in `render`'s shape."""
    sev = {1: "high", 2: "medium", 3: "low"}
    c: dict[str, Any] = {
        "packets": summary.packets,
        "bytes": summary.bytes,
        "flows": summary.flows,
        "duration_s": summary.duration_s,
        "alerts": Counter(a.signature for a in summary.alerts),
        "incidents": Counter(sev.get(i.severity, str(i.severity)) for i in summary.incidents),
        "events": dict(summary.events),
    }
    for key in ("evicted_flows", "peak_active_flows"):
        if key in summary.meter:
            c[key] = summary.meter[key]
    return c


def render(counters: Mapping[str, Any] | Any, labels: Mapping[str, str] | None = None) -> str:
    """Prometheus text for `counters` (a dict or a Summary); `labels` go on every sample."""
    if not isinstance(counters, Mapping):
        counters = summary_counters(counters)
    base = dict(labels or {})
    blocks: dict[str, tuple[str, str, list[str]]] = {}  # name -> (type, help, sample lines)

    def add(name: str, mtype: str, help_text: str, extra: Mapping[str, str], v: float) -> None:
        block = blocks.setdefault(name, (mtype, help_text, []))
        block[2].append(f"{name}{_labels({**base, **extra})} {_value(v)}")

    for key, v in counters.items():
        if key in FAMILIES and isinstance(v, Mapping):
            name, label, help_text = FAMILIES[key]
            blocks.setdefault(name, ("counter", help_text, []))
            for lv, n in sorted(v.items()):
                add(name, "counter", help_text, {label: str(lv)}, float(n))
            continue
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue  # text (interface name, capture format) goes in labels, not samples
        if key in METRICS:
            name, mtype, help_text, scale = METRICS[key]
            if name in blocks and blocks[name][2]:
                continue  # two keys for one metric (bytes / bytes_on_wire): first wins
            add(name, mtype, help_text, {}, v * scale if scale != 1 else v)
        else:
            name = "tapetum_" + _NAME_OK.sub("_", key)
            add(name, "untyped", f"Tapetum counter {key}.", {}, v)
    out: list[str] = []
    for name, (mtype, help_text, lines) in blocks.items():
        out.append(f"# HELP {name} {escape_help(help_text)}")
        out.append(f"# TYPE {name} {mtype}")
        out.extend(lines)
    return "\n".join(out) + "\n"
