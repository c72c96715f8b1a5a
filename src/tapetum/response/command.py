"""Command action: run an argv list from the config, placeholders filled with checked values.

No shell: `{ip}` is replaced by an `ipaddress` object's text, `{incident_id}`/`{action_id}` by
checked identifiers, `{ttl_s}` by an int; each placeholder fills (part of) one argument and
can never split into more arguments or reach a shell parser.
"""

from __future__ import annotations

import math
import subprocess

from tapetum.response.actions import Action, ResponseError, check_identifier, parse_address


def substitute(argv: list[str], action: Action) -> list[str]:
    values = {
        "{incident_id}": check_identifier(action.incident_id),
        "{action_id}": check_identifier(action.action_id),
        "{ttl_s}": str(max(1, math.ceil(action.ttl_s))),
    }
    if any("{ip}" in a for a in argv):
        values["{ip}"] = str(parse_address(action.target))
    out = []
    for arg in argv:
        for ph, val in values.items():
            arg = arg.replace(ph, val)
        out.append(arg)
    return out


class CommandBackend:
    kinds = frozenset({"command"})

    def __init__(self, *, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s

    def _run(self, argv: list[str]) -> str:
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                check=False,
                shell=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ResponseError(f"{argv[0]}: {exc}") from None
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip()[-300:]
            raise ResponseError(f"{argv[0]} exited with {proc.returncode}: {tail}")
        return f"{argv[0]} exited with 0"

    def apply(self, action: Action) -> str:
        return self._run(substitute(list(action.params["argv"]), action))

    def revert(self, action: Action) -> str:
        argv = action.params.get("revert_argv")
        if not argv:
            return "no revert_argv configured"
        return self._run(substitute(list(argv), action))
