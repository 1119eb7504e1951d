"""The reverse proxy: a raw ASGI handler (Starlette's Request/StreamingResponse cost ~70% of
throughput here) that streams both ways and retries only where reliability.md says it is safe.

    pick a target -> start the request -> send -> await the response -> stream it -> end

Retry rules, in one place (``_retryable``):
  * nothing was sent (refused, connect timeout): any method, once, on another target if any;
  * a *reused* keep-alive connection closed before any response byte: GET/HEAD/OPTIONS once,
    and only when the whole body is held in the replay buffer;
  * a fresh connection reset, a read timeout, or anything after a response byte: never.
One deadline covers all attempts.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import BadGateway, BadRequest, GatewayTimeout, HTTPError, Unavailable
from gateway.routing.cookies import refused, reserved_names
from gateway.routing.deadlines import deadlines
from gateway.routing.service import Service
from gateway.routing.target import Target
from gateway.routing.upstream import Connection, UpstreamError, build_head

log = logging.getLogger("gateway.proxy")

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
# Headers the gateway sets itself: a client-sent copy is dropped, never forwarded.
GATEWAY_SET = frozenset(
    {
        b"host",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"forwarded",
        b"x-real-ip",
        b"x-request-id",
        b"content-length",
    }
)
IDENTITY_PREFIX = b"x-gateway-"
DROPPED = HOP_BY_HOP | GATEWAY_SET  # never forwarded as the client sent them
# uvicorn stamps every response with the gateway's own Date; the upstream's copy would make
# two (a singleton field). nginx replaces it the same way. The upstream's Server (uvicorn) is
# hidden, as nginx hides its upstreams' (proxy_hide_header): it only helps an attacker.
RESPONSE_DROPPED = HOP_BY_HOP | {b"date", b"server"}
# The response headers the loop reads by name; any other passes on one set lookup.
RESPONSE_SPECIAL = RESPONSE_DROPPED | {b"set-cookie", b"link"}
# The gateway's session cookie: a team may not set it, under any prefix or letter case.
RESERVED_COOKIES = reserved_names(b"gateway_session")
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:+/=-]{8,128}$")
# Request IDs the gateway makes: a random per-process prefix and a counter, unique without a
# getrandom() syscall per request (they identify requests in logs; they are no secret).
_ID_PREFIX = os.urandom(12).hex().encode()  # 24 hex digits, + 8 of counter: 32 in all
_ID_COUNTER = itertools.count()


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


# A client that goes away is noticed by a task blocked in ``receive()``. Creating, running and
# cancelling that task cost about as much as the rest of a fast proxied request, so it starts
# only once a request has run this long (give or take deadlines.RESOLUTION): one that ends
# sooner has nothing left to cancel.
WATCH_AFTER = 0.05


class _Exchange:
    """Per-request state shared with the disconnect watcher."""

    __slots__ = ("client_gone", "conn", "watcher")

    def __init__(self) -> None:
        self.client_gone = False
        self.conn: Connection | None = None
        self.watcher: asyncio.Future[None] | None = None

    def watch(self, receive: Any) -> None:
        """Timer callback: from now on, a client disconnect aborts the upstream exchange."""
        self.watcher = asyncio.ensure_future(_watch_disconnect(receive, self))


class Proxy:
    def __init__(self, settings: ProxySettings, counters: Counters | None = None) -> None:
        self.settings = settings
        self.counters = counters or Counters()

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Any,
        send: Any,
        service: Service,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.counters.requests += 1
        method: str = scope["method"]
        head_headers, body_len, chunked = self._request_headers(scope, extra_headers)
        if chunked or body_len:
            body, complete = await self._buffer_body(receive, body_len, chunked)
        else:
            body, complete = b"", True  # no body: no coroutine to run
        target_bytes = scope.get("raw_path") or scope["path"].encode("latin-1")
        if scope.get("query_string"):
            target_bytes += b"?" + scope["query_string"]
        if body_len is not None:
            head_headers.append((b"content-length", str(body_len).encode()))
        elif chunked:
            head_headers.append((b"transfer-encoding", b"chunked"))
        head = build_head(method, target_bytes, head_headers)

        ex = _Exchange()
        loop = asyncio.get_running_loop()  # once: each call is a getpid() syscall (3.11)
        clock = deadlines(loop) if complete else None
        if clock is not None:
            clock.add(ex, WATCH_AFTER, ex.watch, receive)
        try:
            await self._forward(
                method, head, body, complete, chunked, receive, send, service, ex, scope, loop
            )
        finally:
            if clock is not None:
                clock.discard(ex)
                if ex.watcher is not None:
                    ex.watcher.cancel()

    # -- request side -------------------------------------------------------------------------
    def _request_headers(
        self, scope: dict[str, Any], extra: list[tuple[bytes, bytes]] | None
    ) -> tuple[list[tuple[bytes, bytes]], int | None, bool]:
        out: list[tuple[bytes, bytes]] = []
        content_length: int | None = None
        chunked = False
        connection_tokens: set[bytes] = set()
        request_id = b""
        host = b""
        xff = b""
        proto = b""
        # One set lookup sends an ordinary header straight through; every header the gateway
        # reads is in DROPPED, so the name comparisons run only for those (measured: 6.6 ->
        # 3.9 us for a browser's 15 headers). Typed: native list walk and bytes compares.
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        for name, value in headers:
            if name in DROPPED:
                if name == b"host":
                    host = value
                elif name == b"content-length":
                    if content_length is not None or not value.strip().isdigit():
                        raise BadRequest("invalid Content-Length")
                    content_length = int(value)
                elif name == b"connection":
                    # Options naming headers dropped anyway (keep-alive) need no second pass.
                    connection_tokens.update(
                        {t.strip().lower() for t in value.split(b",")} - DROPPED
                    )
                elif name == b"transfer-encoding":
                    if value.strip().lower() != b"chunked":
                        raise BadRequest("unsupported Transfer-Encoding")
                    chunked = True
                elif name == b"x-request-id":
                    request_id = value
                elif name == b"x-forwarded-for":
                    xff = value
                elif name == b"x-forwarded-proto":
                    proto = value
            # Two bytes-prefix checks, not one with a tuple: mypyc compiles only the former.
            elif not (name.startswith(b"proxy-") or name.startswith(IDENTITY_PREFIX)):
                out.append((name, value))
        if chunked and content_length is not None:
            raise BadRequest("a request cannot carry both Content-Length and Transfer-Encoding")
        if connection_tokens:
            out = [(n, v) for n, v in out if n not in connection_tokens]
        client = scope.get("client")
        peer = client[0] if client else ""
        trusted = peer in self.settings.trusted_proxies
        forwarded_for = (xff + b", " if (trusted and xff) else b"") + peer.encode()
        if not (trusted and proto in (b"http", b"https")):
            proto = scope.get("scheme", "http").encode()
        if not REQUEST_ID.match(request_id):
            request_id = b"%s%08x" % (_ID_PREFIX, next(_ID_COUNTER) & 0xFFFFFFFF)
        scope["request_id"] = request_id
        out += [
            (b"host", host),
            (b"x-forwarded-for", forwarded_for),
            (b"x-forwarded-proto", proto),
            (b"x-forwarded-host", host),
            (b"x-request-id", request_id),
        ]
        if extra:
            out += extra
        return out, content_length, chunked

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
                raise _ClientGone()
            chunk = message.get("body", b"")
            parts.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                return b"".join(parts), True
        return b"".join(parts), False

    # -- the attempt loop ---------------------------------------------------------------------
    async def _forward(
        self,
        method: str,
        head: bytes,
        body: bytes,
        complete: bool,
        chunked: bool,
        receive: Any,
        send: Any,
        service: Service,
        ex: _Exchange,
        scope: dict[str, Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        s = self.settings
        deadline: float | None = None
        previous: Target | None = None
        retried = rerouted = False
        while True:
            target = (
                service.pick(previous)
                or (previous if previous is not None and previous.available else None)
                or await self._hold(service, ex)
            )
            if target is None:
                raise Unavailable(
                    "no healthy instance for this team yet; please retry shortly",
                    retry_after=max(1, int(s.hold_timeout)),
                )
            if not target.start_request():
                continue  # it began draining between pick and start: pick again
            scope["target"] = target.id
            try:
                if deadline is None:
                    deadline = loop.time() + s.read_timeout
                conn = (None if retried else target.pool.take_idle()) or await target.pool.acquire(
                    min(s.connect_timeout, max(deadline - loop.time(), 0.001)), fresh=retried
                )
                ex.conn = conn
                conn.begin(head, is_head=method == "HEAD")
                if chunked:
                    await self._send_chunked(conn, body, complete, receive)
                elif body:
                    await conn.send(body)
                    if not complete:
                        await self._send_rest(conn, receive)
                # The request is all written: from here on the wait is the instance's (an
                # upload streamed at the client's pace is not counted as upstream latency).
                sent = loop.time()
                status, headers = await conn.response(max(deadline - sent, 0.001))
                service.upstream_latency.observe(loop.time() - sent)
            except UpstreamError as err:
                target.end_request()
                ex.conn = None
                if ex.client_gone:
                    return
                # A body that arrived in one piece may still exceed the replay buffer: only
                # what fits in it counts as held (checked here, off the hot path).
                held = complete and len(body) <= s.retry_buffer
                if not retried and self._retryable(err, method, held):
                    retried = True
                    previous = target
                    self.counters.retries += 1
                    scope["retries"] = 1
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
                raise _status_for(err) from err
            except BaseException:
                target.end_request()
                raise
            # A member's answer from a private team: Cache-Control private (auth/service.py).
            private = "gateway.private" in scope
            try:
                await self._respond(conn, status, headers, send, s.read_timeout, ex, private)
            finally:
                target.end_request()
                ex.conn = None
            return

    async def _hold(self, service: Service, ex: _Exchange) -> Target | None:
        _refuse_in_maintenance(service)
        deadline = time.monotonic() + self.settings.hold_timeout
        target = await service.wait_for_target(deadline)
        if ex.client_gone:
            raise _ClientGone()  # it hung up while held: never send its request
        # Checked again in a function of its own: maintenance may have begun during the wait,
        # and an inline check would still be narrowed to "None" here (mypyc enforces that).
        _refuse_in_maintenance(service)
        return target

    def _retryable(self, err: UpstreamError, method: str, complete: bool) -> bool:
        if err.kind in ("connect", "connect_timeout"):
            return True  # nothing was sent: safe for every method; the held prefix replays
        if err.kind == "reset" and err.reused:
            if method not in IDEMPOTENT:
                self.counters.retry_skipped_method += 1
                return False
            if not complete:
                self.counters.retry_skipped_body += 1
                return False
            return True
        return False

    async def _send_rest(self, conn: Connection, receive: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                conn.abort("client closed")
                raise _ClientGone()
            chunk = message.get("body", b"")
            if chunk:
                await conn.send(chunk)
            if not message.get("more_body", False):
                return

    async def _send_chunked(
        self, conn: Connection, held: bytes, complete: bool, receive: Any
    ) -> None:
        if held:
            await conn.send(b"%x\r\n%s\r\n" % (len(held), held))
        while not complete:
            message = await receive()
            if message["type"] == "http.disconnect":
                conn.abort("client closed")
                raise _ClientGone()
            chunk = message.get("body", b"")
            if chunk:
                await conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            complete = not message.get("more_body", False)
        await conn.send(b"0\r\n\r\n")

    # -- response side ------------------------------------------------------------------------
    async def _respond(
        self,
        conn: Connection,
        status: int,
        headers: list[tuple[bytes, bytes]],
        send: Any,
        read_timeout: float,
        ex: _Exchange,
        private: bool = False,
    ) -> None:
        out = self._response_headers(headers, private)
        # A small answer is usually already here in full: then head and body go out as one
        # write and the response ends with that same message (GatewayHttpProtocol joins a
        # head to the body that follows it; other ASGI servers ignore the extra key).
        first, whole = conn.take_buffered()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": out,
                "gateway.body_follows": bool(first) or whole,
            }
        )
        if whole:
            await send({"type": "http.response.body", "body": first, "more_body": False})
            conn.finish()
            return
        if first:
            await send({"type": "http.response.body", "body": first, "more_body": True})
        try:
            while True:
                chunk = await conn.read(read_timeout)
                if not chunk:
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if ex.client_gone:
                    conn.close()
                    return
        except UpstreamError as err:
            # A response byte reached the client: never retry, never end the body cleanly.
            self.counters.error(err.kind)
            if not ex.client_gone:
                log.warning("upstream failed mid-body (%s); cutting the client connection", err)
            conn.close()
            raise _CutConnection() from err
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        conn.finish()

    def _response_headers(
        self, headers: list[tuple[bytes, bytes]], private: bool = False
    ) -> list[tuple[bytes, bytes]]:
        out = []
        tokens: set[bytes] = set()
        cache: list[bytes] = []
        for name, value in headers:
            if name in RESPONSE_SPECIAL:
                if name == b"connection":
                    tokens.update(t.strip().lower() for t in value.split(b","))
                elif name == b"set-cookie":
                    s = self.settings
                    reason = refused(value, s.reserved_cookies, s.cookie_domain)
                    if reason is None:
                        out.append((name, value))
                    else:
                        log.warning("dropped an upstream Set-Cookie: %s", reason)
                elif name == b"link":
                    out.append((name, fix_link(value)))
                continue
            if private and name == b"cache-control":
                cache.append(value)
                continue
            out.append((name, value))
        if tokens:
            out = [(n, v) for n, v in out if n not in tokens]
        if private:
            out.append((b"cache-control", private_value(cache)))
        return out


def fix_link(value: bytes) -> bytes:
    """Datasette sends ``Link: http://x/t.json; rel="alternate"``: RFC 8288 wants the target
    in angle brackets, so add them when the target is plainly one bare URL; else unchanged."""
    if value.startswith(b"<"):
        return value
    target, sep, params = value.partition(b";")
    target = target.strip()
    if not sep or not target or any(c in target for c in b"<>, \t"):
        return value
    return b"<" + target + b">;" + params


SHARED_CACHE_DIRECTIVES = (b"public", b"private", b"s-maxage", b"proxy-revalidate")
ALREADY_PRIVATE = frozenset({b"private", b"private, no-store", b"no-store, private"})


def private_value(values: list[bytes]) -> bytes:
    """``private`` plus the upstream's own browser directives (max-age, no-store...):
    Datasette's ``max-age`` and a client's ``?_ttl=`` must not let a shared cache keep one
    member's view of a private team."""
    if len(values) == 1 and values[0] in ALREADY_PRIVATE:
        return values[0]  # Datasette's answer to a signed-in actor: nothing to change
    directives = [b"private"]
    for value in values:
        for part in value.split(b","):
            part = part.strip()
            if part and not part.lower().startswith(SHARED_CACHE_DIRECTIVES):
                directives.append(part)
    return b", ".join(directives)


