"""Safe automated response: playbooks plan actions on incidents; dry-run by default.

`plan(incident, config)` is pure; `apply`/`revert` carry an action out with its backend
(nftables, webhook, command); `respond` runs the playbooks on a run's incidents and records
every action and every step in the store's `actions` and `audit` tables. See docs/response.md.
"""

from tapetum.response.actions import Action, ResponseError, ValidationFailed, describe, would
from tapetum.response.audit import AuditEntry
from tapetum.response.engine import (
    NotFound,
    apply,
    approve,
    audit_log,
    expire_due,
    list_actions,
    respond,
    revert,
    revert_stored,
)
from tapetum.response.playbook import plan

__all__ = [
    "Action",
    "AuditEntry",
    "NotFound",
    "ResponseError",
    "ValidationFailed",
    "apply",
    "approve",
    "audit_log",
    "describe",
    "expire_due",
    "list_actions",
    "plan",
    "respond",
    "revert",
    "revert_stored",
    "would",
]
