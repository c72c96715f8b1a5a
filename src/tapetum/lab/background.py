"""Benign background traffic: one thread per client, each drawing its actions, sizes and think
times from its own seeded generator, so that a detector must separate attack from normal.

Actions: intranet page views over HTTP(S) with assets and downloads of realistic sizes, DNS
lookups of plausible names (a few of them NXDOMAIN, as in real networks), SSH sessions with key
authentication that run a command or copy a file, FTP downloads with the right password, external
CDN fetches, and periodic NTP queries and OS update checks.
"""

from __future__ import annotations

import math
import random
import subprocess
import sys
import threading
import time
from collections import Counter

from tapetum.lab import topology as T
from tapetum.lab.build import AGENTS, ASSETS, DOCS, PAGES, Lab

SSH_OPTS = (
    "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
)  # fmt: skip
DNS_NAMES = (
    *T.LAB_NAMES,
    *T.EXTERNAL_NAMES,
    *T.BENIGN_NXDOMAIN,
)
WEIGHTS = {"web": 45, "dns": 20, "cdn": 12, "ssh": 10, "ftp": 5, "download": 8}


class Background:
    """Runs until `stop()`; counts what it did (`counts`) and what failed (`failures`)."""

    def __init__(self, lab: Lab, seed: int, scenario: str, clients: tuple[T.Host, ...]) -> None:
        self.lab = lab
        self.seed = seed
        self.scenario = scenario
        self.clients = clients
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.counts: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self._lock = threading.Lock()

    def start(self) -> None:
        for c in self.clients:
            t = threading.Thread(target=self._client, args=(c,), name=f"bg-{c.name}", daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self, join: bool = True) -> None:
        with self._lock:
            self.stop_event.set()
        if join:
            for t in self.threads:
                t.join(65)

    # -- one client -------------------------------------------------------------------------

    def _client(self, host: T.Host) -> None:
        rng = random.Random(f"{self.seed}:{self.scenario}:bg:{host.name}")
        start = time.monotonic()
        ntp_period = rng.choice((16.0, 32.0, 64.0))
        next_ntp = start + rng.uniform(0.5, 8.0)
        update_period = rng.uniform(40.0, 120.0)
        next_update = start + rng.uniform(3.0, 25.0)
        # Each client has its own pace: median think time 1.5 .. 5 s, lognormal.
        think_median = rng.uniform(1.5, 5.0)
        self.stop_event.wait(rng.uniform(0.0, 1.5))
        while not self.stop_event.is_set():
            now = time.monotonic()
            if now >= next_ntp:
                self._act(host, "ntp", rng)
                next_ntp = now + ntp_period * rng.uniform(0.9, 1.1)
            elif now >= next_update:
                self._act(host, "update", rng)
                next_update = now + update_period * rng.uniform(0.8, 1.2)
            else:
                kind = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
                self._act(host, kind, rng)
            think = min(30.0, max(0.2, rng.lognormvariate(math.log(think_median), 0.8)))
            self.stop_event.wait(think)

    def _act(self, host: T.Host, kind: str, rng: random.Random) -> None:
        argv = getattr(self, f"_{kind}")(host, rng)
        with self._lock:
            # Under the lock with `stop()`: no process starts once teardown has begun, so none
            # can slip into a namespace between its last kill and its deletion.
            if self.stop_event.is_set():
                return
            proc = subprocess.Popen(
                self.lab.net.argv(host.name, argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        try:
            ok = proc.wait(60) == 0
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            ok = False
        with self._lock:
            self.counts[kind] += 1
            if not ok and not self.stop_event.is_set():
                self.failures[kind] += 1

    # -- action command lines ---------------------------------------------------------------

    def _curl(self) -> list[str]:
        return [self.lab.tool("curl"), "-s", "-f", "--max-time", "45", "--cacert",
                str(self.lab.ca_cert)]  # fmt: skip

    def _web(self, host: T.Host, rng: random.Random) -> list[str]:
        scheme = rng.choice(("https", "https", "http"))
        site = rng.choice(("www", "intranet", "wiki"))
        urls = [rng.choice(PAGES), *rng.sample(ASSETS, rng.randint(1, len(ASSETS)))]
        argv = self._curl()
        for u in urls:
            argv += ["-o", "/dev/null", f"{scheme}://{site}.{T.ZONE}/{u}"]
        return argv

    def _download(self, host: T.Host, rng: random.Random) -> list[str]:
        return [*self._curl(), "-o", "/dev/null", f"https://www.{T.ZONE}/{rng.choice(DOCS)}"]

    def _cdn(self, host: T.Host, rng: random.Random) -> list[str]:
        name = rng.choice(("cdn.example-cdn.net", "static.example-cdn.net"))
        obj = f"/assets/{rng.randrange(1, 400)}/{rng.choice(('lib.js', 'font.woff2', 'hero.webp'))}"
        return [*self._curl(), "-o", "/dev/null", f"https://{name}{obj}"]

    def _dns(self, host: T.Host, rng: random.Random) -> list[str]:
        names = rng.sample(DNS_NAMES, rng.randint(1, 3))
        qtype = rng.choices(("A", "AAAA", "MX"), weights=(8, 3, 1))[0]
        return [self.lab.tool("dig"), "+tries=1", "+time=2", "+short", "-t", qtype, *names]

    def _ssh(self, host: T.Host, rng: random.Random) -> list[str]:
        target = rng.choice((f"files.{T.ZONE}", f"files.{T.ZONE}", f"db.{T.ZONE}"))
        if rng.random() < 0.5:
            cmd = rng.choice(("uptime", "df -h /", "id && hostname", "ls -l /tmp | head -5"))
            return [self.lab.tool("ssh"), *SSH_OPTS, "-i", str(self.lab.client_key),
                    f"root@{target}", cmd]  # fmt: skip
        src = self.lab.work / "share" / rng.choice(("backup-db.tar.gz", "inventory.csv"))
        return [self.lab.tool("scp"), "-q", *SSH_OPTS, "-i", str(self.lab.client_key),
                f"root@{target}:{src}", "/dev/null"]  # fmt: skip

    def _ftp(self, host: T.Host, rng: random.Random) -> list[str]:
        s = self.lab.secrets
        return [*self._curl(), "-o", "/dev/null",
                f"ftp://{s.ftp_user}:{s.ftp_password}@ftp.{T.ZONE}/inventory.csv"]  # fmt: skip

    def _ntp(self, host: T.Host, rng: random.Random) -> list[str]:
        return [sys.executable, str(AGENTS), "ntp-query", T.EXT_NTP]

    def _update(self, host: T.Host, rng: random.Random) -> list[str]:
        url = "https://security.example-os.org/check/bookworm-security/InRelease.json"
        return [*self._curl(), "-o", "/dev/null", url]