def private_cache(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers with their Cache-Control made private (the gateway's own pages)."""
    values = [v for n, v in headers if n == b"cache-control"]
    out = [(n, v) for n, v in headers if n != b"cache-control"]
    out.append((b"cache-control", private_value(values)))
    return out


class _ClientGone(Exception):
    """The client went away: nothing can be answered."""


class _CutConnection(Exception):
    """The response had started and cannot be completed: the connection must be cut."""


async def _watch_disconnect(receive: Any, ex: _Exchange) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            ex.client_gone = True
            if ex.conn is not None:
                ex.conn.abort("client closed")
            return


def _status_for(err: UpstreamError) -> HTTPError:
    """Map an upstream failure (before any response byte) to the client's status."""
    if err.kind == "aborted":
        return GatewayTimeout("the instance stopped before it answered (drain timeout)")
    if err.kind in ("read_timeout", "connect_timeout"):
        return GatewayTimeout("the team's instance did not answer in time")
    if err.kind == "connect":
        return BadGateway("the team's instance is unreachable")
    return BadGateway("the team's instance closed the connection without answering")


ClientGone = _ClientGone
CutConnection = _CutConnection


def _refuse_in_maintenance(service: Service) -> None:
    if service.maintenance is not None:
        raise Unavailable(service.maintenance, retry_after=30)
