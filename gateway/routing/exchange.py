"""One proxied request's exchange with an instance: the attempt loop, the body on its way up,
the response on its way down, and the watch for a client that hangs up.

    pick a target (or hold) -> start the request -> send -> await the head -> stream it -> end

``Proxy`` (``routing/proxy.py``) builds one ``Exchange`` per request and calls ``run()``; every
step reads what it needs from the exchange instead of a long parameter list. When a failed
attempt may be tried again, and the status when not, is the retry policy's (``retry.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from gateway.context import RequestContext
from gateway.errors import ClientGone, Unavailable
from gateway.http.upstream import Connection, UpstreamError
from gateway.routing import retry
from gateway.routing.headers import RESERVED_COOKIES, HeaderPolicy
from gateway.routing.service import Service
from gateway.routing.target import Target

log = logging.getLogger("gateway.proxy")

# A client that goes away is noticed by a task blocked in ``receive()``. Creating, running and
# cancelling that task cost about as much as the rest of a fast proxied request, so it starts
# only once a request has run this long (give or take deadlines.RESOLUTION): one that ends
# sooner has nothing left to cancel.
WATCH_AFTER = 0.05


@dataclass
class Counters:
    requests: int = 0
    retries: int = 0
    retry_skipped_body: int = 0  # a retry was allowed by the rules but the body was not held
    retry_skipped_method: int = 0  # a reused connection failed, but the method is not idempotent
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


@dataclass
class ProxySettings:
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    hold_timeout: float = 10.0
    retry_buffer: int = 64 * 1024
    trusted_proxies: frozenset[str] = frozenset()
    cookie_domain: bytes = b""  # upstream Set-Cookie naming this domain is stripped
    # An upstream may not set a cookie under the gateway's own session names (fixation).
    reserved_cookies: frozenset[bytes] = RESERVED_COOKIES


class CutConnection(Exception):
    """The response had started and cannot be completed: the connection must be cut."""


class Exchange:
    """One request on its way through: what it sends, where to, and what happened so far."""

    def __init__(
        self,
        settings: ProxySettings,
        counters: Counters,
        headers: HeaderPolicy,
        service: Service,
        ctx: RequestContext,
        method: str,
        receive: Any,
        send: Any,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.settings = settings
        self.counters = counters
        self.headers = headers
        self.service = service
        self.ctx = ctx
        self.method = method
        self.receive = receive
        self.send = send
        self.loop = loop
        # The request as it goes up: the head, the body bytes held for a replay, whether
        # they are the whole body, and whether the rest follows chunked.
        self.head = b""
        self.body = b""
        self.complete = True
        self.chunked = False
        # Shared with the disconnect watcher.
        self.client_gone = False
        self.conn: Connection | None = None
        self.watcher: asyncio.Future[None] | None = None

    def watch(self, receive: Any) -> None:
        """Timer callback: from now on, a client disconnect aborts the upstream exchange."""
        self.watcher = asyncio.ensure_future(_watch_disconnect(receive, self))

    # -- the attempt loop ---------------------------------------------------------------------
    async def run(self) -> None:
        s = self.settings
        service = self.service
        ctx = self.ctx
        loop = self.loop
        deadline: float | None = None
        previous: Target | None = None
        retried = rerouted = False
        while True:
            target = (
                service.pick(previous)
                or (previous if previous is not None and previous.available else None)
                or await self._hold()
            )
            if target is None:
                raise Unavailable(
                    "no healthy instance for this team yet; please retry shortly",
                    retry_after=max(1, int(s.hold_timeout)),
                )
            if not target.start_request():
                continue  # it began draining between pick and start: pick again
            ctx.target = target.id
            try:
                if deadline is None:
                    deadline = loop.time() + s.read_timeout
                conn = (None if retried else target.pool.take_idle()) or await target.pool.acquire(
                    min(s.connect_timeout, max(deadline - loop.time(), 0.001)), fresh=retried
                )
                self.conn = conn
                conn.begin(self.head, is_head=self.method == "HEAD")
                await self._send_body(conn)
                # The request is all written: from here on the wait is the instance's (an
                # upload streamed at the client's pace is not counted as upstream latency).
                sent = loop.time()
                status, headers = await conn.response(max(deadline - sent, 0.001))
                service.upstream_latency.observe(loop.time() - sent)
            except UpstreamError as err:
                target.end_request()
                self.conn = None
                if self.client_gone:
                    return
                # A body that arrived in one piece may still exceed the replay buffer: only
                # what fits in it counts as held (checked here, off the hot path).
                held = self.complete and len(self.body) <= s.retry_buffer
                if not retried and self._retryable(err, held):
                    retried = True
                    previous = target
                    self.counters.retries += 1
                    ctx.retries = 1
                    if err.kind in ("connect", "connect_timeout"):
                        # Refused: nothing listens there (say, a killed instance). Stop routing
                        # to it now, so the retry goes elsewhere or is held, never refused again.
                        target.report_health(False, str(err), fatal=err.kind == "connect")
                    else:
                        target.pool.close_idle()  # its siblings are likely just as stale
                    continue
                if err.kind == "connect" and not rerouted:
                    # The retry found nothing listening (an instance killed under a reused
                    # connection). Still nothing sent: go elsewhere or hold, never 502.
                    rerouted = True
                    previous = target
                    target.report_health(False, str(err), fatal=True)
                    continue
                raise retry.status_for(err) from err
            except BaseException:
                target.end_request()
                raise
            try:
                await self._respond(conn, status, headers)
            finally:
                target.end_request()
                self.conn = None
            return

    async def _hold(self) -> Target | None:
        service = self.service
        _refuse_in_maintenance(service)
        deadline = time.monotonic() + self.settings.hold_timeout
        target = await service.wait_for_target(deadline)
        if self.client_gone:
            raise ClientGone()  # it hung up while held: never send its request
        # Checked again in a function of its own: maintenance may have begun during the wait,
        # and an inline check would still be narrowed to "None" here (mypyc enforces that).
        _refuse_in_maintenance(service)
        return target

    def _retryable(self, err: UpstreamError, held: bool) -> bool:
        verdict = retry.verdict(err, self.method, held)
        if verdict == retry.NOT_IDEMPOTENT:
            self.counters.retry_skipped_method += 1
        elif verdict == retry.BODY_NOT_HELD:
            self.counters.retry_skipped_body += 1
        return verdict == retry.RETRY

    # -- request side -------------------------------------------------------------------------
    async def _send_body(self, conn: Connection) -> None:
        if self.chunked:
            await self._send_chunked(conn)
        elif self.body:
            await conn.send(self.body)
            if not self.complete:
                await self._send_rest(conn)

    async def _send_rest(self, conn: Connection) -> None:
        receive = self.receive
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                conn.abort("client closed")
                raise ClientGone()
            chunk = message.get("body", b"")
            if chunk:
                await conn.send(chunk)
            if not message.get("more_body", False):
                return

    async def _send_chunked(self, conn: Connection) -> None:
        held = self.body
        complete = self.complete
        if held:
            await conn.send(b"%x\r\n%s\r\n" % (len(held), held))
        while not complete:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                conn.abort("client closed")
                raise ClientGone()
            chunk = message.get("body", b"")
            if chunk:
                await conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            complete = not message.get("more_body", False)
        await conn.send(b"0\r\n\r\n")

    # -- response side ------------------------------------------------------------------------
    async def _respond(
        self, conn: Connection, status: int, headers: list[tuple[bytes, bytes]]
    ) -> None:
        ctx = self.ctx
        send = self.send
        # A member's answer from a private team: Cache-Control private (auth/gatekeeper.py).
        out = self.headers.response(headers, ctx.private)
        # A small answer is usually already here in full: then head and body go out as one
        # write and the response ends with that same message (GatewayHttpProtocol joins a
        # head to the body that follows it; other ASGI servers ignore the context).
        first, whole = conn.take_buffered()
        ctx.body_follows = bool(first) or whole
        await send({"type": "http.response.start", "status": status, "headers": out})
        if whole:
            await send({"type": "http.response.body", "body": first, "more_body": False})
            conn.finish()
            return
        if first:
            await send({"type": "http.response.body", "body": first, "more_body": True})
        read_timeout = self.settings.read_timeout
        try:
            while True:
                chunk = await conn.read(read_timeout)
                if not chunk:
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if self.client_gone:
                    conn.close()
                    return
        except UpstreamError as err:
            # A response byte reached the client: never retry, never end the body cleanly.
            self.counters.error(err.kind)
            if not self.client_gone:
                log.warning("upstream failed mid-body (%s); cutting the client connection", err)
            conn.close()
            raise CutConnection() from err
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        conn.finish()


async def _watch_disconnect(receive: Any, ex: Exchange) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            ex.client_gone = True
            if ex.conn is not None:
                ex.conn.abort("client closed")
            return


def _refuse_in_maintenance(service: Service) -> None:
    if service.maintenance is not None:
        raise Unavailable(service.maintenance, retry_after=30)
