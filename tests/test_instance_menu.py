"""Issue 19: Datasette knows the service around it. A real Chromium, signed in, uses each link
the instance plugin (gateway/instance/gateway_menu.py) adds to Datasette's own menu and table
actions, and an anonymous reader of a public team sees none of them.

``gateway.test`` is mapped to loopback (as in test_auth_browser.py) so one sign-in on the apex
reaches every team host through the Domain cookie.
"""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from gateway.auth import accounts
from gateway.config import Config
from tests.auth_support import PASSWORD, make_user
from tests.conftest import Running, StartGateway

pytestmark = pytest.mark.browser
RULES = "--host-resolver-rules=MAP *.gateway.test 127.0.0.1, MAP gateway.test 127.0.0.1"
MEMBER_LINKS = ("Upload CSV", "Dashboard", "Members and API tokens", "Your API tokens", "Sign out")


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "no Chromium: apt-get install -y chromium (see .ci/run)"
    return path


async def menu(page, url: str) -> dict[str, str]:
    """Open Datasette's menu on ``url``; its links, label -> href."""
    await page.goto(url)
    summary = page.locator("details.nav-menu > summary")
    if await summary.count() == 0:
        return {}
    await summary.click()
    links = page.locator("details.nav-menu .nav-menu-inner a")
    return {
        (await a.inner_text()).strip(): await a.get_attribute("href") or ""
        for a in await links.all()
    }


async def follow(page, start: str, label: str) -> None:
    await menu(page, start)
    await page.locator("details.nav-menu .nav-menu-inner a", has_text=label).click()
    await page.wait_for_load_state()


def towns_table(gw: Running) -> None:
    with sqlite3.connect(gw.config.teams_dir / "alpha" / "data.db") as conn:
        conn.execute("CREATE TABLE towns (name TEXT, pop INTEGER)")
        conn.execute("INSERT INTO towns VALUES ('Adjuntas', 18181)")


async def test_menu_links_work_from_a_datasette_page(
    config: Config, start_gateway: StartGateway
) -> None:
    from playwright.async_api import async_playwright

    gw = await start_gateway(config.replace(domain="gateway.test"), teams=("alpha", "beta"))
    make_user(gw, "ann@example.org", {"alpha": "owner", "beta": "member"})
    await gw.wait_healthy("alpha", timeout=60)
    await gw.wait_healthy("beta", timeout=60)
    towns_table(gw)
    base, alpha, beta = gw.config.base_url, gw.config.team_url("alpha"), gw.config.team_url("beta")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", RULES])
        page = await browser.new_page()
        await page.goto(f"{base}/login")
        await page.get_by_label("Email").fill("ann@example.org")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(f"{base}/dashboard")

        links = await menu(page, alpha + "/")
        assert links == {
            "Upload CSV": f"{alpha}/-/upload-csv",
            "Dashboard": f"{base}/dashboard",
            "Members and API tokens": f"{base}/teams/alpha",
            "Team beta": f"{beta}/",
            "Sign out": f"{base}/logout",
        }
        # Datasette's pages say their language (axe: html-has-lang).
        assert await page.evaluate("document.documentElement.lang") == "en"
        # A plain member of beta gets their tokens, not the members page's owner wording.
        beta_links = await menu(page, beta + "/")
        assert "Your API tokens" in beta_links and "Members and API tokens" not in beta_links
        assert beta_links["Team alpha"] == f"{alpha}/"

        await follow(page, alpha + "/", "Upload CSV")
        assert page.url == f"{alpha}/-/upload-csv"
        assert await page.locator("h1").inner_text() == "Upload CSV files to alpha"
        await follow(page, alpha + "/", "Dashboard")
        assert page.url == f"{base}/dashboard"
        await follow(page, alpha + "/data", "Members and API tokens")
        assert page.url == f"{base}/teams/alpha"
        assert "ann@example.org" in await page.content()
        await follow(page, alpha + "/data/towns", "Team beta")
        assert page.url == f"{beta}/"

        # Table actions on a table: append to it, prefilled on the upload page.
        await page.goto(alpha + "/data/towns")
        await page.locator("details.actions-menu-links > summary").click()
        await page.get_by_role("link", name="Append a CSV to this table").click()
        await page.wait_for_url(f"{alpha}/-/upload-csv?table=towns&mode=append")
        assert "appended to the table towns" in await page.locator("#target").inner_text()
        assert await page.locator("input[name=mode]").get_attribute("value") == "append"
        await page.goto(alpha + "/data")
        await page.locator("details.actions-menu-links > summary").click()
        await page.get_by_role("link", name="Upload a CSV into a new table").click()
        await page.wait_for_url(f"{alpha}/-/upload-csv")

        # Sign out from Datasette's menu: a confirmation page, then signed out everywhere.
        await follow(page, alpha + "/", "Sign out")
        assert page.url == f"{base}/logout"
        await page.locator("main").get_by_role("button", name="Sign out").click()
        await page.wait_for_url(f"{base}/login")
        await page.goto(alpha + "/")
        assert page.url.startswith(f"{base}/login?next=")
        await browser.close()


async def test_an_anonymous_reader_of_a_public_team_sees_no_member_links(
    config: Config, start_gateway: StartGateway
) -> None:
    from playwright.async_api import async_playwright

    gw = await start_gateway(config.replace(domain="gateway.test"), teams=("alpha",))
    accounts.set_public(gw.app.store, "alpha", True)
    gw.app.auth.changed()
    await gw.wait_healthy("alpha", timeout=60)
    towns_table(gw)
    alpha = gw.config.team_url("alpha")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", RULES])
        page = await browser.new_page()
        for path in ("/", "/data", "/data/towns"):
            links = await menu(page, alpha + path)
            assert page.url == alpha + path  # read, not sent to sign in
            assert not set(links) & set(MEMBER_LINKS), links
            html = await page.content()
            assert "/-/upload-csv" not in html and "/logout" not in html
        assert await page.locator("details.actions-menu-links").count() == 0
        await browser.close()
