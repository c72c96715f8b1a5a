"""Checks before anything is built: Linux, root, tools (naming their Debian packages),
pyftpdlib for the FTP server, and working network namespaces."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable

from tapetum.errors import TapetumError
from tapetum.lab.scenarios import BASE_TOOLS, SCENARIOS, TOOL_PACKAGES

SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


class LabRefused(TapetumError):
    """The lab cannot run on this machine; the message says what to do."""


def is_root() -> bool:
    return os.geteuid() == 0


def probe_netns(prefix: str) -> str | None:
    """Create and delete one namespace; None when that works, else the reason."""
    name = f"{prefix}-probe"
    try:
        proc = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    except OSError as exc:
        return str(exc)
    if proc.returncode != 0:
        return proc.stderr.strip() or f"ip netns add exited {proc.returncode}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def which(name: str, path: str | None = None) -> str | None:
    search = path if path is not None else os.environ.get("PATH", "")
    # Root's PATH usually has the sbin directories (sshd, dnsmasq, hping3, iodine live there).
    return shutil.which(name, path=os.pathsep.join([search, *SBIN]) if search else None)


def ftp_python(candidates: Iterable[str] = (sys.executable, "/usr/bin/python3")) -> str | None:
    """A Python that can import pyftpdlib (Debian's python3-pyftpdlib is for the system one)."""
    for py in candidates:
        if not os.path.exists(py):
            continue
        ok = subprocess.run([py, "-c", "import pyftpdlib"], capture_output=True).returncode == 0
        if ok:
            return py
    return None


def preflight(
    scenarios: Iterable[str],
    prefix: str,
    *,
    root_check: Callable[[], bool] | None = None,
    netns_check: Callable[[str], str | None] | None = None,
    path: str | None = None,
) -> tuple[dict[str, str], str]:
    """Resolved tool paths and the FTP server's Python, or `LabRefused` with one line.
    The checks default to the module's `is_root` and `probe_netns` (looked up at call time, so
    tests can replace them)."""
    root_check = root_check or is_root
    netns_check = netns_check or probe_netns
    if not sys.platform.startswith("linux"):
        raise LabRefused("the lab needs Linux network namespaces")
    if not root_check():
        raise LabRefused("the lab must run as root (it creates network namespaces)")
    needed = list(BASE_TOOLS)
    for s in scenarios:
        needed += [t for t in SCENARIOS[s].tools if t not in needed]
    found = {t: which(t, path) for t in needed}
    missing = [t for t, p in found.items() if p is None]
    if missing:
        pkgs = sorted({TOOL_PACKAGES[t] for t in missing})
        raise LabRefused(
            f"missing tools: {', '.join(missing)}; install with: apt-get install {' '.join(pkgs)}"
        )
    py = ftp_python()
    if py is None:
        raise LabRefused(
            "the FTP server needs pyftpdlib; install with: apt-get install python3-pyftpdlib"
        )
    reason = netns_check(prefix)
    if reason is not None:
        raise LabRefused(f"network namespaces unavailable: {reason}")
    return {t: p for t, p in found.items() if p is not None}, py
