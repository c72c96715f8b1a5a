"""The lab's network: hosts, addresses and DNS names.

```
                       namespace tpl<pid>-net (bridge br0, tcpdump -i br0)
   ws1 10.77.0.101 ─┐
   ws2 10.77.0.102 ─┤
   ws3 10.77.0.103 ─┤
   web 10.77.0.10  ─┤   nginx :80 :443, sshd
   files 10.77.0.20 ┤   sshd, FTP :21
   db 10.77.0.30   ─┤   sshd
   dns 10.77.0.53  ─┤   dnsmasq (lab.test, NXDOMAIN otherwise)
   attacker 10.77.0.66 ┤ (on-link route only: no route off the lab LAN)
   rtr 10.77.0.1   ─┘── 198.51.100.1 ── ext 198.51.100.0/24 ("the internet": update/CDN,
                                             NTP, C2, drop server, tunnel name server)
```
"""

from __future__ import annotations

from dataclasses import dataclass

LAN = "10.77.0.0/24"
EXTERNAL = "198.51.100.0/24"  # TEST-NET-2: documentation range, never routed anywhere real
ROUTER_LAN = "10.77.0.1"
ROUTER_EXT = "198.51.100.1"
ZONE = "lab.test"


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    ip: str
    role: str  # client, server, dns, attacker, router
    sshd: bool = False


CLIENTS = (
    Host("ws1", "10.77.0.101", "client", sshd=True),
    Host("ws2", "10.77.0.102", "client", sshd=True),
    Host("ws3", "10.77.0.103", "client", sshd=True),
)
WEB = Host("web", "10.77.0.10", "server", sshd=True)
FILES = Host("files", "10.77.0.20", "server", sshd=True)
DB = Host("db", "10.77.0.30", "server", sshd=True)
DNS = Host("dns", "10.77.0.53", "dns")
ATTACKER = Host("attacker", "10.77.0.66", "attacker")
SERVERS = (WEB, FILES, DB)
LAN_HOSTS = (*CLIENTS, *SERVERS, DNS, ATTACKER)

# External addresses, all on the one "ext" namespace.
EXT_HOST = "198.51.100.2"
EXT_UPDATE = "198.51.100.20"  # OS update checks and a CDN
EXT_NTP = "198.51.100.123"
EXT_TUNNEL_NS = "198.51.100.53"  # name server of the DNS tunnel's delegated zone
EXT_C2 = "198.51.100.77"
EXT_DROP = "198.51.100.99"  # exfiltration drop server
EXT_ADDRESSES = (EXT_HOST, EXT_UPDATE, EXT_NTP, EXT_TUNNEL_NS, EXT_C2, EXT_DROP)

# Names dnsmasq answers (everything else is NXDOMAIN).
LAB_NAMES = {
    f"www.{ZONE}": WEB.ip,
    f"intranet.{ZONE}": WEB.ip,
    f"wiki.{ZONE}": WEB.ip,
    f"files.{ZONE}": FILES.ip,
    f"ftp.{ZONE}": FILES.ip,
    f"backup.{ZONE}": FILES.ip,
    f"db.{ZONE}": DB.ip,
    f"ns.{ZONE}": DNS.ip,
    f"gw.{ZONE}": ROUTER_LAN,
    **{f"{c.name}.{ZONE}": c.ip for c in CLIENTS},
}
EXTERNAL_NAMES = {
    "security.example-os.org": EXT_UPDATE,
    "deb.example-os.org": EXT_UPDATE,
    "cdn.example-cdn.net": EXT_UPDATE,
    "static.example-cdn.net": EXT_UPDATE,
    "time.example-ntp.org": EXT_NTP,
}
# Names benign clients look up that do not exist (typos, WPAD, stale service records).
BENIGN_NXDOMAIN = (
    f"wpad.{ZONE}",
    f"printer3.{ZONE}",
    "isatap.lab.test",
    "cdn.exmaple-cdn.net",
)
