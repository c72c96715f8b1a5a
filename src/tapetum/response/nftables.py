"""nftables backend: a dedicated `inet tapetum` table, nothing else on the host is touched.

Layout (docs/response.md draws it):

- sets `blocked4`/`blocked6` (block_ip) and `quarantined4`/`quarantined6` (quarantine) with
  per-element timeouts equal to the action's TTL, so the kernel lifts a block even if Tapetum is
  gone; `allow4`/`allow6` hold the response allowlist, which quarantined hosts may still reach;
- base chains `input`, `forward`, `output` (priority -10, policy accept) that first jump to
  `actions` and then drop traffic from/to set members;
- chain `actions`: per-action rules (block_flow 5-tuples, rate limits, a quarantined host's own
  allowed peers), each with the comment "tapetum:<action id>" by which revert finds its handle.

nft is run with an argument list and `-f -` reading a script built only from `ipaddress` objects,
ints and checked identifiers; never through a shell.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Sequence

from tapetum.response.actions import (
    Action,
    IPAddress,
    ResponseError,
    check_identifier,
    check_port,
    check_positive_int,
    parse_address,
    parse_network,
)

TABLE = "tapetum"
FAMILY = "inet"

_BASE = """table inet tapetum {
    set blocked4 { type ipv4_addr; flags timeout; }
    set blocked6 { type ipv6_addr; flags timeout; }
    set quarantined4 { type ipv4_addr; flags timeout; }
    set quarantined6 { type ipv6_addr; flags timeout; }
    set allow4 { type ipv4_addr; flags interval; auto-merge; }
    set allow6 { type ipv6_addr; flags interval; auto-merge; }
    chain actions {
    }
    chain input {
        type filter hook input priority -10; policy accept;
        jump actions
        ip saddr @blocked4 drop
        ip6 saddr @blocked6 drop
        ip saddr @quarantined4 ip daddr != @allow4 drop
        ip6 saddr @quarantined6 ip6 daddr != @allow6 drop
    }
    chain forward {
        type filter hook forward priority -10; policy accept;
        jump actions
        ip saddr @blocked4 drop
        ip daddr @blocked4 drop
        ip6 saddr @blocked6 drop
        ip6 daddr @blocked6 drop
        ip saddr @quarantined4 ip daddr != @allow4 drop
        ip daddr @quarantined4 ip saddr != @allow4 drop
        ip6 saddr @quarantined6 ip6 daddr != @allow6 drop
        ip6 daddr @quarantined6 ip6 saddr != @allow6 drop
    }
    chain output {
        type filter hook output priority -10; policy accept;
        jump actions
        ip daddr @blocked4 drop
        ip6 daddr @blocked6 drop
        ip daddr @quarantined4 ip saddr != @allow4 drop
        ip6 daddr @quarantined6 ip6 saddr != @allow6 drop
    }
}
"""


def _fam(addr: IPAddress) -> str:
    return "ip" if addr.version == 4 else "ip6"


def _timeout(ttl_s: float) -> str:
    return f"{max(1, math.ceil(ttl_s))}s"


def _comment(action: Action) -> str:
    return "tapetum:" + check_identifier(action.action_id)


class NftBackend:
    """Applies and reverts address actions in the `inet tapetum` table."""

    kinds = frozenset({"block_ip", "block_flow", "quarantine", "rate_limit"})

    def __init__(
        self,
        nft: str = "nft",
        *,
        netns: str | None = None,
        allowlist: Sequence[str] = (),
        timeout_s: float = 10.0,
    ) -> None:
        if netns is not None:
            check_identifier(netns)
        self.nft = nft
        self.netns = netns
        self.allowlist = [parse_network(a) for a in allowlist]
        self.timeout_s = timeout_s

    # -- running nft ---------------------------------------------------------------------------

    def argv(self, *args: str) -> list[str]:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return [*prefix, self.nft, *args]

    def run(self, args: Sequence[str], script: str | None = None) -> str:
        argv = self.argv(*args)
        try:
            proc = subprocess.run(
                argv,
                input=script,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                check=False,
                shell=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ResponseError(f"{argv[0]}: {exc}") from None
        if proc.returncode != 0:
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            raise ResponseError(f"nft failed ({proc.returncode}): {' '.join(msg)[:500]}")
        return proc.stdout

    def script(self, text: str) -> None:
        self.run(["-f", "-"], text)

    # -- table ---------------------------------------------------------------------------------

    def ensure_table(self) -> None:
        """Create the table once (re-loading it would duplicate the base chains' rules)."""
        if not self.table_exists():
            self.script(_BASE)
        lines = [f"flush set {FAMILY} {TABLE} allow4", f"flush set {FAMILY} {TABLE} allow6"]
        for net in self.allowlist:
            s = "allow4" if net.version == 4 else "allow6"
            lines.append(f"add element {FAMILY} {TABLE} {s} {{ {net} }}")
        self.script("\n".join(lines) + "\n")

    def table_exists(self) -> bool:
        try:
            self.run(["list", "table", FAMILY, TABLE])
        except ResponseError:
            return False
        return True

    def delete_table(self) -> None:
        self.run(["delete", "table", FAMILY, TABLE])

    def set_elements(self, name: str) -> list[str]:
        out = json.loads(self.run(["-j", "list", "set", FAMILY, TABLE, name]))
        elems: list[str] = []
        for item in out.get("nftables", []):
            for e in item.get("set", {}).get("elem", []):
                v = e.get("elem", {}).get("val") if isinstance(e, dict) else e
                elems.append(str(v))
        return elems

    def rule_handles(self, comment: str) -> list[int]:
        out = json.loads(self.run(["-j", "-a", "list", "chain", FAMILY, TABLE, "actions"]))
        return [
            int(item["rule"]["handle"])
            for item in out.get("nftables", [])
            if "rule" in item and item["rule"].get("comment") == comment
        ]

    # -- actions -------------------------------------------------------------------------------

    def build(self, action: Action) -> str:
        """The nft script that applies `action` (validated values only)."""
        host = parse_address(action.target)
        v = host.version
        p = action.params
        t = f"{FAMILY} {TABLE}"
        c = _comment(action)
        if action.kind == "block_ip":
            s = f"blocked{v}"
            return f"add element {t} {s} {{ {host} timeout {_timeout(action.ttl_s)} }}\n"
        if action.kind == "quarantine":
            lines = []
            for a in p.get("allow", []):
                net = parse_network(a)
                if net.version != v:
                    continue
                f = _fam(host)
                lines.append(
                    f'add rule {t} actions {f} saddr {host} {f} daddr {net} accept comment "{c}"'
                )
                lines.append(
                    f'add rule {t} actions {f} saddr {net} {f} daddr {host} accept comment "{c}"'
                )
            lines.append(
                f"add element {t} quarantined{v} {{ {host} timeout {_timeout(action.ttl_s)} }}"
            )
            return "\n".join(lines) + "\n"
        if action.kind == "rate_limit":
            rate = check_positive_int(p.get("rate_pps", 100), "rate_pps")
            burst = check_positive_int(p.get("burst", 50), "burst")
            f = _fam(host)
            return (
                f"add rule {t} actions {f} saddr {host} limit rate over {rate}/second "
                f'burst {burst} packets drop comment "{c}"\n'
            )
        if action.kind == "block_flow":
            dest = parse_address(p.get("dest"))
            if dest.version != v:
                raise ResponseError("block_flow: source and destination address families differ")
            f = _fam(host)
            proto = p.get("proto", "any")
            fwd = rev = ""
            if proto in ("tcp", "udp"):
                if p.get("dest_port") is not None:
                    port = check_port(p["dest_port"])
                    fwd, rev = f" {proto} dport {port}", f" {proto} sport {port}"
                else:
                    fwd = rev = f" meta l4proto {proto}"
            elif proto == "icmp":
                fwd = rev = " meta l4proto " + ("icmp" if v == 4 else "ipv6-icmp")
            elif proto != "any":
                raise ResponseError(f"block_flow: unknown proto {proto!r}")
            return (
                f'add rule {t} actions {f} saddr {host} {f} daddr {dest}{fwd} drop comment "{c}"\n'
                f'add rule {t} actions {f} saddr {dest} {f} daddr {host}{rev} drop comment "{c}"\n'
            )
        raise ResponseError(f"nftables cannot apply a {action.kind} action")

    def apply(self, action: Action) -> str:
        host = parse_address(action.target)
        for net in self.allowlist:  # defence in depth: planning already refused these
            if net.version == host.version and host in net:
                raise ResponseError(f"{host} is allowlisted ({net}); not applied")
        script = self.build(action)
        self.ensure_table()
        self.script(script)
        return script.strip()

    def revert(self, action: Action) -> str:
        host = parse_address(action.target)
        t = f"{FAMILY} {TABLE}"
        done: list[str] = []
        if action.kind in ("block_ip", "quarantine"):
            s = ("blocked" if action.kind == "block_ip" else "quarantined") + str(host.version)
            try:
                self.script(f"delete element {t} {s} {{ {host} }}\n")
                done.append(f"removed {host} from {s}")
            except ResponseError:
                # Gone already (the kernel's timeout, or the table was removed): that is reverted.
                if self.table_exists() and str(host) in self.set_elements(s):
                    raise
                done.append(f"{host} was no longer in {s}")
        if action.kind in ("block_flow", "rate_limit", "quarantine"):
            handles = self.rule_handles(_comment(action)) if self.table_exists() else []
            for h in handles:
                self.run(["delete", "rule", FAMILY, TABLE, "actions", "handle", str(h)])
            done.append(f"deleted {len(handles)} rule(s)")
        return "; ".join(done)


def nft_available(nft: str = "nft") -> bool:
    import shutil

    return shutil.which(nft) is not None
