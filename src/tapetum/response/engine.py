"""Apply, approve, revert and expire actions; `respond` runs playbooks on a run's incidents.

Modes: dry-run records "would have blocked ..." and applies nothing; approve queues the action
("pending-approval") until `approve(store, id)`; auto applies at once. Allowlisted or invalid
targets are refused. Every step is one row in `audit`.

The TTL of an applied action runs on the wall clock from the moment it is applied (a block must
last its hour in the real world, whatever the capture's timestamps); planning itself is pure.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

import duckdb
import msgspec

from tapetum.errors import TapetumError
from tapetum.response import audit as tables
from tapetum.response.actions import (
    ADDRESS_KINDS,
    Action,
    ResponseError,
    ValidationFailed,
    describe,
    parse_address,
    would,
)
from tapetum.response.audit import Store
from tapetum.response.command import CommandBackend
from tapetum.response.nftables import NftBackend
from tapetum.response.playbook import allowlisted, plan
from tapetum.response.webhook import WebhookBackend

if TYPE_CHECKING:
    from tapetum.config import Config, ResponseSection
    from tapetum.records import Incident


class NotFound(TapetumError):
    """No action with that id in the store."""


class Backend(Protocol):
    kinds: frozenset[str]

    def apply(self, action: Action) -> str: ...

    def revert(self, action: Action) -> str: ...


def _section(config: Config | ResponseSection | None) -> ResponseSection:
    from tapetum.config import Config, ResponseSection

    if config is None:
        return Config().response
    return config if isinstance(config, ResponseSection) else config.response


def backend_for(kind: str, section: ResponseSection) -> Backend:
    if kind in NftBackend.kinds:
        return NftBackend(
            section.nft,
            netns=section.netns,
            allowlist=section.allowlist,
            timeout_s=section.command_timeout_s,
        )
    if kind == "webhook":
        return WebhookBackend(
            timeout_s=section.webhook_timeout_s, attempts=section.webhook_attempts
        )
    if kind == "command":
        return CommandBackend(timeout_s=section.command_timeout_s)
    raise ResponseError(f"unknown action kind {kind!r}")


def refusal(action: Action, section: ResponseSection) -> str | None:
    """Why `action` must not be applied (checked again right before applying), or None."""
    if action.kind in ADDRESS_KINDS or (
        action.kind == "command" and action.target != action.incident_id
    ):
        try:
            host = parse_address(action.target)
        except ValidationFailed as exc:
            return f"invalid target: {exc}"
        hit = allowlisted(host, section.allowlist)
        if hit is not None:
            return f"{host} is allowlisted ({hit})"
    return None


def apply(action: Action, config: Config | ResponseSection | None = None) -> tuple[Action, str]:
    """Carry out `action` now (whatever its mode); the new state ("applied", "refused" or
    "failed") and what happened. Does not touch the store."""
    section = _section(config)
    why = refusal(action, section)
    if why is not None:
        return msgspec.structs.replace(action, state="refused"), why
    try:
        detail = backend_for(action.kind, section).apply(action)
    except (ResponseError, ValidationFailed) as exc:
        return msgspec.structs.replace(action, state="failed"), str(exc)
    return msgspec.structs.replace(action, state="applied"), detail


def revert(
    action: Action, config: Config | ResponseSection | None = None, *, state: str = "reverted"
) -> tuple[Action, str]:
    """Undo an applied action; the new state (`state`, or "failed") and what happened."""
    section = _section(config)
    try:
        detail = backend_for(action.kind, section).revert(action)
    except (ResponseError, ValidationFailed) as exc:
        return msgspec.structs.replace(action, state="failed"), str(exc)
    return msgspec.structs.replace(action, state=state), detail


def _now(now_ns: int | None) -> int:
    return time.time_ns() if now_ns is None else now_ns


def _started(action: Action, now: int) -> Action:
    """The TTL starts when the action takes effect."""
    return msgspec.structs.replace(action, created_ns=now, expires_ns=now + int(action.ttl_s * 1e9))


def _apply_and_record(
    con: duckdb.DuckDBPyConnection, action: Action, section: ResponseSection, actor: str, now: int
) -> tuple[Action, str]:
    done, detail = apply(_started(action, now), section)
    tables.set_state(con, done, now)
    result = {"applied": "ok", "refused": "refused"}.get(done.state, "error")
    tables.audit(con, done.action_id, actor=actor, event=done.state, result=result,
                 detail=detail, now_ns=now)  # fmt: skip
    return done, detail


def respond(
    incidents: Iterable[Incident],
    config: Config | ResponseSection | None,
    store: Store | None,
    *,
    now_ns: int | None = None,
    actor: str = "pipeline",
) -> list[tuple[Action, str]]:
    """Plan every incident's actions, record them (if `store`) and apply those in auto mode.

    Returns (action, message) pairs, e.g. "would have blocked 10.0.0.66 for 1 h (dry-run)".
    Actions already in the store (the same incident analysed again) are left as they are.
    """
    section = _section(config)
    now = _now(now_ns)
    planned = [a for inc in incidents for a in plan(inc, section, now_ns=now)]
    if store is None:
        return [_outcome(a, _preview(a, section)) for a in planned]
    out: list[tuple[Action, str]] = []
    with tables.opened(store) as con:
        for a in planned:
            if not tables.insert(con, a, now):
                continue
            if a.state == "refused":
                tables.audit(con, a.action_id, actor=actor, event="refused", result="refused",
                             detail=a.reason, now_ns=now)  # fmt: skip
                out.append(_outcome(a, a.reason))
            elif a.mode == "dry-run":
                msg = would(a)
                tables.audit(con, a.action_id, actor=actor, event="dry-run", result="dry-run",
                             detail=msg, now_ns=now)  # fmt: skip
                out.append(_outcome(a, msg))
            elif a.mode == "approve":
                tables.audit(con, a.action_id, actor=actor, event="queued", result="ok",
                             detail=f"{describe(a)}: waiting for approval", now_ns=now)  # fmt: skip
                out.append(_outcome(a, f"{describe(a)}: waiting for approval"))
            else:
                dup = _active_duplicate(con, a, now)
                if dup is not None:
                    refused = msgspec.structs.replace(a, state="refused")
                    why = f"already in force by {dup.action_id} until its expiry"
                    tables.set_state(con, refused, now)
                    tables.audit(con, a.action_id, actor=actor, event="refused", result="refused",
                                 detail=why, now_ns=now)  # fmt: skip
                    out.append(_outcome(refused, why))
                    continue
                done, detail = _apply_and_record(con, a, section, actor, now)
                out.append(_outcome(done, detail))
    return out


def _preview(a: Action, section: ResponseSection) -> str:
    if a.state == "refused":
        return a.reason
    if a.mode == "approve":
        return f"{describe(a)}: would wait for approval (no store)"
    if a.mode == "auto":
        return f"{describe(a)}: not applied (no store to audit it in)"
    return would(a)


def _outcome(a: Action, detail: str) -> tuple[Action, str]:
    """ "would have blocked 10.0.0.66 for 1 h (dry-run)", "... (auto; applied)"."""
    if a.mode == "dry-run" and a.state != "refused":
        return a, f"{detail} (dry-run)"
    return a, f"{detail} ({a.mode}; {a.state})"


def _active_duplicate(con: duckdb.DuckDBPyConnection, a: Action, now: int) -> Action | None:
    for other in tables.select(con, state="applied"):
        if (
            other.kind == a.kind
            and other.target == a.target
            and other.params == a.params
            and other.expires_ns > now
        ):
            return other
    return None


def _get(con: duckdb.DuckDBPyConnection, action_id: str) -> Action:
    a = tables.get(con, action_id)
    if a is None:
        raise NotFound(f"no action {action_id!r} in the store")
    return a


def approve(
    store: Store,
    action_id: str,
    config: Config | ResponseSection | None = None,
    *,
    analyst: str = "cli",
    now_ns: int | None = None,
) -> tuple[Action, str]:
    """Apply an action waiting for approval; its TTL starts now."""
    section = _section(config)
    now = _now(now_ns)
    with tables.opened(store) as con:
        a = _get(con, action_id)
        if a.state != "pending-approval":
            raise ResponseError(f"{action_id} is {a.state}, not pending-approval")
        tables.audit(con, action_id, actor=analyst, event="approved", result="ok",
                     detail=describe(a), now_ns=now)  # fmt: skip
        return _apply_and_record(con, a, section, analyst, now)


def revert_stored(
    store: Store,
    action_id: str,
    config: Config | ResponseSection | None = None,
    *,
    analyst: str = "cli",
    now_ns: int | None = None,
) -> tuple[Action, str]:
    """Revert an applied action on request (or withdraw a queued one)."""
    section = _section(config)
    now = _now(now_ns)
    with tables.opened(store) as con:
        a = _get(con, action_id)
        if a.state == "pending-approval":
            done, detail = msgspec.structs.replace(a, state="reverted"), "withdrawn before approval"
        elif a.state in ("applied", "failed"):
            # A failed apply may have half-happened (one of two rules): reverting it is safe.
            done, detail = revert(a, section)
        else:
            raise ResponseError(f"{action_id} is {a.state}; only applied or queued actions revert")
        tables.set_state(con, done, now)
        tables.audit(con, action_id, actor=analyst, event="revert",
                     result="ok" if done.state == "reverted" else "error", detail=detail,
                     now_ns=now)  # fmt: skip
        return done, detail


def expire_due(
    store: Store,
    now_ns: int | None = None,
    config: Config | ResponseSection | None = None,
) -> list[tuple[Action, str]]:
    """Revert applied actions whose TTL is over (the kernel lifts nft set elements itself; this
    removes rules, runs revert commands and records it); queued ones past it lapse."""
    section = _section(config)
    now = _now(now_ns)
    out: list[tuple[Action, str]] = []
    with tables.opened(store) as con:
        for a in tables.select(con, state="applied", due_before_ns=now):
            done, detail = revert(a, section, state="expired")
            tables.set_state(con, done, now)
            tables.audit(con, a.action_id, actor="expiry", event="expired",
                         result="ok" if done.state == "expired" else "error", detail=detail,
                         now_ns=now)  # fmt: skip
            out.append((done, detail))
        for a in tables.select(con, state="pending-approval", due_before_ns=now):
            done = msgspec.structs.replace(a, state="expired")
            tables.set_state(con, done, now)
            tables.audit(con, a.action_id, actor="expiry", event="expired", result="ok",
                         detail="lapsed before approval", now_ns=now)  # fmt: skip
            out.append((done, "lapsed before approval"))
    return out


def list_actions(
    store: Store, *, state: str | None = None, incident_id: str | None = None
) -> list[Action]:
    with tables.opened(store) as con:
        return tables.select(con, state=state, incident_id=incident_id)


def audit_log(store: Store, action_id: str | None = None) -> list[tables.AuditEntry]:
    with tables.opened(store) as con:
        return tables.entries(con, action_id)
