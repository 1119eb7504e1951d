"""The one Jinja environment of the gateway's Starlette pages (apex site, account pages,
operator dashboard on both listeners), over ``pages/templates`` with its filters."""

from __future__ import annotations

import time
from pathlib import Path

from starlette.templating import Jinja2Templates

TEMPLATES = Path(__file__).resolve().parent / "templates"


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.filters["timestamp"] = timestamp
    templates.env.filters["ago"] = ago
    return templates


def timestamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def ago(ts: float | None) -> str:
    if not ts:
        return ""
    seconds = max(0, int(time.time() - ts))
    if seconds < 90:
        return f"{seconds}s ago"
    if seconds < 5400:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"
