"""The journey over HTTPS through the real Traefik, in a real Chromium that trusts the dev CA.

Traefik runs the production configuration (tests/traefik_harness.py) in front of the gateway
configured from certs/gateway.env, on the production domain (``example.org``, mapped to
loopback by Chromium's ``--host-resolver-rules``). The browser trusts ``gateway certs dev``'s
CA through its own NSS database (``certutil``, in a private HOME): no certificate error is
ignored, so a wrong certificate or name fails the navigation. Register on the apex, reach the
team's Datasette over HTTPS signed in, upload a CSV of a few MB and import it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gateway.config import Config
from gateway.tls import make_dev_certs
from tests import traefik_harness as harness
from tests.e2e.browser import VIEWPORT, Watch, chromium_path
from tests.e2e.test_journey import DROP
from tests.edge import Edge, run_edge

if TYPE_CHECKING:
    from playwright.async_api import Page, Response

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]

DOMAIN = "example.org"
ANN = ("ann@example.org", "a long and fine passphrase")
TEAM = "newsroom"
READY = 90_000  # ms
ROWS = [(f"{i:05d}", f"Town {i}", i * 3, i / 8) for i in range(100_000)]
CSV = "zip,town,pop,share\n" + "".join(f"{z},{t},{p},{s}\n" for z, t, p, s in ROWS)


def trusting_home(home: Path, ca: Path) -> Path:
    """A HOME whose NSS database (what Chromium on Linux trusts) holds the dev CA."""
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    subprocess.run(["certutil", "-N", "-d", f"sql:{db}", "--empty-password"], check=True)
    add = ["certutil", "-A", "-d", f"sql:{db}", "-n", "gateway dev CA", "-t", "C,,", "-i"]
    subprocess.run([*add, str(ca)], check=True)
    return home


async def goto(page: Page, url: str) -> Response | None:
    """``page.goto``, once more if Chromium reports ERR_NETWORK_CHANGED: it aborts navigations
    when the host's interfaces change, which Docker does whenever another test starts a
    container on this shared machine (a GET: sending it again is safe)."""
    from playwright.async_api import Error

    try:
        return await page.goto(url)
    except Error as exc:
        if "ERR_NETWORK_CHANGED" not in str(exc):
            raise
        return await page.goto(url)


@pytest.fixture
async def behind_traefik(
    config: Config, tmp_path: Path
) -> AsyncIterator[tuple[Edge, harness.Traefik, Path]]:
    ports = harness.Ports.free()
    certs = make_dev_certs(DOMAIN, tmp_path / "certs")
    async with run_edge(harness.gateway_config(config, ports)) as gw:
        traefik = await asyncio.to_thread(
            harness.start_for_gateway, gw.config.port, certs, tmp_path / "traefik", ports
        )
        try:
            yield gw, traefik, trusting_home(tmp_path / "home", certs.ca)
        finally:
            traefik.stop()


@pytest.fixture
async def https_page(
    behind_traefik: tuple[Edge, harness.Traefik, Path], watch: Watch
) -> AsyncIterator[Page]:
    from playwright.async_api import async_playwright

    _gw, _traefik, home = behind_traefik
    resolver = f"--host-resolver-rules=MAP *.{DOMAIN} 127.0.0.1, MAP {DOMAIN} 127.0.0.1"
    args = ["--no-sandbox", resolver, "--disable-gpu", "--no-first-run", "--disable-sync"]
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=chromium_path(), args=args, env={"HOME": str(home)}
        )
        try:
            context = await browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
            context.set_default_timeout(30_000)
            page = await context.new_page()
            watch.attach(page)
            yield page
        finally:
            await browser.close()


async def test_the_journey_over_https_through_traefik(
    behind_traefik: tuple[Edge, harness.Traefik, Path], https_page: Page, watch: Watch
) -> None:
    from playwright.async_api import expect

    gw, _traefik, _home = behind_traefik
    page = https_page
    base, team_url = gw.config.base_url, gw.config.team_url(TEAM)
    assert base.startswith(f"https://{DOMAIN}:")

    # Plain HTTP is redirected by Traefik; the certificate is trusted, nothing ignored.
    web = f"http://{DOMAIN}:{_traefik.ports.web}/register"
    response = await goto(page, web)
    assert response is not None and page.url == base + "/register"
    security = await response.security_details()
    assert security is not None and security.get("subjectName") == DOMAIN, security

    await page.get_by_label("Email").fill(ANN[0])
    await page.get_by_label("Password").fill(ANN[1])
    await page.get_by_label("Team name").fill(TEAM)
    await page.get_by_role("button", name="Create account and team").click()
    await page.wait_for_url(base + "/dashboard")
    [session] = [c for c in await page.context.cookies() if "gateway_session" in c["name"]]
    assert session["name"] == "__Secure-gateway_session" and session["secure"], session
    await expect(page.locator(f"#team-{TEAM} .badge").first).to_have_text("up", timeout=READY)

    # The team's Datasette over HTTPS, signed in by the apex's Domain cookie.
    await page.get_by_role("link", name="Open Datasette").click()
    await page.wait_for_url(team_url + "/")
    await expect(page.locator("header nav")).to_contain_text(ANN[0])

    # A CSV of a few MB, dropped on the upload page, imported.
    assert len(CSV) > 3_000_000
    await goto(page, team_url + "/-/upload-csv")
    await page.evaluate(DROP, ["towns.csv", CSV])
    review = page.get_by_role("link", name="Review the columns and import")
    await review.wait_for(timeout=READY)
    await review.click()
    await page.get_by_label("Table name").fill("towns")
    await page.get_by_role("button", name="Import").click()
    await page.locator("#table-link").wait_for(timeout=READY)
    await page.locator("#table-link").click()
    await page.wait_for_url(team_url + "/data/towns")
    await expect(page.locator("table.rows-and-columns")).to_contain_text("00001")
    watch.check("the journey through Traefik")
    with sqlite3.connect(gw.config.teams_dir / TEAM / "data.db") as db:
        assert db.execute("SELECT count(*) FROM towns").fetchone() == (len(ROWS),)
        assert db.execute("SELECT zip FROM towns LIMIT 1").fetchone() == ("00000",)
