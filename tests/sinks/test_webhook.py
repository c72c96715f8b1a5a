"""Webhook export to a real HTTP server on loopback: batching, retries with backoff, Slack
shape, and no retry on a request the server rejects."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tapetum.cli import demo_capture
from tapetum.config import Config
from tapetum.errors import ConfigError
from tapetum.pipeline import Pipeline, Summary
from tapetum.sinks.webhook import WebhookSink


class Hook:
    """Records POST bodies; answers the next queued status codes first, then 200."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.codes: list[int] = []
        self.types: list[str] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(n))
                code = hook.codes.pop(0) if hook.codes else 200
                hook.statuses.append(code)
                hook.types.append(self.headers["Content-Type"])
                if code == 200:
                    hook.bodies.append(body)
                self.send_response(code)
                if code == 429:
                    self.send_header("Retry-After", "7")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


@pytest.fixture(scope="module")
def demo() -> Summary:
    return Pipeline(Config()).run([str(demo_capture())])


def test_demo_alerts_posted_in_batches(hook: Hook) -> None:
    waits: list[float] = []
    sink = WebhookSink(hook.url, batch_size=3, sleep=waits.append)
    summary = Pipeline(Config(), [sink]).run([str(demo_capture())])
    sink.close()
    n = len(summary.alerts) + len(summary.incidents)
    assert n == 8
    assert [b["count"] for b in hook.bodies] == [3, 3, 2]  # 5 alerts, then 3 incidents at the end
    events = [e for b in hook.bodies for e in b["events"]]
    assert [e["alert"]["alert_id"] for e in events if e["event_type"] == "alert"] == [
        a.alert_id for a in summary.alerts
    ]
    assert {e["incident"]["incident_id"] for e in events if e["event_type"] == "incident"} == {
        i.incident_id for i in summary.incidents
    }
    assert all(b["source"] == "tapetum" and b["text"].count("\n") == b["count"] - 1
               for b in hook.bodies)  # fmt: skip
    assert (sink.posted, sink.posted_records, sink.failed_batches, waits) == (3, n, 0, [])
    assert hook.types == ["application/json"] * 3


def test_retries_with_backoff(hook: Hook, demo: Summary) -> None:
    hook.codes = [503, 502, 429]
    waits: list[float] = []
    sink = WebhookSink(hook.url, batch_size=100, retries=3, backoff_s=0.5, sleep=waits.append)
    sink.write(list(demo.alerts))
    sink.close()
    assert hook.statuses == [503, 502, 429, 200]
    assert waits == [0.5, 1.0, 7.0]  # doubling, then the server's Retry-After
    assert len(hook.bodies) == 1 and hook.bodies[0]["count"] == len(demo.alerts)
    assert sink.attempts == 4 and not sink.warnings()


def test_gives_up_after_retries_and_on_4xx(hook: Hook, demo: Summary) -> None:
    hook.codes = [500] * 3
    waits: list[float] = []
    sink = WebhookSink(hook.url, retries=2, backoff_s=0.1, sleep=waits.append)
    sink.write(list(demo.alerts))
    sink.flush()
    assert (sink.failed_batches, sink.failed_records, waits) == (1, len(demo.alerts), [0.1, 0.2])
    assert "HTTP 500" in sink.warnings()[0]
    hook.codes = [400]
    sink.write(list(demo.incidents))
    sink.close()
    assert hook.statuses == [500, 500, 500, 400]  # a rejected request is not resent
    assert sink.failed_batches == 2 and hook.bodies == []


def test_slack_shape_escapes_mrkdwn(hook: Hook, demo: Summary) -> None:
    from tapetum.records import Alert

    odd = Alert(alert_id="x", ts_ns=1, signature="t.x", signature_id=1, category="anomaly",
                severity=1, score=0.9, explanation="a <b> & c", entity="10.0.0.1")  # fmt: skip
    sink = WebhookSink(hook.url, slack=True, sleep=lambda s: None)
    sink.write([*demo.incidents, odd])
    sink.close()
    (body,) = hook.bodies
    assert set(body) == {"text"}
    lines = body["text"].split("\n")
    assert len(lines) == len(demo.incidents) + 1
    assert all(inc.title in text for inc, text in zip(demo.incidents, lines, strict=False))
    assert lines[-1] == "[high] t.x: a &lt;b&gt; &amp; c"


def test_unreachable_server_counts_a_failure(demo: Summary) -> None:
    sink = WebhookSink("http://127.0.0.1:1/x", retries=1, backoff_s=0.01, sleep=lambda s: None)
    sink.write(list(demo.alerts[:1]))
    sink.close()
    assert sink.failed_batches == 1 and sink.attempts == 2
    with pytest.raises(ConfigError):
        WebhookSink("ftp://x")
