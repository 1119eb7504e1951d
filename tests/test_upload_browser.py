"""A real Chromium drops a CSV on the page and ends on the typed table in Datasette."""

from __future__ import annotations

import shutil

import pytest

from gateway.config import Config
from tests.upload_support import sign_in

pytestmark = pytest.mark.browser

DROP = """
([name, text]) => {
  const transfer = new DataTransfer();
  transfer.items.add(new File([text], name, { type: "text/csv" }));
  const zone = document.getElementById("dropzone");
  zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true }));
  zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true }));
}
"""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "no Chromium: apt-get install -y chromium (see .ci/run)"
    return path


async def test_drop_review_import_and_open_the_table(start_gateway, config: Config):
    from playwright.async_api import async_playwright

    running = await start_gateway(config, teams=("alpha",))
    member = await sign_in(running)
    csv = "zip,town,pop,share\n00601,Adjuntas,18181,0.5\n02139,Cambridge,118403,1.25\n"
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        context = await browser.new_context()
        await context.add_cookies([{
            "name": running.app.auth.cookie_name, "value": member.cookie,
            "domain": "alpha.localhost", "path": "/",
        }])  # fmt: skip
        page = await context.new_page()
        await page.goto(member.url("/-/upload-csv"))
        await page.evaluate(DROP, ["towns.csv", csv])
        review = page.get_by_role("link", name="Review the columns and import")
        await review.wait_for(timeout=60_000)
        # The upload bar reached the end before the job's own progress took over.
        assert await page.locator("#progress progress").first.evaluate("e => e.value") == 1
        await review.click()
        await page.wait_for_selector("text=Review")
        assert await page.locator("#type-0 option").all_inner_texts() == ["TEXT"]
        await page.fill("#table", "towns")
        await page.select_option("#pk", "zip")
        await page.get_by_role("button", name="Import").click()
        link = page.locator("#table-link")
        await link.wait_for(timeout=60_000)
        await link.click()
        await page.wait_for_load_state()
        assert "Adjuntas" in await page.content()
        await browser.close()
    rows = await member.rows(member.url("/data/towns"))
    assert rows == [
        {"zip": "00601", "town": "Adjuntas", "pop": 18181, "share": 0.5},
        {"zip": "02139", "town": "Cambridge", "pop": 118403, "share": 1.25},
    ]
