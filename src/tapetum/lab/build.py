"""Build the lab network and start its servers (see `topology` for the picture)."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tapetum.lab import topology as T
from tapetum.lab.netns import LabError, Netns

AGENTS = Path(__file__).with_name("agents.py")

# Files the intranet web server offers, with (min, max) sizes in bytes: pages, assets, documents.
WEB_FILES = {
    "index.html": (6_000, 40_000),
    "news.html": (8_000, 60_000),
    "css/site.css": (15_000, 90_000),
    "js/app.js": (80_000, 600_000),
    "js/vendor.js": (200_000, 900_000),
    "img/logo.png": (4_000, 30_000),
    "img/banner.jpg": (60_000, 400_000),
    "img/team.jpg": (100_000, 700_000),
    "docs/handbook.pdf": (400_000, 3_000_000),
    "docs/q3-report.xlsx": (50_000, 600_000),
    "downloads/client-setup.zip": (2_000_000, 9_000_000),
}
PAGES = ("index.html", "news.html")
ASSETS = ("css/site.css", "js/app.js", "js/vendor.js", "img/logo.png", "img/banner.jpg")
DOCS = ("docs/handbook.pdf", "docs/q3-report.xlsx", "img/team.jpg", "downloads/client-setup.zip")
FILE_SHARE = {"backup-db.tar.gz": (1_000_000, 6_000_000), "inventory.csv": (20_000, 200_000)}

_WORDS = ("sync", "cloud", "metrics", "static", "assets", "update", "telemetry", "edge", "cdn")
_TLDS = ("net", "io", "com", "cc", "top")


@dataclass
class Secrets:
    """Seeded names and credentials of this lab."""

    ftp_user: str
    ftp_password: str
    c2_name: str
    drop_name: str
    tunnel_zone: str
    tunnel_password: str
    dga_registered: str = ""

    @classmethod
    def from_seed(cls, seed: int) -> Secrets:
        rng = random.Random(f"{seed}:lab")
        word = rng.choice(_WORDS)
        return cls(
            ftp_user="backup",
            ftp_password=f"{rng.choice(('Winter', 'Backup', 'Lab'))}{rng.randint(2019, 2025)}!",
            c2_name=f"{word}-{rng.choice(('api', 'img', 'node'))}{rng.randint(1, 99)}."
            f"{rng.choice(_TLDS)}",
            drop_name=f"share-{rng.choice(_WORDS)}.{rng.choice(_TLDS)}",
            tunnel_zone=f"t.{rng.choice(_WORDS)}-dns.{rng.choice(_TLDS)}",
            tunnel_password=f"{rng.getrandbits(48):012x}",
        )


@dataclass
class Lab:
    """A running lab: namespaces, servers, key material in a private temporary directory."""

    seed: int
    tools: dict[str, str]
    ftp_python: str
    net: Netns
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tapetum-lab-")))
    secrets: Secrets = field(init=False)
    web_sizes: dict[str, int] = field(default_factory=dict)
    macs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.secrets = Secrets.from_seed(self.seed)

    # -- paths -----------------------------------------------------------------------------

    @property
    def client_key(self) -> Path:
        return self.work / "ssh" / "id_ed25519"

    @property
    def ca_cert(self) -> Path:
        return self.work / "tls" / "ca.crt"

    def tool(self, name: str) -> str:
        return self.tools.get(name) or shutil.which(name) or name

    # -- build ------------------------------------------------------------------------------

    def build(self) -> None:
        net = self.net
        for host in ("net", "rtr", "ext"):
            net.add(host)
        for h in T.LAN_HOSTS:
            net.add(h.name, resolver=T.DNS.ip)
        net.ip("net", "link", "add", "br0", "type", "bridge", "stp_state", "0")
        net.ip("net", "link", "set", "br0", "up")
        for name, ip in [(h.name, h.ip) for h in T.LAN_HOSTS] + [("rtr", T.ROUTER_LAN)]:
            net.veth(name, "eth0", "net", f"v-{name}")
            net.ip("net", "link", "set", f"v-{name}", "master", "br0", "up")
            net.ip(name, "addr", "add", f"{ip}/24", "dev", "eth0")
            net.ip(name, "link", "set", "eth0", "up")
            self.macs[name] = net.mac(name, "eth0")
        net.veth("rtr", "eth1", "ext", "eth0")
        net.ip("rtr", "addr", "add", f"{T.ROUTER_EXT}/24", "dev", "eth1")
        net.ip("rtr", "link", "set", "eth1", "up")
        net.sysctl("rtr", "net.ipv4.ip_forward", "1")
        for i, addr in enumerate(T.EXT_ADDRESSES):
            net.ip("ext", "addr", "add", f"{addr}/24", "dev", "eth0", *(["secondary"] * bool(i)))
        net.ip("ext", "link", "set", "eth0", "up")
        net.ip("ext", "route", "add", T.LAN, "via", T.ROUTER_EXT)
        # Wire-sized packets in the capture: without this, veths hand TCP 64 KiB segmentation
        # offload "packets" to the bridge, which no real link carries.
        for name, ifname in [(h.name, "eth0") for h in T.LAN_HOSTS] + [
            ("rtr", "eth0"),
            ("rtr", "eth1"),
            ("ext", "eth0"),
        ]:
            net.ip_try(name, "link", "set", ifname, "gso_max_segs", "1", "gso_max_size", "1500")
        # Clients and servers reach the external range through the router; no default route
        # anywhere, and the attacker has only its on-link LAN route.
        for h in T.LAN_HOSTS:
            if h.role != "attacker":
                net.ip(h.name, "route", "add", T.EXTERNAL, "via", T.ROUTER_LAN)
        self.verify_isolation()
        self._material()
        self._start_servers()

    def verify_isolation(self) -> None:
        """Refuse to go on if any lab namespace could reach beyond the lab."""
        for name in ("net", "rtr", "ext", *(h.name for h in T.LAN_HOSTS)):
            routes = self.net.ip(name, "-4", "route", "show")
            if "default" in routes:
                raise LabError(f"namespace {self.net.ns(name)} has a default route: {routes}")
            links = self.net.ip(name, "-br", "link", "show").split("\n")
            for line in filter(None, links):
                ifname = line.split()[0].split("@")[0]
                if not (ifname in ("lo", "eth0", "eth1", "br0") or ifname.startswith("v-")):
                    raise LabError(f"unexpected interface {ifname} in {self.net.ns(name)}")
        attacker = self.net.ip("attacker", "-4", "route", "show").strip().splitlines()
        if len(attacker) != 1 or not attacker[0].startswith(T.LAN):
            raise LabError(f"attacker namespace has routes beyond the LAN: {attacker}")

    def _material(self) -> None:
        rng = random.Random(f"{self.seed}:files")
        www = self.work / "www"
        for rel, (lo, hi) in WEB_FILES.items():
            size = rng.randint(lo, hi)
            p = www / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(rng.randbytes(size))
            self.web_sizes[rel] = size
        share = self.work / "share"
        share.mkdir()
        for rel, (lo, hi) in FILE_SHARE.items():
            (share / rel).write_bytes(rng.randbytes(rng.randint(lo, hi)))
        for d in ("ssh", "tls", "dl", "drop"):
            (self.work / d).mkdir()
        keygen = self.tool("ssh-keygen")
        subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-C", "admin@ws", "-f", str(self.client_key)],
            check=True,
            capture_output=True,
        )
        (self.work / "ssh" / "authorized_keys").write_text(
            self.client_key.with_suffix(".pub").read_text()
        )
        for h in T.LAN_HOSTS:
            if h.sshd:
                key = self.work / "ssh" / f"{h.name}_host_ed25519"
                subprocess.run(
                    [keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                    check=True,
                    capture_output=True,
                )
        s = self.secrets
        # A lab CA signs the intranet's and the CDN's certificates (as an enterprise CA and a
        # public CA would); the C2 and drop servers use self-signed ones, as such servers do.
        self._cert("ca", "Lab Root CA", None, None)
        sans = f"DNS:www.{T.ZONE},DNS:intranet.{T.ZONE},DNS:wiki.{T.ZONE}"
        self._cert("www", f"www.{T.ZONE}", sans, "ca")
        cdn = "DNS:*.example-cdn.net,DNS:security.example-os.org,DNS:deb.example-os.org"
        self._cert("cdn", "*.example-cdn.net", cdn, "ca")
        self._cert("c2", s.c2_name, f"DNS:{s.c2_name},DNS:{s.dga_registered or s.c2_name}", None)
        self._cert("drop", s.drop_name, f"DNS:{s.drop_name}", None)

    def _cert(self, name: str, cn: str, sans: str | None, ca: str | None) -> None:
        tls, openssl = self.work / "tls", self.tool("openssl")
        key, crt = str(tls / f"{name}.key"), str(tls / f"{name}.crt")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        ext = ["-addext", f"subjectAltName={sans}"] if sans else []
        subj = ["-subj", f"/O=Lab/CN={cn}"]
        if ca is None:
            argv = [openssl, "req", "-x509", *ec, "-days", "30", *subj, *ext, "-keyout", key,
                    "-out", crt]  # fmt: skip
            subprocess.run(argv, check=True, capture_output=True)
            return
        csr = str(tls / f"{name}.csr")
        argv = [openssl, "req", "-new", *ec, *subj, *ext, "-keyout", key, "-out", csr]
        subprocess.run(argv, check=True, capture_output=True)
        argv = [openssl, "x509", "-req", "-in", csr, "-CA", str(tls / f"{ca}.crt"),
                "-CAkey", str(tls / f"{ca}.key"), "-CAcreateserial", "-days", "30",
                "-copy_extensions", "copyall", "-out", crt]  # fmt: skip
        subprocess.run(argv, check=True, capture_output=True)

    def _dnsmasq_conf(self) -> str:
        s = self.secrets
        lines = [
            "no-resolv",
            "no-hosts",
            "no-poll",
            "bind-interfaces",
            f"listen-address={T.DNS.ip}",
            # Every name not listed below is NXDOMAIN (no upstream servers exist).
            "local=/#/",
            "local-ttl=300",
            "cache-size=1000",
            f"server=/{s.tunnel_zone}/{T.EXT_TUNNEL_NS}",
        ]
        names = {**T.LAB_NAMES, **T.EXTERNAL_NAMES, s.c2_name: T.EXT_C2, s.drop_name: T.EXT_DROP}
        if s.dga_registered:
            names[s.dga_registered] = T.EXT_C2
        lines += [f"host-record={n},{ip}" for n, ip in names.items()]
        lines.append(f"mx-host={T.ZONE},mail.{T.ZONE},10")
        lines.append(f"host-record=mail.{T.ZONE},{T.WEB.ip}")
        return "\n".join(lines) + "\n"

    def _sshd_conf(self, host: T.Host) -> Path:
        ssh = self.work / "ssh"
        conf = ssh / f"sshd_{host.name}.conf"
        conf.write_text(
            f"ListenAddress {host.ip}\nPort 22\nHostKey {ssh / f'{host.name}_host_ed25519'}\n"
            f"PidFile none\nAuthorizedKeysFile {ssh / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication yes\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nUseDNS no\n"
            "MaxStartups 64:30:128\nMaxAuthTries 6\nLoginGraceTime 20\nLogLevel ERROR\n"
            "PrintMotd no\nSubsystem sftp internal-sftp\n"
        )
        return conf

    def _nginx_conf(self) -> Path:
        w, tls = self.work, self.work / "tls"
        conf = w / "nginx.conf"
        conf.write_text(
            f"""daemon off;
