"""Labelled scenario for `uba`: an sshd auth log (not a pcap: the detector reads auth events) of
six weeks of routine logins by 12 users, plus three accounts in trouble:

- mallory's account is used from Australia two hours after a login from her home in the US
  (impossible travel);
- trent's password is guessed: a burst of failures, then a success from the guesser's address;
- oscar, a day worker, logs in on a Sunday at 03:00.

Addresses are real public ones so that the bundled GeoIP database places them (GB, US, DE, AU).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

MONDAY = datetime(2024, 1, 1, tzinfo=UTC)
HOME = {"GB": "81.2.69.{}", "US": "8.8.4.{}", "DE": "85.214.132.{}"}
AU = "139.130.4.5"
GUESSER = "203.0.113.66"


def _line(when: datetime, pid: int, text: str) -> str:
    return f"{when.strftime('%Y-%m-%dT%H:%M:%S')}Z bastion sshd[{pid}]: {text}"


def build(tmp: Path) -> tuple[Path, set[str]]:
    users = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
             "mallory", "trent", "oscar"]  # fmt: skip
    lines: list[tuple[datetime, str]] = []
    home: dict[str, str] = {}
    pid = 1000
    for k, user in enumerate(users):
        country = ("GB", "US", "DE")[k % 3]
        ip = home[user] = HOME[country].format(10 + k)
        start_h = 7 + k % 4  # each user has a routine of their own
        for d in range(42):
            day = MONDAY + timedelta(days=d)
            if day.weekday() >= 5:
                continue
            for h in (start_h, start_h + 5):
                when = day + timedelta(hours=h, minutes=(d * 13 + k * 7) % 55)
                pid += 1
                lines.append((when, _line(when, pid, f"Accepted password for {user} from {ip} "
                                                     f"port {40000 + pid % 99} ssh2")))  # fmt: skip
        if k % 4 == 1:  # an occasional typo before a login: not a burst
            when = MONDAY + timedelta(days=9, hours=start_h, minutes=1)
            lines.append((when - timedelta(seconds=20), _line(
                when, pid, f"Failed password for {user} from {ip} port 40001 ssh2")))  # fmt: skip
    end = MONDAY + timedelta(weeks=6)
    # mallory: a login from home (the US), then from Australia two hours later.
    t = end + timedelta(hours=9, minutes=30)  # her routine hour
    lines.append((t, _line(t, 90000, f"Accepted password for mallory from {home['mallory']} "
                                     "port 50000 ssh2")))  # fmt: skip
    t += timedelta(hours=2)
    lines.append((t, _line(t, 90001, f"Accepted password for mallory from {AU} port 50000 ssh2")))
    # trent: 12 failures in 4 minutes, then the guess that worked.
    t = end + timedelta(days=1, hours=13)
    for j in range(12):
        w = t + timedelta(seconds=20 * j)
        lines.append(
            (
                w,
                _line(
                    w, 90100 + j, f"Failed password for trent from {GUESSER} port {51000 + j} ssh2"
                ),
            )
        )
    w = t + timedelta(minutes=5)
    lines.append(
        (w, _line(w, 90200, f"Accepted password for trent from {GUESSER} port 52000 ssh2"))
    )
    # oscar: Sunday 03:00 from his usual address.
    t = end + timedelta(days=6, hours=3, minutes=10)
    lines.append((t, _line(t, 90300, f"Accepted password for oscar from {home['oscar']} port "
                                     "53000 ssh2")))  # fmt: skip
    lines.sort(key=lambda x: x[0])
    path = tmp / "auth.log"
    path.write_text("".join(text + "\n" for _, text in lines))
    return path, {"user:mallory", "user:trent", "user:oscar"}
