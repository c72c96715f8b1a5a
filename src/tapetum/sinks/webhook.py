"""Alerts and incidents as JSON POSTs to a webhook, batched, retried with backoff.

Body (default): `{"source": "tapetum", "count": N, "text": "...", "events": [EVE alert/incident
objects]}`. Slack mode (`webhook+slack:URL`) posts Slack's incoming-webhook shape `{"text": "..."}`
only, one line per alert or incident. A batch is posted when it reaches `batch_size` records and
on flush/close. Connection errors, 429 and 5xx are retried (`retries` times, waiting
`backoff_s`, 2×, 4× … between tries, honouring a numeric Retry-After up to `max_wait_s`);
other 4xx answers are not retried. Batches that still fail are counted in `failed_batches`.
Flows and application events are not sent.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from tapetum import __version__
from tapetum.errors import ConfigError
from tapetum.flows.meter import FlowBatch
from tapetum.records import Alert, Incident
from tapetum.sinks.base import Record
from tapetum.sinks.eve import alert_event, incident_event

SEVERITY_NAMES = {1: "high", 2: "medium", 3: "low"}


def line(r: Alert | Incident) -> str:
    """One human line per alert or incident (Slack mrkdwn-safe: `&`, `<`, `>` escaped)."""
    sev = SEVERITY_NAMES.get(r.severity, str(r.severity))
    if isinstance(r, Alert):
        text = f"[{sev}] {r.signature}: {r.explanation}"
    else:
        tech = ", ".join(r.mitre_technique_id)
        text = f"[{sev}] incident {r.title} ({r.alert_count} alerts; {tech}): {r.summary}"
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class WebhookSink:
    def __init__(
        self,
        url: str,
        *,
        slack: bool = False,
        batch_size: int = 50,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_wait_s: float = 30.0,
        timeout_s: float = 10.0,
        headers: dict[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"webhook target {url!r}: expected an http:// or https:// URL")
        self.url = url
        self.slack = slack
        self.batch_size = max(1, batch_size)
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self.timeout_s = timeout_s
        self.headers = {"Content-Type": "application/json",
                        "User-Agent": f"tapetum/{__version__}", **(headers or {})}  # fmt: skip
        self._sleep = sleep
        self._batch: list[Alert | Incident] = []
        self.posted = 0
        self.posted_records = 0
        self.attempts = 0
        self.failed_batches = 0
        self.failed_records = 0
        self.skipped = 0
        self.last_error = ""

    def body(self, batch: list[Alert | Incident]) -> dict[str, Any]:
        text = "\n".join(line(r) for r in batch)
        if self.slack:
            return {"text": text}
        events = [alert_event(r) if isinstance(r, Alert) else incident_event(r) for r in batch]
        return {"source": "tapetum", "count": len(batch), "text": text, "events": events}

    def _post(self, data: bytes) -> bool:
        wait = self.backoff_s
        for attempt in range(self.retries + 1):
            self.attempts += 1
            retry_after: float | None = None
            req = urllib.request.Request(self.url, data=data, headers=self.headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    resp.read()
                return True
            except urllib.error.HTTPError as exc:
                self.last_error = f"HTTP {exc.code}"
                if exc.code != 429 and exc.code < 500:
                    return False  # the request itself is wrong: resending will not help
                ra = exc.headers.get("Retry-After", "") if exc.headers else ""
                retry_after = float(ra) if ra.strip().isdigit() else None
            except (urllib.error.URLError, OSError) as exc:
                self.last_error = str(getattr(exc, "reason", exc))
            if attempt < self.retries:
                self._sleep(min(self.max_wait_s, retry_after if retry_after is not None else wait))
                wait *= 2
        return False

    def _send_batch(self) -> None:
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        if self._post(json.dumps(self.body(batch)).encode()):
            self.posted += 1
            self.posted_records += len(batch)
        else:
            self.failed_batches += 1
            self.failed_records += len(batch)

    def write_flows(self, flows: FlowBatch, services: list[str]) -> None:
        pass  # flows are not posted

    def write(self, records: list[Record]) -> None:
        for r in records:
            if isinstance(r, Alert | Incident):
                self._batch.append(r)
                if len(self._batch) >= self.batch_size:
                    self._send_batch()
            else:
                self.skipped += 1

    def flush(self) -> None:
        self._send_batch()

    def close(self) -> None:
        self._send_batch()

    def warnings(self) -> list[str]:
        if not self.failed_batches:
            return []
        return [f"webhook {self.url}: {self.failed_batches} batches ({self.failed_records} "
                f"alerts/incidents) not delivered; last error: {self.last_error}"]  # fmt: skip
