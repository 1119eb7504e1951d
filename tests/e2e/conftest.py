"""Fixtures for the browser tests: the gateway on ``gateway.test`` and a watched Chromium page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from gateway.config import Config
from tests.e2e.browser import ARGS, DOMAIN, VIEWPORT, Watch, chromium_path

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page


@pytest.fixture
def e2e_config(config: Config) -> Config:
    """The local runtime (real Datasette processes) on a registrable test domain."""
    return config.replace(domain=DOMAIN, runtime="local")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=chromium_path(), args=ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
def watch() -> Watch:
    return Watch()


@pytest.fixture
async def page(browser: Browser, watch: Watch) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(30_000)
    page = await context.new_page()
    watch.attach(page)
    try:
        yield page
    finally:
        await context.close()
