"""`tapetum intel` end to end: import into a store, list, remove, pull from TAXII, and the
indicators reaching `tapetum analyze` through the same store."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tapetum.testing import CaptureBuilder, Host, dns_lookup, http_session, tls_session
from tests.intel.helpers import bundle, indicator


def tapetum(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tapetum", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _listed(tmp: Path, *extra: str) -> dict[str, Any]:
    r = tapetum("intel", "list", "--json", "--store", "s.duckdb", *extra, cwd=tmp)
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def test_import_list_merge_remove(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("203.0.113.66\nevil.example\nbogus line here\n")
    r = tapetum("intel", "import", "a.txt", "--source", "feed-a", "--confidence", "60",
                "--store", "s.duckdb", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "2 indicators" in r.stdout and "a.txt:3: cannot tell what 'bogus' is" in r.stdout
    listed = _listed(tmp_path)
    assert listed["by_type"] == {"ip": 1, "domain": 1} and listed["by_source"] == {"feed-a": 2}
    first = {i["value"]: i for i in listed["indicators"]}
    assert first["203.0.113.66"]["confidence"] == 60 and first["203.0.113.66"]["merges"] == 0
    # Re-import with a higher confidence: merged, not duplicated; first_imported kept.
    r = tapetum("intel", "import", "a.txt", "--source", "feed-a", "--confidence", "90",
                "--store", "s.duckdb", "--json", cwd=tmp_path)  # fmt: skip
    report = json.loads(r.stdout)["imported"][0]
    assert report["merged_with_stored"] == 2 and report["new"] == 0
    again = {i["value"]: i for i in _listed(tmp_path)["indicators"]}
    assert again["203.0.113.66"]["confidence"] == 90 and again["203.0.113.66"]["merges"] == 1
    assert again["203.0.113.66"]["first_imported"] == first["203.0.113.66"]["first_imported"]
    # Another source listing the same IP is kept apart (removable on its own).
    (tmp_path / "b.txt").write_text("203.0.113.66\n")
    tapetum("intel", "import", "b.txt", "--store", "s.duckdb", cwd=tmp_path)
    assert _listed(tmp_path, "--type", "ip")["by_source"] == {"feed-a": 2, "b.txt": 1}
    assert len(_listed(tmp_path, "--type", "ip")["indicators"]) == 2
    r = tapetum("intel", "remove", "--source", "feed-a", "--store", "s.duckdb", cwd=tmp_path)
    assert "removed 2 indicators" in r.stdout
    assert _listed(tmp_path)["by_source"] == {"b.txt": 1}


def test_import_is_atomic_per_file(tmp_path: Path) -> None:
    (tmp_path / "good.txt").write_text("198.51.100.1\n")
    (tmp_path / "broken.json").write_text('{"type": "bundle", "objects": [{"type": "indic')
    r = tapetum("intel", "import", "good.txt", "broken.json", "--store", "s.duckdb", cwd=tmp_path)
    assert r.returncode == 1  # some files failed
    assert "broken.json" in r.stderr and "nothing imported from it" in r.stderr
    assert _listed(tmp_path)["by_source"] == {"good.txt": 1}
    r = tapetum("intel", "import", "broken.json", "--store", "s.duckdb", cwd=tmp_path)
    assert r.returncode == 3
    r = tapetum("intel", "list", "--store", "missing.duckdb", cwd=tmp_path)
    assert r.returncode == 4


@pytest.fixture
def taxii_server() -> Iterator[str]:
    """A TAXII 2.1 collection on loopback, two pages."""
    pages = [
        {"more": True, "next": "p2",
         "objects": [indicator(1, "[ipv4-addr:value = '203.0.113.66']", confidence=85)]},
        {"more": False,
         "objects": [indicator(2, "[domain-name:value = 'update.evil-c2.example']")]},
    ]  # fmt: skip
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Accept", ""))
            if not self.path.startswith("/api1/collections/c2-feed/objects/"):
                self.send_error(404)
                return
            body = json.dumps(pages[1] if "next=p2" in self.path else pages[0]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/taxii+json;version=2.1")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/api1/"
    finally:
        server.shutdown()
        server.server_close()
    assert seen and all(a == "application/taxii+json;version=2.1" for a in seen)


def test_taxii_pull(tmp_path: Path, taxii_server: str) -> None:
    r = tapetum("intel", "pull", "--url", taxii_server, "--collection", "c2-feed",
                "--store", "s.duckdb", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    listed = _listed(tmp_path)
    assert listed["by_source"] == {"taxii:c2-feed": 2}
    assert {i["value"]: i["confidence"] for i in listed["indicators"]} == {
        "203.0.113.66": 85, "update.evil-c2.example": 50,
    }  # fmt: skip
    r = tapetum("intel", "pull", "--url", taxii_server, "--collection", "nope",
                "--store", "s.duckdb", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 3 and "404" in r.stderr


def test_analyze_picks_up_store_indicators(tmp_path: Path) -> None:
    b = CaptureBuilder(seed=41)
    infected, resolver, c2 = Host("10.1.0.66"), Host("10.1.0.2"), Host("203.0.113.66")
    for k in range(12):  # benign neighbours
        b.add(
            k * 3.0, http_session, Host(f"10.1.0.{10 + k}"), Host("192.0.2.10"), host="ok.example"
        )
    b.add(5.0, dns_lookup, infected, resolver, "update.evil-c2.example", a=[c2.ip])
    b.add(5.1, tls_session, infected, c2, sni="update.evil-c2.example")
    b.add(9.0, tls_session, Host("10.1.0.12"), Host("192.0.2.11"), sni="www.evil-c2.example")
    b.write(tmp_path / "c2.pcap")
    (tmp_path / "feed.json").write_text(
        json.dumps(
            bundle(
                indicator(
                    1, "[ipv4-addr:value = '203.0.113.66']", confidence=90, name="Emotet C2 server"
                ),
                indicator(2, "[domain-name:value = 'evil-c2.example']", confidence=60),
            )
        )
    )
    r = tapetum("intel", "import", "feed.json", "--source", "abuse-feed", "--store", "s.duckdb",
                cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = tapetum("analyze", "c2.pcap", "--store", "s.duckdb", "--json", "--no-progress",
                cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    alerts = [a for a in json.loads(r.stdout)["alerts"] if a["alert"]["category"] == "intel"]
    found = {(a["alert"]["entity"], a["alert"]["signature_id"]) for a in alerts}
    assert found == {("10.1.0.66", 9_000_090), ("10.1.0.66", 9_000_092), ("10.1.0.12", 9_000_092)}
    ip_alert = next(a for a in alerts if a["alert"]["signature_id"] == 9_000_090)
    text = ip_alert["alert"]["explanation"]
    assert "abuse-feed" in text and "Emotet C2 server" in text and "confidence 90" in text
    assert ip_alert["alert"]["severity"] == 1
    # The analysis stored its alerts next to the indicators.
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    n = con.execute("SELECT count(*) FROM alerts WHERE category = 'intel'").fetchone()
    assert n is not None and n[0] == 3
    con.close()
    # Without the store (and no indicator files) nothing is matched.
    r = tapetum("analyze", "c2.pcap", "--no-store", "--store", "other.duckdb", "--json",
                "--no-progress", cwd=tmp_path)  # fmt: skip
    assert not [a for a in json.loads(r.stdout)["alerts"] if a["alert"]["category"] == "intel"]
