"""Driving the system Chromium through Playwright, plus the checks every page gets.

Playwright's wheel carries its driver but no browser; it drives Debian's ``chromium`` package
(``apt-get install -y chromium``, done by ``.ci/run``) through ``executable_path``.

Chromium stores a ``Domain=localhost`` cookie as host-only (its domain reads ``localhost``,
not ``.localhost``), so on the default domain team hosts get the session through the gateway's
sign-in handoff, while on a registrable domain the ``Domain`` cookie reaches them directly. The
journey runs on both: ``localhost`` (Chromium resolves ``*.localhost`` to loopback itself) and
``gateway.test``, mapped with every subdomain to loopback by ``--host-resolver-rules`` (no
DNS, no /etc/hosts).

Screenshots of each step go to ``artifacts/screenshots/<test>/`` (git-ignored; every run,
CI's included, leaves them there, replaced at the start of each test). With
``GATEWAY_UPDATE_SCREENSHOTS=1`` the steps marked ``docs=`` are also copied to
``docs/screenshots/``, the pictures the README links.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.async_api import ConsoleMessage, Error, Page

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "screenshots"
DOCS = ROOT / "docs" / "screenshots"
DOMAIN = "gateway.test"
VIEWPORT = {"width": 1100, "height": 700}
RESOLVER = f"--host-resolver-rules=MAP *.{DOMAIN} 127.0.0.1, MAP {DOMAIN} 127.0.0.1"
# Headless Chromium as root (CI) needs --no-sandbox; the other flags keep it quiet and offline.
ARGS = ["--no-sandbox", RESOLVER, "--disable-gpu", "--no-first-run", "--disable-sync"]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "no Chromium: apt-get install -y chromium (see .ci/run)"
    return path


@dataclass
class Watch:
    """Console errors and uncaught exceptions of one page, checked after each step.

    A page we navigate to on purpose with an error status (a 403, a refused password) makes
    Chromium log "Failed to load resource" for that document; ``expect`` lists such URLs.
    """

    errors: list[str] = field(default_factory=list)
    expected: set[str] = field(default_factory=set)

    def attach(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", self._pageerror)

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type != "error":
            return
        url = msg.location.get("url", "")
        if msg.text.startswith("Failed to load resource") and url in self.expected:
            return
        self.errors.append(f"console error at {url}: {msg.text}")

    def _pageerror(self, exc: Error) -> None:
        self.errors.append(f"uncaught exception: {exc}")

    def expect(self, url: str) -> None:
        self.expected.add(url)

    def check(self, where: str) -> None:
        errors, self.errors = self.errors, []
        assert not errors, f"{where}: " + "; ".join(errors)


SCROLL = """
(selector) => {
  const target = selector && document.querySelector(selector);
  window.scrollTo(0, target ? target.getBoundingClientRect().top + window.scrollY - 24 : 0);
}
"""


@dataclass
class Shots:
    """Numbered screenshots of one test's steps."""

    name: str
    docs: bool = True  # may this test's steps refresh docs/screenshots/?
    count: int = 0

    def __post_init__(self) -> None:
        self.dir = ARTIFACTS / self.name
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)

    async def take(
        self, page: Page, step: str, docs: str | None = None, at: str | None = None
    ) -> Path:
        """The viewport, scrolled to the top, or to the element ``at`` (a CSS selector)."""
        self.count += 1
        path = self.dir / f"{self.count:02d}-{step}.png"
        await page.evaluate(SCROLL, at)
        await page.screenshot(path=str(path))
        assert path.stat().st_size > 0
        if docs and self.docs and os.environ.get("GATEWAY_UPDATE_SCREENSHOTS") == "1":
            DOCS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS / f"{docs}.png")
        return path


# Every form control a person fills in has an accessible name: a <label> (for= or wrapping),
# aria-label or aria-labelledby. Returns a description of each one without.
UNLABELLED = """
() => Array.from(document.querySelectorAll("input, select, textarea"))
  .filter((e) => !["hidden", "submit", "button", "reset", "image"].includes(e.type))
  .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute("aria-label")
                 && !e.getAttribute("aria-labelledby"))
  .map((e) => e.outerHTML.slice(0, 120))
"""

# A short description of the element that has keyboard focus.
FOCUSED = """
() => {
  const e = document.activeElement;
  if (!e || e === document.body) return "";
  return e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + "|" + (e.type || "") + "|"
    + (e.textContent || "").trim().slice(0, 60) + "|" + getComputedStyle(e).outlineStyle;
}
"""


# Focus a throw-away element at the very top of <body>, so the next Tab goes to the page's
# first focusable element; it removes itself once focus moves on.
START = """
() => {
  const start = document.createElement("span");
  start.tabIndex = -1;
  document.body.prepend(start);
  start.focus();
  start.addEventListener("blur", () => start.remove());
}
"""


OUTLINE = """
() => ({ lang: document.documentElement.lang, title: document.title.trim(),
         h1: document.querySelectorAll("h1").length })
"""


async def check_labels(page: Page, where: str) -> None:
    unlabelled = await page.evaluate(UNLABELLED)
    assert not unlabelled, f"{where}: inputs without a label: {unlabelled}"


async def tab_order(page: Page, limit: int = 40) -> list[str]:
    """Press Tab from the top of the page and record what gets focus, until it wraps around."""
    # Start where a keyboard user starts: before everything (not at an autofocused field).
    await page.evaluate(START)
    seen: list[str] = []
    for _ in range(limit):
        await page.keyboard.press("Tab")
        focused = await page.evaluate(FOCUSED)
        if not focused or (seen and focused == seen[0]):
            break
        seen.append(focused)
    return seen


async def check_keyboard(page: Page, where: str, first: str | None, submit: str) -> None:
    """Tab reaches the form's first field (``first``: 'tag#id') and its submit button (its
    text), and every element it stops on shows a focus outline."""
    order = await tab_order(page)
    fields = [f.split("|")[0] for f in order]
    buttons = [f for f in order if f.startswith("button") and re.search(submit, f.split("|")[2])]
    assert buttons, f"{where}: Tab never reaches the {submit!r} button; order: {order}"
    unseen = [f for f in order if f.endswith("|none")]
    assert not unseen, f"{where}: keyboard focus is invisible (no outline) on {unseen}"
    if first is not None:
        assert first in fields, f"{where}: Tab never reaches {first}; order: {order}"
        assert fields.index(first) < order.index(buttons[0]), f"{where}: button first: {order}"


async def check_page(
    page: Page,
    watch: Watch,
    where: str,
    *,
    first: str | None = None,
    submit: str | None = None,
) -> None:
    """The checks every gateway page gets: a language, a title and one main heading, labels,
    keyboard reach, no console errors."""
    outline = await page.evaluate(OUTLINE)
    assert outline["lang"] and outline["title"], f"{where}: no lang or no <title>: {outline}"
    assert outline["h1"] == 1, f"{where}: {outline['h1']} <h1> headings, not one"
    await check_labels(page, where)
    if submit:
        await check_keyboard(page, where, first, submit)
    watch.check(where)
