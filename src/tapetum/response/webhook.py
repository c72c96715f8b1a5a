"""Webhook action: one JSON POST (plain, or Slack-compatible `{"text": ...}`) with retries."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from tapetum.response.actions import Action, ResponseError, describe


def payload(action: Action, fmt: str = "json") -> dict[str, Any]:
    text = (
        f"Tapetum: {describe(action)} ({action.mode}); incident {action.incident_id}, "
        f"playbook {action.playbook}: {action.reason}"
    )
    if fmt == "slack":
        return {"text": text}
    return {
        "source": "tapetum",
        "text": text,
        "action_id": action.action_id,
        "incident_id": action.incident_id,
        "playbook": action.playbook,
        "mode": action.mode,
        "reason": action.reason,
        "created_ns": action.created_ns,
        "expires_ns": action.expires_ns,
    }


def post(
    url: str,
    body: dict[str, Any],
    *,
    timeout_s: float = 5.0,
    attempts: int = 3,
    backoff_s: float = 0.5,
) -> str:
    """POST `body` as JSON; retry on connection errors and 5xx/429; raise ResponseError."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise ResponseError(f"webhook url must be http(s): {url!r}")
    data = json.dumps(body).encode()
    last = ""
    for attempt in range(max(1, attempts)):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        req = urllib.request.Request(
            url,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "tapetum-response"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return f"HTTP {resp.status} after {attempt + 1} attempt(s)"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            if exc.code < 500 and exc.code != 429:
                break  # the receiver refused the request itself: retrying will not help
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
    raise ResponseError(f"webhook {url}: {last}")


class WebhookBackend:
    kinds = frozenset({"webhook"})

    def __init__(
        self, *, timeout_s: float = 5.0, attempts: int = 3, backoff_s: float = 0.5
    ) -> None:
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s

    def apply(self, action: Action) -> str:
        body = payload(action, str(action.params.get("format", "json")))
        return post(
            str(action.params["url"]),
            body,
            timeout_s=self.timeout_s,
            attempts=self.attempts,
            backoff_s=self.backoff_s,
        )

    def revert(self, action: Action) -> str:
        return "nothing to revert (a notification)"
