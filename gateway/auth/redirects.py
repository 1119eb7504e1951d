"""Safe ``next=`` targets: only the apex or a team subdomain the user may visit.

Everything that a browser could read as another host is refused: ``//evil`` and ``/\\evil``
(protocol-relative), ``https:evil`` (scheme without slashes), control characters and
whitespace (browsers strip them, turning ``/\\t/evil`` into ``//evil``), and any scheme but
the configured one (``javascript:``). Absolute URLs must match the base URL's scheme and port.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

DEFAULT = "/dashboard"


def safe_next(raw: str | None, base_url: str, domain: str, may_visit: Callable[[str], bool]) -> str:
    """Return ``raw`` when it is a safe place to send the user, else the dashboard."""
    if not raw or len(raw) > 2000:
        return DEFAULT
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in raw) or "\\" in raw:
        return DEFAULT
    if raw.startswith("/"):
        return DEFAULT if raw.startswith("//") else raw
    base = urlsplit(base_url)
    try:
        url = urlsplit(raw)
        port = url.port
    except ValueError:
        return DEFAULT
    if url.scheme != base.scheme or not url.netloc.startswith(url.hostname or "\0"):
        return DEFAULT  # also refuses userinfo (user@host) and "https:evil"
    if port != base.port or url.username or url.password:
        return DEFAULT
    host = (url.hostname or "").lower()
    if host == domain:
        return raw
    slug, dot, rest = host.partition(".")
    if dot and rest == domain and may_visit(slug):
        return raw
    return DEFAULT
