"""Network namespaces, veth pairs and processes of one lab, and their teardown.

Nothing is created in the host's own namespace: the bridge lives in a namespace of its own and
every veth pair is created with both ends already in lab namespaces, so the host's interfaces
and routes are never touched. All names start with `tpl<pid>-`, so parallel labs do not collide
and a crashed lab's leftovers can be found (`stale_namespaces`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from tapetum.errors import TapetumError

NETNS_ETC = Path("/etc/netns")
_PREFIX_RE = re.compile(r"^tpl(\d+)-")


class LabError(TapetumError):
    """The lab failed while building or running (it has been torn down)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {proc.stderr.strip() or 'failed'}")
    return proc


def list_namespaces() -> list[str]:
    proc = _ip("netns", "list", check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_namespaces() -> list[str]:
    """Lab namespaces whose owning `tapetum lab` process is gone."""
    out = []
    for name in list_namespaces():
        m = _PREFIX_RE.match(name)
        if m and not _pid_alive(int(m.group(1))):
            out.append(name)
    return out


def delete_namespace(name: str) -> None:
    """Kill every process inside, then delete it (a namespace lives on while a process is in
    it, so deleting the name alone would leave daemons and their veths behind)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [int(p) for p in _ip("netns", "pids", name, check=False).stdout.split()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if not pids:
            break
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
            time.sleep(0.05)
    _ip("netns", "del", name, check=False)
    shutil.rmtree(NETNS_ETC / name, ignore_errors=True)


class Netns:
    """The namespaces and processes of one lab. `teardown()` is idempotent."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.names: list[str] = []
        self.procs: list[subprocess.Popen[Any]] = []
        self.torn_down = False
        self.made_netns_etc = not NETNS_ETC.exists()

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def add(self, host: str, resolver: str | None = None) -> None:
        name = self.ns(host)
        _ip("netns", "add", name)
        self.names.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        # IPv4 only: keeps captures free of router solicitations and MLD reports.
        self.sysctl(host, "net.ipv6.conf.all.disable_ipv6", "1")
        self.sysctl(host, "net.ipv6.conf.default.disable_ipv6", "1")
        if resolver is not None:
            # `ip netns exec` bind-mounts /etc/netns/NAME/* over /etc.
            d = NETNS_ETC / name
            d.mkdir(parents=True, exist_ok=True)
            (d / "resolv.conf").write_text(
                f"nameserver {resolver}\nsearch lab.test\noptions timeout:2 attempts:1\n"
            )

    def sysctl(self, host: str, key: str, value: str) -> None:
        self.run(host, ["sysctl", "-qw", f"{key}={value}"])

    def veth(self, host_a: str, if_a: str, host_b: str, if_b: str) -> None:
        _ip(
            "link", "add", if_a, "netns", self.ns(host_a),
            "type", "veth", "peer", "name", if_b, "netns", self.ns(host_b),
        )  # fmt: skip

    def ip(self, host: str, *args: str) -> str:
        return _ip("-n", self.ns(host), *args).stdout

    def ip_try(self, host: str, *args: str) -> bool:
        return _ip("-n", self.ns(host), *args, check=False).returncode == 0

    def mac(self, host: str, ifname: str) -> str:
        return self.ip(host, "-br", "link", "show", ifname).split()[2]

    def argv(self, host: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def run(
        self, host: str, argv: Sequence[str], *, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.argv(host, argv),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise LabError(
                f"{host}: {' '.join(argv)}: {proc.stderr.strip()[-300:] or proc.returncode}"
            )
        return proc

    def spawn(
        self,
        host: str,
        argv: Sequence[str],
        *,
        stdout: int | IO[Any] | None = subprocess.DEVNULL,
        stderr: int | IO[Any] | None = subprocess.DEVNULL,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[Any]:
        """Start a process in its own process group (killed as a group at teardown)."""
        proc = subprocess.Popen(
            self.argv(host, argv),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, wait_s: float = 3.0) -> None:
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def teardown(self) -> None:
        if self.torn_down:
            return
        self.torn_down = True
        for proc in reversed(self.procs):
            self.stop(proc, wait_s=1.0)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        for name in reversed(self.names):
            delete_namespace(name)
        # Anything of ours that was half-created before it was recorded.
        for name in list_namespaces():
            if name.startswith(self.prefix + "-"):
                delete_namespace(name)
        if self.made_netns_etc:
            with contextlib.suppress(OSError):
                NETNS_ETC.rmdir()  # only if empty: another lab may still use it
