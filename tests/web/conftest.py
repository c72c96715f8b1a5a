"""Fixtures for the web tests: a real store from `tapetum analyze --demo`, with API tokens."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapetum.sinks.duckdb import connect
from tapetum.web import tokens

#: An incident whose every text field is hostile, added beside the demo's real ones.
HOSTILE_ID = "hostile0000000001"
HOSTILE_TEXT = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">\' OR 1=1 --'


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tapetum analyze --demo --store X` run once, plus one incident with hostile strings."""
    path = tmp_path_factory.mktemp("web") / "demo.duckdb"
    subprocess.run(
        [sys.executable, "-m", "tapetum", "analyze", "--demo", "--store", str(path)],
        check=True,
        capture_output=True,
    )
    con = connect(path)
    try:
        # The hostile incident copies the scan one and replaces its text: strings as an attacker
        # could get them into the store (a DNS name, a certificate subject, an SNI).
        con.execute(
            "INSERT INTO incidents SELECT * REPLACE (? AS incident_id, ? AS title, ? AS summary, "
            "? AS entity) FROM incidents WHERE stage = 'discovery'",
            [HOSTILE_ID, HOSTILE_TEXT, HOSTILE_TEXT, HOSTILE_TEXT],
        )
    finally:
        con.close()
    return path


@pytest.fixture
def store(demo_store: Path, tmp_path: Path) -> Path:
    """A private copy of the demo store (tests write verdicts and tokens into it)."""
    p = tmp_path / "store.duckdb"
    shutil.copy(demo_store, p)
    return p


@pytest.fixture
def token(store: Path) -> str:
    con = connect(store)
    try:
        return tokens.create_token(con, "test")[1]
    finally:
        con.close()


class Client:
    """A tiny HTTP client (http.client) for a server on loopback."""

    def __init__(self, port: int) -> None:
        self.port = port

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json_body: object = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        import http.client
        import json

        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            body = json.dumps(json_body).encode()
            h.setdefault("Content-Type", "application/json")
        con = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            con.request(method, path, body=body, headers=h)
            resp = con.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            con.close()

    def json(self, path: str, token: str, expect: int = 200) -> object:
        import json

        status, _, data = self.call("GET", path, token=token)
        assert status == expect, (path, status, data[:300])
        return json.loads(data)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(store: Path) -> Iterator[Client]:
    """The app under a real uvicorn on a free loopback port, in a thread."""
    import threading
    import time

    import uvicorn

    from tapetum.config import load_config
    from tapetum.web.app import create_app

    port = free_port()
    cfg = load_config(Path(__file__).parent / "playbooks.toml")
    srv = uvicorn.Server(
        uvicorn.Config(create_app(store, cfg), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield Client(port)
    finally:
        srv.should_exit = True
        thread.join(10)
