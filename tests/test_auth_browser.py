"""A real Chromium registers, signs in once and is recognised on its team's subdomain.

Chromium keeps ``Domain=localhost`` cookies host-only, so this test uses a registrable domain,
``gateway.test``, mapped to loopback with Chromium's ``--host-resolver-rules`` (docs/auth.md).
"""

from __future__ import annotations

import json
import shutil

import pytest

from gateway.config import Config
from tests.conftest import StartGateway

pytestmark = pytest.mark.browser
RULES = "--host-resolver-rules=MAP *.gateway.test 127.0.0.1, MAP gateway.test 127.0.0.1"


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "no Chromium: apt-get install -y chromium (see .ci/run)"
    return path


async def test_register_then_single_sign_on_across_subdomains(
    config: Config, start_gateway: StartGateway
) -> None:
    from playwright.async_api import async_playwright

    gw = await start_gateway(config.replace(domain="gateway.test"))
    base = gw.config.base_url
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", RULES])
        page = await browser.new_page()
        await page.goto(f"{base}/register")
        await page.get_by_label("Email").fill("joy@example.org")
        await page.get_by_label("Password").fill("a long and fine passphrase")
        await page.get_by_label("Team name").fill("newsroom")
        await page.get_by_role("button", name="Create account and team").click()
        await page.wait_for_url(f"{base}/dashboard")
        await gw.wait_healthy("newsroom", timeout=60)
        await page.goto(f"{base}/dashboard")
        assert "newsroom" in await page.content()
        # One sign-in, recognised on the team's own subdomain (the Domain cookie).
        await page.get_by_role("link", name="Open Datasette").click()
        await page.wait_for_url(gw.config.team_url("newsroom") + "/")
        await page.goto(gw.config.team_url("newsroom") + "/-/actor.json")
        actor = json.loads(await page.inner_text("body"))["actor"]
        assert actor["email"] == "joy@example.org"
        cookies = await page.context.cookies()
        session = [c for c in cookies if c["name"] == "gateway_session"]
        assert session and session[0]["domain"] == ".gateway.test" and session[0]["httpOnly"]
        # Signing out on the apex signs out of the subdomain too: next visit goes to login.
        await page.goto(f"{base}/dashboard")
        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_url(f"{base}/login")
        await page.goto(gw.config.team_url("newsroom") + "/")
        assert page.url.startswith(f"{base}/login?next=")
        await browser.close()


async def test_sign_in_reaches_team_on_localhost_through_the_handoff(
    config: Config, start_gateway: StartGateway
) -> None:
    """With the default domain, Chromium keeps the cookie host-only; the handoff covers it."""
    from playwright.async_api import async_playwright

    from tests.auth_support import PASSWORD, make_user

    gw = await start_gateway(config, teams=("alpha",))
    make_user(gw, "ann@example.org", {"alpha": "owner"})
    await gw.wait_healthy("alpha")
    team = gw.config.team_url("alpha")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = await browser.new_page()
        await page.goto(team + "/-/actor.json")  # anonymous: sent to sign in, next kept
        await page.wait_for_url(f"{gw.config.base_url}/login?next=*")
        await page.get_by_label("Email").fill("ann@example.org")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(team + "/-/actor.json")
        actor = json.loads(await page.inner_text("body"))["actor"]
        assert actor["email"] == "ann@example.org"
        await page.goto(f"{gw.config.base_url}/dashboard")
        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_url(f"{gw.config.base_url}/login")
        await page.goto(team + "/")
        assert page.url.startswith(f"{gw.config.base_url}/login?next=")
        await browser.close()
