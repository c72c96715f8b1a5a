"""`tapetum token create|list|revoke`; no serving a non-loopback address without a token."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tapetum.commands.serve import is_loopback
from tapetum.sinks.duckdb import connect
from tapetum.web import tokens


def tapetum(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tapetum", *args], capture_output=True, text=True, timeout=60
    )


def test_token_create_list_revoke(store: Path) -> None:
    made = tapetum("token", "create", "--store", str(store), "--name", "soar")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("tpt_") and len(secret) > 40
    listed = json.loads(tapetum("token", "list", "--store", str(store), "--json").stdout)
    assert [t["name"] for t in listed] == ["soar"]
    assert secret not in json.dumps(listed)
    con = connect(store)
    try:
        assert tokens.check_token(con, secret) == listed[0]["token_id"]
    finally:
        con.close()
    done = tapetum("token", "revoke", "--store", str(store), listed[0]["token_id"])
    assert done.returncode == 0, done.stderr
    again = tapetum("token", "revoke", "--store", str(store), listed[0]["token_id"])
    assert again.returncode == 1 and "no active token" in again.stderr
    con = connect(store)
    try:
        assert tokens.check_token(con, secret) is None
    finally:
        con.close()


def test_serve_refuses_a_public_address_without_a_token(store: Path) -> None:
    r = tapetum("serve", "--store", str(store), "--host", "0.0.0.0", "--port", "1")
    assert r.returncode == 2
    assert "refusing to listen on 0.0.0.0" in r.stderr


def test_serve_needs_an_existing_store(tmp_path: Path) -> None:
    r = tapetum("serve", "--store", str(tmp_path / "none.duckdb"))
    assert r.returncode == 4 and "no such store" in r.stderr
    assert not (tmp_path / "none.duckdb").exists()


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert is_loopback("127.8.9.10") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.0.0.1")
    assert not is_loopback("example.com")
