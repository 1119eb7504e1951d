"""Wrap ``Gateway.handle``: time every request, note its status, count it, log it.

The cost per request is one closure (to see the response status), two clock reads, one
``RequestStats.record`` and, when the access log is on, one ``json.dumps``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.context import CONTEXT, RequestContext
from gateway.errors import CLIENT_GONE
from gateway.observability.accesslog import AccessLog
from gateway.observability.stats import RequestStats

Handler = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
LOGIN_PATH = "/login"  # the apex sign-in form (gateway/auth)


class Observer:
    def __init__(
        self, handle: Handler, stats: RequestStats, access_log: AccessLog | None = None
    ) -> None:
        self.handle = handle
        self.stats = stats
        self.access_log = access_log

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = time.monotonic()
        ctx: RequestContext | None = scope.get(CONTEXT)
        if ctx is not None:
            # GatewayHttpProtocol made the context and its cycle records the status in it:
            # no send wrapper, one coroutine fewer on every message of the hot path.
            try:
                await self.handle(scope, receive, send)
            finally:
                self.done(scope, ctx, started)
            return
        made = scope[CONTEXT] = RequestContext()  # another ASGI server: note the status here

        async def observed_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                made.status = message["status"]
            await send(message)

        try:
            await self.handle(scope, receive, observed_send)
        finally:
            self.done(scope, made, started)

    def done(self, scope: dict[str, Any], ctx: RequestContext, started: float) -> None:
        """Count, time and log one finished request (status 0: no answer was sent)."""
        now = time.monotonic()
        team = ctx.team
        code = ctx.status or CLIENT_GONE
        self.stats.record(team, code, now - started, now)
        # A sign-in form post on the apex that did not sign in (wrong password, throttled,
        # bad CSRF): counted here, so the auth code needs no metrics calls.
        if (
            not team
            and code >= 400
            and scope.get("path") == LOGIN_PATH
            and scope.get("method") == "POST"
        ):
            self.stats.event("login_failures")
        if self.access_log is not None:
            self.access_log.write(scope, ctx, code, now - started, now)
