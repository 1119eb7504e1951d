"""The page checks themselves catch what they are for (a check that cannot fail proves nothing)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.e2e.browser import Watch, check_keyboard, check_labels, check_page

if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = pytest.mark.browser

GOOD = """<!doctype html><html lang="en"><head><title>ok</title>
<style>:focus-visible { outline: 3px solid blue; }</style></head><body>
<a href="#top">Home</a><h1>Sign in</h1>
<form><label for="email">Email</label><input id="email" type="email">
<label><input type="checkbox" name="remember"> Remember me</label>
<input type="text" aria-label="Search"><input type="hidden" name="csrf">
<button type="submit">Sign in</button></form></body></html>"""


async def test_a_good_page_passes(page: Page, watch: Watch) -> None:
    await page.set_content(GOOD)
    await check_page(page, watch, "good", first="input#email", submit="Sign in")


@pytest.mark.parametrize(
    "change, message",
    [
        (('<label for="email">Email</label>', ""), "inputs without a label"),
        (("<button", '<button tabindex="-1"'), "never reaches the 'Sign in' button"),
        (('<input id="email"', '<input id="email" tabindex="-1"'), "never reaches input#email"),
        (("outline: 3px solid blue", "outline: none"), "focus is invisible"),
    ],
)
async def test_each_fault_is_caught(page: Page, change: tuple[str, str], message: str) -> None:
    await page.set_content(GOOD.replace(*change))
    with pytest.raises(AssertionError, match=message):
        await check_labels(page, "bad")
        await check_keyboard(page, "bad", "input#email", "Sign in")


@pytest.mark.parametrize(
    "change, message",
    [(('lang="en"', ""), "no lang"), (("<title>ok</title>", ""), "no <title>"),
     (("<form>", "<h1>Two</h1><form>"), "2 <h1> headings")],
)  # fmt: skip
async def test_page_outline_faults_are_caught(
    page: Page, watch: Watch, change: tuple[str, str], message: str
) -> None:
    await page.set_content(GOOD.replace(*change))
    with pytest.raises(AssertionError, match=message):
        await check_page(page, watch, "bad", first="input#email", submit="Sign in")


async def test_console_errors_are_caught(page: Page, watch: Watch) -> None:
    await page.set_content("<script>console.error('boom'); undefinedFunction();</script>")
    with pytest.raises(AssertionError, match=r"boom.*undefinedFunction"):
        watch.check("scripted errors")
