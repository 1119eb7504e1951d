"""The reverse proxy: a raw ASGI handler (Starlette's Request and StreamingResponse cost most
of the throughput) that streams both ways and retries only where reliability.md says it is safe.

    headers in -> hold the body's first bytes for a replay -> the exchange (``exchange.py``)

What is forwarded each way is the header policy's (``routing/headers.py``); the attempts, the
streaming and the disconnect watch are the exchange's (``routing/exchange.py``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.context import RequestContext
from gateway.errors import ClientGone
from gateway.http.deadlines import deadlines
from gateway.http.upstream import build_head
from gateway.routing.exchange import WATCH_AFTER, Counters, Exchange, ProxySettings
from gateway.routing.headers import HeaderPolicy
from gateway.routing.service import Service


class Proxy:
    def __init__(self, settings: ProxySettings, counters: Counters | None = None) -> None:
        self.settings = settings
        self.counters = counters or Counters()
        self.headers = HeaderPolicy(
            settings.trusted_proxies, settings.cookie_domain, settings.reserved_cookies
        )

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Any,
        send: Any,
        service: Service,
        ctx: RequestContext,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.counters.requests += 1
        method: str = scope["method"]
        loop = asyncio.get_running_loop()  # once: each call is a getpid() syscall (3.11)
        ex = Exchange(
            self.settings, self.counters, self.headers, service, ctx, method, receive, send, loop
        )
        head_headers, body_len, chunked = self.headers.request(scope, ctx, extra_headers)
        if chunked or body_len:
            ex.body, ex.complete = await self._buffer_body(receive, body_len, chunked)
        ex.chunked = chunked
        target_bytes = scope.get("raw_path") or scope["path"].encode("latin-1")
        if scope.get("query_string"):
            target_bytes += b"?" + scope["query_string"]
        if body_len is not None:
            head_headers.append((b"content-length", str(body_len).encode()))
        elif chunked:
            head_headers.append((b"transfer-encoding", b"chunked"))
        ex.head = build_head(method, target_bytes, head_headers)

        clock = deadlines(loop) if ex.complete else None
        if clock is not None:
            clock.add(ex, WATCH_AFTER, ex.watch, receive)
        try:
            await ex.run()
        finally:
            if clock is not None:
                clock.discard(ex)
                if ex.watcher is not None:
                    ex.watcher.cancel()

    async def _buffer_body(
        self, receive: Any, length: int | None, chunked: bool
    ) -> tuple[bytes, bool]:
        """Read up to the replay buffer. Returns (bytes held, whether that is the whole body)."""
        if not chunked and not length:
            return b"", True
        limit = self.settings.retry_buffer
        parts: list[bytes] = []
        size = 0
        while size <= limit:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            parts.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                return b"".join(parts), True
        return b"".join(parts), False
