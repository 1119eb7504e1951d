"""Sign-in handoff: a team host takes over the apex session when the browser did not send
the ``Domain=<apex>`` cookie to it.

Browsers keep ``Domain=localhost`` cookies host-only (Chromium does), so with the default
domain the SSO cookie never reaches ``alpha.localhost``. Then the team host sends the browser
to ``<apex>/-/sso?next=...``; the apex, where the cookie *is* sent, checks the user may visit
that team and hands over a one-time ticket: a random nonce, kept here in memory for 30 seconds
(the gateway is one process), never the cookie itself. ``<team>/-/gateway/sso?ticket=...`` sets
a host-only cookie carrying the *same* signed session id, so signing out on the apex (which
revokes the session row) signs out of every team host too.
"""

from __future__ import annotations

import secrets
import time

LIFETIME = 30.0
PATH = "/-/gateway/sso"


class Tickets:
    def __init__(self) -> None:
        self._tickets: dict[str, tuple[float, str, str, str]] = {}

    def issue(self, cookie: str, slug: str, path: str) -> str:
        now = time.monotonic()
        if len(self._tickets) > 10_000:  # bound memory: drop the expired ones
            self._tickets = {k: v for k, v in self._tickets.items() if v[0] > now}
        nonce = secrets.token_urlsafe(24)
        self._tickets[nonce] = (now + LIFETIME, cookie, slug, path)
        return nonce

    def take(self, nonce: str, slug: str) -> tuple[str, str] | None:
        """(cookie value, path) for a live ticket issued for ``slug``; each works once."""
        entry = self._tickets.pop(nonce, None)
        if entry is None or entry[0] < time.monotonic() or entry[2] != slug:
            return None
        return entry[1], entry[3]
