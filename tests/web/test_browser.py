"""The dashboard in a real browser: Playwright driving Debian's chromium against a real
`tapetum serve` subprocess on loopback. Log in with a token, open the incident list, open an
incident, see its dry-run response, give a verdict; visit the other pages.

Screenshots go to the test's temporary directory; with TAPETUM_SCREENSHOTS=docs they are also
copied to docs/img/ (the ones docs/web.md shows).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.web.conftest import HOSTILE_ID, free_port

CHROMIUM = Path("/usr/bin/chromium")
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


@pytest.fixture
def served(store: Path, tmp_path: Path) -> Iterator[str]:
    """`tapetum serve` as a subprocess on a free loopback port; yields its base URL."""
    port = free_port()
    log = tmp_path / "serve.log"
    err_file = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tapetum", "serve", "--store", str(store), "--port", str(port),
         "--config", str(Path(__file__).parent / "playbooks.toml")],
        stdout=subprocess.DEVNULL,
        stderr=err_file,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/api/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tapetum serve did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)
        err_file.close()


def test_login_incidents_detail_verdict_dry_run(served: str, token: str, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    shots = tmp_path / "shots"
    shots.mkdir()
    problems: list[str] = []
    requested: list[str] = []

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("request", lambda r: requested.append(r.url))

        def shot(name: str, full_page: bool = True) -> None:
            page.screenshot(path=str(shots / f"{name}.png"), full_page=full_page)

        # Not logged in: any page sends the browser to the login page.
        page.goto(served + "/incidents")
        page.wait_for_url("**/login?next=*")
        page.fill("#token", "tpt_not-a-token")
        page.click("button[type=submit]")
        page.wait_for_selector("#error:not([hidden])")
        assert "refused" in page.inner_text("#error")
        page.fill("#token", token)
        shot("login")
        problems.clear()  # the refused token's 401 was expected
        page.click("button[type=submit]")
        page.wait_for_url(served + "/incidents")

        # The incident list: the demo's three and the hostile one, shown as text.
        page.wait_for_selector("#incident-table tbody tr")
        assert page.inner_text("#count") == "4 incident(s)"
        assert "<script>window.__pwned=1</script>" in page.inner_text("#incident-table")
        assert page.evaluate("window.__pwned") is None
        shot("incidents")
        page.fill("input[name=entity]", "10.20.0.66")
        page.click("#filters button[type=submit]")
        # Locator waits, not wait_for_function: the page's CSP forbids eval.
        expect(page.locator("#count")).to_have_text("1 incident(s)")

        # The scan incident: timeline, evidence, the dry-run response.
        page.click("#incident-table a:has-text('Discovery by 10.20.0.66')")
        page.wait_for_selector("#timeline tbody tr")
        assert page.locator("#timeline tbody tr").count() == 3
        assert "probed 1,000 TCP ports" in page.inner_text("#timeline")
        assert page.locator("#ev-flows tbody tr").count() == 200
        actions = page.inner_text("#actions")
        assert "would have blocked 10.20.0.66 for 10 min" in actions
        assert "pending-approval" in actions
        shot("incident", full_page=False)  # 200 evidence rows below

        # A verdict from the page.
        page.fill("#verdict-note", "authorised lab scanner")
        page.click("button.verdict[data-verdict=fp]")
        page.wait_for_selector("#verdicts li")
        assert page.inner_text("#verdicts") == "fp by dashboard: authorised lab scanner"
        shot("incident-verdict", full_page=False)

        # The hostile incident's page: its text is shown, not run.
        page.goto(served + f"/incidents/{HOSTILE_ID}")
        page.wait_for_selector("#timeline tbody tr")
        assert page.inner_text("#title").startswith("<script>")
        assert page.evaluate("window.__pwned") is None

        page.goto(served + "/")
        page.wait_for_selector("#traffic-chart canvas")
        page.wait_for_selector("#top-entities tbody tr")
        assert page.locator("#stages .bar").count() == 2
        shot("overview")

        page.goto(served + "/entities/10.20.0.66")
        page.wait_for_selector("#entity-incidents tbody tr")
        page.wait_for_selector("#risk p")
        assert "Score" in page.inner_text("#risk")
        shot("entity")

        page.goto(served + "/search")
        page.wait_for_selector("#results tbody tr")
        page.select_option("select[name=kind]", "dns")
        page.fill("input[name=query]", "slack")
        page.click("#search-form button[type=submit]")
        expect(page.locator("#results thead")).to_contain_text("query")
        rows = page.locator("#results tbody tr")
        expect(rows.first).to_contain_text("slack")
        assert all("slack" in t for t in rows.all_inner_texts())
        shot("search")

        page.goto(served + "/detectors")
        page.wait_for_selector("#detectors tbody tr")
        shot("detectors")
        browser.close()

    assert problems == []
    # Everything came from the server itself: no CDN, nothing else on the network.
    assert all(u.startswith(served) for u in requested), [
        u for u in requested if not u.startswith(served)
    ]
    if os.environ.get("TAPETUM_SCREENSHOTS") == "docs":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        for png in shots.iterdir():
            shutil.copy(png, DOCS_IMG / f"web-{png.name}")
