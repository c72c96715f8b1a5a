"""Shared test fixtures. Real data comes from ../shared/data beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data").resolve()
SCHEMA = REPO / "src" / "tapetum" / "schema" / "eve.schema.json"


def data_path(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test when the data is not there."""
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data not available: {p}")
    return p


@pytest.fixture
def wikipedia_pcap() -> Path:
    return data_path("zeek", "wikipedia", "wikipedia.pcap")


@pytest.fixture
def ssh_pcap() -> Path:
    return data_path("zeek", "ssh_basic", "ssh.pcap")
