"""Public labelled data the evaluation knows by name (folders of ../shared/data; see its
SOURCES.md). Ground truth comes from each project's own notes: the Slips test captures with the
detections the Slips project expects, Zeek's benign traces, and NFStream's protocol captures
(benign but for a few named ones).

An attacker of "*" matches any entity: used where a capture is a known finding (a self-signed
certificate, a cleartext password) without one attacker address to name.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tapetum.errors import InputError
from tapetum.evaluation.labels import Attack, Labels

ANY_TIME = (0.0, 1e12)  # the whole capture


def data_dir(explicit: str | Path | None = None) -> Path:
    """--data-dir, else $TAPETUM_DATA, else ../shared/data or ./data if present."""
    candidates = [explicit, os.environ.get("TAPETUM_DATA"), "../shared/data", "data"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    raise InputError(
        str(explicit or "../shared/data"), None,
        "public data folder not found: pass --data-dir or set TAPETUM_DATA",
    )  # fmt: skip


def _whole(
    name: str,
    category: str,
    attacker: list[str],
    victims: tuple[str, ...] | list[str] = (),
    technique: str = "",
    tool: str = "",
) -> Attack:
    return Attack(
        id=name, category=category, attacker=list(attacker), victims=list(victims),
        start_ts=ANY_TIME[0], end_ts=ANY_TIME[1], technique=technique, tool=tool,
    )  # fmt: skip


def _labels(scenario: str, capture: Path, attacks: list[Attack]) -> tuple[Path, Labels]:
    return capture, Labels(scenario=scenario, capture=capture.name, attacks=attacks)


def slips(root: Path) -> list[tuple[Path, Labels]]:
    s = root / "slips"
    return [
        _labels("slips/test7 horizontal scans", s / "test7-malicious.pcap",
                [_whole("test7-scan", "scan", ["192.168.2.16"], technique="T1046")]),
        _labels("slips/test8 ARP scan", s / "test8-malicious.pcap",
                [_whole("test8-arp-scan", "scan", ["192.168.1.247"], technique="T1018")]),
        _labels("slips/test12 ICMP sweep", s / "test12-icmp-portscan.pcap",
                [_whole("test12-icmp-sweep", "scan", ["192.168.1.109"], technique="T1046")]),
        _labels("slips/test19 nmap ssh-brute", s / "test19-malicious-ssh" /
                "malicious-ssh-bruteforce.pcap",
                [_whole("test19-ssh-brute", "brute-force", ["147.32.80.40"], ["147.32.80.37"],
                        technique="T1110", tool="nmap --script ssh-brute")]),
        _labels("slips/test-cc C2 beaconing", s / "test-cc" / "test-cc-capture-1.pcap",
                [_whole("test-cc-beacon", "c2-beacon", ["147.32.80.37"], ["141.193.213.21"],
                        technique="T1071")]),
    ]  # fmt: skip


def zeek(root: Path) -> list[tuple[Path, Labels]]:
    z = root / "zeek"
    return [
        _labels("zeek/ssh_basic (benign)", z / "ssh_basic" / "ssh.pcap", []),
        _labels("zeek/wikipedia (benign)", z / "wikipedia" / "wikipedia.pcap", []),
    ]


#: NFStream captures that hold a known finding (everything else there is taken as benign).
NFSTREAM_FINDINGS: dict[str, list[Attack]] = {
    "synscan.pcap": [_whole("nfstream-synscan", "scan", ["172.16.0.8"], technique="T1595")],
    "selfsigned.pcap": [_whole("nfstream-selfsigned", "protocol-anomaly", ["*"])],
    "ssl-cert-name-mismatch.pcap": [_whole("nfstream-cert-mismatch", "protocol-anomaly", ["*"])],
    "http_auth.pcap": [_whole("nfstream-basic-auth", "protocol-anomaly", ["*"])],
}


def nfstream(root: Path) -> list[tuple[Path, Labels]]:
    folder = root / "nfstream" / "pcaps"
    out = []
    for p in sorted(folder.iterdir()):
        out.append(_labels(f"nfstream/{p.name}", p, list(NFSTREAM_FINDINGS.get(p.name, []))))
    return out


DATASETS: dict[str, Callable[[Path], list[tuple[Path, Labels]]]] = {
    "slips": slips,
    "zeek": zeek,
    "nfstream": nfstream,
}


def load_dataset(name: str, root: Path) -> list[tuple[Path, Labels]]:
    if name not in DATASETS:
        raise InputError(name, None, f"unknown dataset; known: {', '.join(DATASETS)}")
    items = DATASETS[name](root)
    missing = [str(p) for p, _ in items if not p.exists()]
    if missing:
        raise InputError(missing[0], None, f"dataset {name!r}: capture missing")
    return items
