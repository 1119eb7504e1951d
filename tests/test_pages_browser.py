"""Issue 19: every gateway page, signed out and signed in, in a real Chromium: no horizontal
overflow on a phone (390 px wide, measured in the browser) nor on the review page at 1280 px,
and axe-core (axe-playwright-python, driving the system Chromium) finds no serious or critical
violation."""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from gateway.config import Config
from tests.auth_support import PASSWORD, make_user
from tests.conftest import StartGateway
from tests.upload_support import Member

pytestmark = pytest.mark.browser
RULES = "--host-resolver-rules=MAP *.gateway.test 127.0.0.1, MAP gateway.test 127.0.0.1"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
WIDE_CSV = (
    ",".join(f"a rather long column name {i}" for i in range(11))
    + "\n"
    + ",".join(f"a long value of column {i}" for i in range(11))
    + "\n"
).encode()


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "no Chromium: apt-get install -y chromium (see .ci/run)"
    return path


async def check(page, url: str, axe, problems: list[str]) -> None:
    await page.goto(url)
    await page.wait_for_load_state()
    width = await page.evaluate("document.documentElement.scrollWidth")
    viewport = page.viewport_size["width"]
    if width > viewport:
        problems.append(f"{url} at {viewport} px is {width} px wide")
    results = await axe.run(page)
    for v in results.response["violations"]:
        if v["impact"] in ("serious", "critical"):
            nodes = "; ".join(n["html"][:80] for n in v["nodes"][:3])
            problems.append(f"{url} at {viewport} px: axe {v['id']} ({v['impact']}): {nodes}")


async def test_every_page_fits_a_phone_and_passes_axe(
    config: Config, start_gateway: StartGateway
) -> None:
    from axe_playwright_python.async_playwright import Axe
    from playwright.async_api import async_playwright

    gw = await start_gateway(config.replace(domain="gateway.test"), teams=("alpha",))
    user = make_user(gw, "ann@example.org", {"alpha": "owner"})
    await gw.wait_healthy("alpha", timeout=60)
    with sqlite3.connect(gw.config.teams_dir / "alpha" / "data.db") as conn:
        conn.execute("CREATE TABLE towns (name TEXT, pop INTEGER)")
    token = gw.app.auth.tokens.create("alpha", user, "tests")
    member = Member(gw, token, "")
    r = await member.post(WIDE_CSV, "wide.csv")
    review = (await member.wait(r.json()["jobs"][0], ("ready",)))["page"]
    done = (await member.upload(b"name,pop\nAdjuntas,18181\n", "done.csv"))["page"]
    base, alpha = gw.config.base_url, gw.config.team_url("alpha")
    signed_out = [f"{base}/", f"{base}/login", f"{base}/register", f"{base}/reset", f"{base}/x"]
    signed_in = [
        f"{base}/dashboard", f"{base}/teams/alpha", f"{base}/teams/alpha/table?name=towns",
        f"{base}/password", f"{base}/logout",
        f"{base}/-/gateway/status", f"{alpha}/-/upload-csv", review, done,
    ]  # fmt: skip
    problems: list[str] = []
    axe = Axe()
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", RULES])
        for viewport in (PHONE, DESKTOP):
            page = await browser.new_page(viewport=viewport)
            for url in signed_out:
                await check(page, url, axe, problems)
            await page.goto(f"{base}/login")
            await page.get_by_label("Email").fill("ann@example.org")
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url(f"{base}/dashboard")
            for url in signed_in:
                await check(page, url, axe, problems)
            await page.close()
        await browser.close()
    assert problems == [], "\n".join(problems)


async def test_status_page_updates_in_place_and_can_be_paused(
    config: Config, start_gateway: StartGateway
) -> None:
    from playwright.async_api import async_playwright

    gw = await start_gateway(config.replace(domain="gateway.test"), teams=("alpha",))
    user = make_user(gw, "ann@example.org", {"alpha": "owner"})
    # Operators are a role (docs/auth.md): granted explicitly, as `users grant-operator` does.
    from gateway.auth import accounts

    accounts.set_operator(gw.app.store, user, True)
    gw.app.auth.changed()
    await gw.wait_healthy("alpha", timeout=60)
    base = gw.config.base_url
    token = gw.app.auth.tokens.create("alpha", user, "tests")

    async def proxied_requests(n: int) -> None:
        async with gw.client(headers={"authorization": f"Bearer {token}"}) as c:
            for _ in range(n):
                await c.get(gw.url("alpha", "/-/health"))

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", RULES])
        page = await browser.new_page()
        await page.goto(f"{base}/login?next=/-/gateway/status")
        await page.get_by_label("Email").fill("ann@example.org")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(f"{base}/-/gateway/status")
        assert await page.locator("meta[http-equiv=refresh]").count() == 0
        summary = page.locator("main p.muted").first
        before = await summary.inner_text()
        await proxied_requests(3)
        # Updated in place (every 5 s) without a reload: the counter moves.
        await page.wait_for_function(
            "t => document.querySelector('main p.muted').innerText !== t", arg=before,
            timeout=20_000,
        )  # fmt: skip
        await page.get_by_role("button", name="Pause updates").click()
        paused = await summary.inner_text()
        await proxied_requests(3)
        await page.wait_for_timeout(7_000)  # longer than one update period
        assert await summary.inner_text() == paused
        await page.get_by_role("button", name="Resume updates").click()
        await page.wait_for_function(
            "t => document.querySelector('main p.muted').innerText !== t", arg=paused,
            timeout=20_000,
        )  # fmt: skip
        await browser.close()