user root;
worker_processes 1;
pid {w}/nginx.pid;
error_log {w}/nginx-error.log error;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {w}/nginx-body;
  proxy_temp_path {w}/nginx-proxy;
  fastcgi_temp_path {w}/nginx-fastcgi;
  uwsgi_temp_path {w}/nginx-uwsgi;
  scgi_temp_path {w}/nginx-scgi;
  types {{ text/html html; text/css css; application/javascript js; image/png png;
          image/jpeg jpg; application/pdf pdf; application/zip zip; }}
  default_type application/octet-stream;
  keepalive_timeout 15;
  client_header_timeout 60;
  server {{
    listen {T.WEB.ip}:80;
    listen {T.WEB.ip}:443 ssl;
    server_name www.{T.ZONE} intranet.{T.ZONE} wiki.{T.ZONE};
    ssl_certificate {tls}/www.crt;
    ssl_certificate_key {tls}/www.key;
    root {w}/www;
  }}
}}
"""
        )
        return conf

    def _server(self, host: str, tag: str, argv: list[str]) -> None:
        """Start a daemon with its messages in work/logs (quoted when it fails to come up)."""
        logs = self.work / "logs"
        logs.mkdir(exist_ok=True)
        with (logs / f"{host}-{tag}.log").open("ab") as f:
            self.net.spawn(host, argv, stdout=f, stderr=f)

    def _start_servers(self) -> None:
        w = self.work
        # sshd's privilege separation directory (Debian's service creates it at boot).
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        (w / "dnsmasq.conf").write_text(self._dnsmasq_conf())
        self._server(
            "dns",
            "dnsmasq",
            [self.tool("dnsmasq"), "-k", "-C", str(w / "dnsmasq.conf"), "--pid-file=",
             "--user=root", "--group=root"],
        )  # fmt: skip
        for h in T.LAN_HOSTS:
            if h.sshd:
                argv = [self.tool("sshd"), "-D", "-e", "-f", str(self._sshd_conf(h))]
                self._server(h.name, "sshd", argv)
        self._server(
            "web", "nginx", [self.tool("nginx"), "-c", str(self._nginx_conf()), "-p", str(w)]
        )
        s = self.secrets
        self._server(
            "files",
            "ftp",
            [self.ftp_python, str(AGENTS), "ftp-server", "--bind", T.FILES.ip,
             "--user", s.ftp_user, "--password", s.ftp_password, "--root", str(w / "share")],
        )  # fmt: skip
        tls = w / "tls"
        self._server(
            "ext",
            "http",
            [sys.executable, str(AGENTS), "http", "--bind", "0.0.0.0:80",
             "--bind", f"{T.EXT_UPDATE}:443:{tls / 'cdn'}",
             "--bind", f"{T.EXT_C2}:443:{tls / 'c2'}",
             "--bind", f"{T.EXT_DROP}:443:{tls / 'drop'}"],
        )  # fmt: skip
        self._server("ext", "ntp", [sys.executable, str(AGENTS), "ntp-server", "--bind", T.EXT_NTP])
        self.wait_listening("dns", "udp", [53])
        self.wait_listening("web", "tcp", [22, 80, 443])
        self.wait_listening("files", "tcp", [21, 22])
        self.wait_listening("ext", "tcp", [80, 443])
        self.wait_listening("ext", "udp", [123])
        for h in T.LAN_HOSTS:
            if h.sshd:
                self.wait_listening(h.name, "tcp", [22])

    def wait_listening(self, host: str, proto: str, ports: list[int], timeout: float = 15) -> None:
        flag = "-Hltn" if proto == "tcp" else "-Hlun"
        deadline = time.monotonic() + timeout
        while True:
            out = subprocess.run(
                [self.tool("ss"), "-N", self.net.ns(host), flag],
                capture_output=True,
                text=True,
            ).stdout
            found = {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line}
            missing = [p for p in ports if p not in found]
            if not missing:
                return
            if time.monotonic() > deadline:
                logs = sorted((self.work / "logs").glob(f"{host}-*.log"))
                said = " | ".join(p.read_text(errors="replace").strip()[-200:] for p in logs)
                raise LabError(
                    f"{host}: no server listening on {proto} {missing} after {timeout:g} s"
                    + (f" ({said})" if said.strip(" |") else "")
                )
            time.sleep(0.1)
