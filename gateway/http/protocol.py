"""The gateway's HTTP/1.1 protocol under uvicorn: the connection and its request cycles.

uvicorn still owns the server: sockets, TLS, lifespan, signals, the Date header and the
shutdown sequence. This class replaces its httptools protocol, whose per-request work was most
of a proxied request's cost (``benchmarks/instructions.py``; the figures are in
benchmarks/README.md). What it does differently:

* the response head is written together with the first body chunk: one ``send()`` syscall
  per small response, not two. A head not followed by a body in the same turn of the event
  loop is flushed on the next turn, so a streaming response's status is never held back;
* headers are checked with one regular expression over the whole head, not two per header;
* no ``asyncio.Event`` per request: ``receive()`` waits on a future only when it must;
* keep-alive is a coarse deadline per idle connection (``gateway/http/deadlines.py``), not a
  timer armed and cancelled around every response;
* the scope is one dict literal, and the default headers (``Date``, HSTS) are joined once a
  second, not once per response.

It keeps uvicorn's semantics, which the whole test suite exercises through this class:
pipelining, 100-continue, HEAD, chunked responses when no length is given, ``Connection:
close``, Content-Length checks, 400 on a malformed request, a 500 when the app fails before it
answers, flow control both ways, and ``limit_concurrency``. It adds one thing on shutdown: an
idle keep-alive connection is not cut early, it keeps its keep-alive deadline (see ``shutdown``).

It is also the public listener's first line against hostile clients (``gateway/limits.py``,
docs/reliability.md "hostile clients"), all enforced while parsing, before anything is held
past a limit:

* a request target over ``max_request_line`` gets 414, a head over ``max_header_bytes`` or
  ``max_headers`` 431, then the connection closes;
* a head not complete within ``header_timeout`` (from the connection's open, or from the
  request's first byte) gets 408; a connection that sent nothing is closed silently, as an
  idle keep-alive one is; a request body that stalls ``body_idle_timeout`` between reads gets
  408 and the app sees the client gone (the proxy aborts the upstream exchange). Each is one
  entry in the coarse deadlines, armed only while the head or body is incomplete after a read;
* connections over ``max_connections`` or ``max_connections_per_ip`` are closed at once;
* HTTP/1.0 keeps the connection alive when asked (``Connection: keep-alive``) and never gets
  chunked encoding: a response without a length is close-delimited;
* every protocol ``Upgrade`` is refused with 400 (no WebSocket here); the connection goes on
  with the bytes that follow, or closes if the Upgrade request carried a body;
* an absolute-form target (``GET http://host/ HTTP/1.1``) is routed by its authority, which
  replaces the Host header (RFC 9112 section 3.2.2).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import unquote

import httptools
import uvicorn
from uvicorn.protocols.http.flow_control import (
    HIGH_WATER_LIMIT,
    FlowControl,
    service_unavailable,
)
from uvicorn.protocols.http.httptools_impl import STATUS_LINE
from uvicorn.protocols.utils import get_local_addr, get_remote_addr, is_ssl
from uvicorn.server import ServerState

from gateway.context import CONTEXT, RequestContext
from gateway.errors import (
    BadRequest,
    HeaderFieldsTooLarge,
    HTTPError,
    RequestTimeout,
    URITooLong,
)
from gateway.http.deadlines import deadlines
from gateway.limits import limits_of

# A head is "NAME: VALUE\r\n" lines: a token, then printable bytes or tab (obs-text allowed).
# One fullmatch over the joined head rejects CR/LF injection and bad names in one C loop.
_HEAD_LINES = re.compile(rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+: [\t\x20-\x7e\x80-\xff]*\r\n)*")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# A head this much longer than both limits is refused even before its current line ends (the
# slack is the method, the version and the line ends around the target).
HEAD_SLACK: Final = 1024

# Where the parser is in the current request (``_parse``). Final: mypyc inlines them.
BETWEEN: Final = 0  # no request byte since the last message ended
HEAD: Final = 1  # the head has begun and is not complete
BODY: Final = 2  # the head is complete, the body is not
DISCARD: Final = 3  # refused (or an Upgrade's body): what follows is dropped, then close

# What the connection's one deadline waits for (``_waiting``):
W_NONE: Final = 0
W_IDLE: Final = 1  # the next request after a response (keep-alive)
W_HEAD: Final = 2  # the rest of a head (header_timeout), or the first byte on a new connection
W_BODY: Final = 3  # the next body bytes (body_idle_timeout)
W_LINGER: Final = 4  # after a refusal: what the client still sends is read and dropped
# A refused client may still be sending (a huge head): closing with its bytes unread would send
# a reset that can destroy our answer before it reads it. Like nginx's lingering_close, reads
# go on (discarded) this long after a refusal, whatever the client does.
LINGER: Final = 2.0  # seconds


class _HeadCache:
    """The server's default headers (date, server) as bytes, rebuilt when uvicorn replaces them."""

    def __init__(self) -> None:
        self.source: list[tuple[bytes, bytes]] | None = None
        self.head = b""


_DEFAULT_HEAD = _HeadCache()


class GatewayHttpProtocol(asyncio.Protocol):
    """One client connection: parsing, pipelining, keep-alive, flow control and shutdown."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.logger = logging.getLogger("uvicorn.error")
        self.root_path = config.root_path
        self.limit_concurrency = config.limit_concurrency
        self.timeout_keep_alive = config.timeout_keep_alive
        self.server_state = server_state
        self.connections = server_state.connections
        self.tasks = server_state.tasks
        self.app_state = app_state
        self.parser = httptools.HttpRequestParser(self)
        # Answer the first of several pipelined requests even when the client half-closed.
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.flow: FlowControl = None  # type: ignore[assignment]
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        self.pipeline: deque[tuple[Cycle, Any]] = deque()
        self.cycle: Cycle | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.expect_100_continue = False
        self._clock = deadlines(self.loop)
        self._draining = False
        limits = self.limits = limits_of(config)
        self._max_target = limits.max_request_line
        self._max_header_bytes = limits.max_header_bytes
        self._max_headers = limits.max_headers
        self._head_cap = limits.max_request_line + limits.max_header_bytes + HEAD_SLACK
        self._header_timeout = limits.header_timeout
        self._body_idle_timeout = limits.body_idle_timeout
        self._ip = ""
        self._admitted = False  # counted in limits (released once, when the connection is lost)
        self._parse = BETWEEN
        self._waiting = W_NONE
        self._url_parts: list[bytes] = []  # joined once: a fragmented target is never re-copied
        self._url_len = 0
        self._header_bytes = 0  # names and values of the complete header lines so far
        self._head_pending = 0  # bytes of reads that began inside an incomplete head
        self._upgrade = False  # an Upgrade header was seen (the parser decides if it counts)

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.client = get_remote_addr(self.transport)
        ip = self.client[0] if self.client else ""
        if not self.limits.admit(ip):
            # Over a connection cap: closed at once, before any byte is read or answered.
            self.transport.close()
            return
        self._ip = ip
        self._admitted = True
        self.connections.add(self)  # type: ignore[arg-type]  # uvicorn types it as its own
        self.flow = FlowControl(self.transport)
        self.server = get_local_addr(self.transport)
        self.scheme = "https" if is_ssl(self.transport) else "http"
        self._arm(W_HEAD, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._admitted:
            self._admitted = False
            self.limits.release(self._ip)
        self.connections.discard(self)
        cycle = self.cycle
        if cycle is not None:
            if not cycle.response_complete:
                cycle.disconnected = True
            cycle.set()
        if self.flow is not None:
            self.flow.resume_writing()
        if exc is None:
            self.transport.close()
        self._unset_keep_alive()
        self.parser = None  # type: ignore[assignment]

    def eof_received(self) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        if self._waiting == W_IDLE:
            self._clear_wait()
        parse = self._parse
        if parse == HEAD:
            self._head_pending += len(data)
        elif parse == DISCARD:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._after_upgrade(data, int(exc.args[0]))
            return
        except httptools.HttpParserError as exc:
            refusal = exc.__context__
            if isinstance(refusal, HTTPError):
                self._refuse(refusal)  # a limit, raised by a callback below
            else:
                self.logger.warning("Invalid HTTP request received.")
                self._refuse(BadRequest("Invalid HTTP request received."))
            return
        self._after_read()

    def _after_read(self) -> None:
        """Arm, refresh or clear the head and body deadlines once a read is parsed.

        A request that arrives whole in one read (the usual case) arms nothing."""
        parse = self._parse
        if parse == HEAD:
            if (
                self._head_pending > self._head_cap
                or self._header_bytes > self._max_header_bytes
                or len(self.headers) > self._max_headers
            ):
                self._refuse(self._too_large())
            elif self._waiting != W_HEAD and self._idle():
                self._arm(W_HEAD, self._header_timeout)
        elif parse == BODY:
            self._arm(W_BODY, self._body_idle_timeout)
        elif self._waiting != W_NONE:
            if self._waiting == W_BODY and self._idle() and not self.pipeline:
                # The body ended after its response (answered early): idle from now on.
                self._arm(W_IDLE, self.timeout_keep_alive)
            else:
                self._clear_wait()

    def _after_upgrade(self, data: bytes, offset: int) -> None:
        """The parser stopped after an Upgrade request (answered 400 by ``on_headers_complete``).

        What follows is HTTP again: the next request, parsed as usual. An Upgrade request
        with a body is answered with ``Connection: close`` and its body never read, so no
        byte of it is ever taken for a request."""
        cycle = self.cycle
        if cycle is not None and not cycle.keep_alive:
            self._parse = DISCARD
            self._clear_wait()
            self.flow.pause_reading()
            return
        rest = data[offset:]
        if rest:
            self.data_received(rest)
        else:
            self._after_read()

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.headers = []
        self.expect_100_continue = False
        self._parse = HEAD
        self._url_parts.clear()
        self._url_len = 0
        self._header_bytes = 0
        self._head_pending = 0
        self._upgrade = False

    def on_url(self, url: bytes) -> None:
        self._url_parts.append(url)
        self._url_len += len(url)
        if self._url_len > self._max_target:
            raise URITooLong(f"the request target is longer than {self._max_target} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        self._header_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if name == b"expect":
            if value.lower() == b"100-continue":
                self.expect_100_continue = True
        elif name == b"upgrade":
            self._upgrade = True
        self.headers.append((name, value))

    def _too_large(self) -> HTTPError:
        if len(self.headers) > self._max_headers:
            return HeaderFieldsTooLarge(f"more than {self._max_headers} header fields")
        return HeaderFieldsTooLarge(f"the request head is over {self._max_header_bytes} bytes")

    def on_headers_complete(self) -> None:
        if self._header_bytes > self._max_header_bytes or len(self.headers) > self._max_headers:
            raise self._too_large()
        self._parse = BODY
        parser = self.parser
        http_version = parser.get_http_version()
        parts = self._url_parts
        url = parts[0] if len(parts) == 1 else b"".join(parts)
        if url[0] != 47:  # not "/": absolute-form (or "*")
            url = self._absolute_form(url)
        # Any: the stubs say bytes, but an absent query is None (and mypyc checks types).
        parsed: Any = httptools.parse_url(url)
        raw_path = parsed.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = unquote(path)
        if self.root_path:
            path = self.root_path + path
            raw_path = self.root_path.encode("ascii") + raw_path
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": http_version,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "root_path": self.root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
            "method": parser.get_method().decode("ascii"),
            "path": path,
            "raw_path": raw_path,
            "query_string": parsed.query or b"",
            CONTEXT: RequestContext(),
        }
        app = self.app
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            self.logger.warning("Exceeded concurrency limit.")
            app = service_unavailable
        # httptools keeps a 1.0 connection alive only on its "Connection: keep-alive".
        keep_alive = parser.should_keep_alive() and not self._draining
        if self._upgrade and parser.should_upgrade():
            app = refuse_upgrade
            if _has_body(self.headers):
                keep_alive = False  # its body is never read (see _after_upgrade)
        existing = self.cycle
        cycle = self.cycle = Cycle(self, scope, keep_alive=keep_alive, http10=http_version == "1.0")
        if existing is None or existing.response_complete:
            self._start(cycle, app)
        else:
            # Pipelined requests wait their turn.
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, app))

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return
        cycle.body += body
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.set()

    def on_message_complete(self) -> None:
        self._parse = BETWEEN
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return
        cycle.more_body = False
        cycle.set()

    # -- requests --------------------------------------------------------------------------
    def _start(self, cycle: Cycle, app: Any) -> None:
        task = self.loop.create_task(cycle.run_asgi(app))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start(cycle, app)
        elif self._parse == BETWEEN:
            # A coarse deadline per idle connection, not a timer armed and cancelled per
            # response (see gateway/http/deadlines.py).
            self._arm(W_IDLE, self.timeout_keep_alive)
        elif self._parse == HEAD:
            # The next request's head began while this one was answered: its deadline now.
            self._arm(W_HEAD, self._header_timeout)

    # -- the connection's one deadline: keep-alive idle, head, body ---------------------------
    def _arm(self, waiting: int, delay: float) -> None:
        self._waiting = waiting
        self._clock.add(self, delay, _wait_expired, self)

    def _clear_wait(self) -> None:
        self._waiting = W_NONE
        self._clock.discard(self)

    def _idle(self) -> bool:
        """No response is being written (a deadline's answer would land inside it)."""
        cycle = self.cycle
        return cycle is None or cycle.response_complete

    def _expired(self) -> None:
        waiting = self._waiting
        self._waiting = W_NONE
        if self.transport.is_closing():
            return
        if waiting in (W_IDLE, W_LINGER):
            self.timeout_keep_alive_handler()
        elif waiting == W_HEAD:
            if self._parse == HEAD:
                self._refuse(RequestTimeout("the request head took too long"))
            else:
                self.timeout_keep_alive_handler()  # nothing sent: closed like an idle one
        elif waiting == W_BODY:
            if self.flow.read_paused:
                # Our own back-pressure (a slow upstream), not the client: wait again.
                self._arm(W_BODY, self._body_idle_timeout)
                return
            self._parse = DISCARD
            cycle = self.cycle
            if cycle is not None:
                answer = not cycle.response_started
                # The app sees the client gone: the proxy aborts its upstream exchange.
                cycle.disconnected = True
                cycle.set()
                if answer:
                    self._write_refusal(RequestTimeout("the request body stalled"))
            self.transport.close()

    def _unset_keep_alive(self) -> None:
        if self._waiting != W_NONE:
            self._clear_wait()

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    # -- shutdown: graceful keep-alive ------------------------------------------------------
    def shutdown(self) -> None:
        """The server is stopping (``gateway restart``, SIGTERM).

        The next response whose head is not yet out goes with ``Connection: close``, and the
        client reconnects (to the successor, which holds the same listening socket). A
        response whose head is already out has promised keep-alive: closing after it is a
        close the client cannot see coming, so its connection goes idle like any other.

        An idle keep-alive connection is NOT closed early: it keeps the deadline it already
        has (``timeout_keep_alive`` after its last response, or ``header_timeout`` for a head
        still coming). Closing it sooner would race with a request the client may be sending
        on it: a client that keeps idle connections for less than our keep-alive timeout never
        reuses one we close at that deadline, but it would reuse one we closed earlier, and
        see it close with no answer (a failed request, or a resend).
        """
        self._draining = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if not cycle.response_started:
                cycle.keep_alive = False
        elif self._waiting == W_NONE:
            self._arm(W_IDLE, self.timeout_keep_alive)  # idle without a deadline: bound it

    def _refuse(self, err: HTTPError) -> None:
        """Answer a request the protocol refuses (400, 408, 414, 431), then close.

        Never inside another response still being written: that one is cut instead."""
        self._parse = DISCARD
        self._clear_wait()
        transport = self.transport
        if self._idle():
            self._write_refusal(err)
            if transport.can_write_eof():
                transport.write_eof()
                self._arm(W_LINGER, LINGER)
                return
        transport.close()

    def _write_refusal(self, err: HTTPError) -> None:
        body = err.detail.encode("ascii")
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[err.status],
                    self.default_head(),
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: %d\r\n" % len(body),
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )

    def _absolute_form(self, target: bytes) -> bytes:
        """``GET http://host/path HTTP/1.1``: the target's authority replaces any Host header
        (RFC 9112 section 3.2.2); the origin-form path is what goes on."""
        if target == b"*":
            return target  # OPTIONS *: parse_url refuses it (400), as before
        parsed: Any = httptools.parse_url(target)
        schema = parsed.schema
        host = parsed.host
        if not schema or not host or schema.lower() not in (b"http", b"https"):
            raise BadRequest("the request target is neither a path nor an http(s) URL")
        if parsed.port is not None:
            host = b"%s:%d" % (host, parsed.port)
        self.headers = [(n, v) for n, v in self.headers if n != b"host"]
        self.headers.append((b"host", host))
        path = parsed.path or b"/"
        return path + b"?" + parsed.query if parsed.query else path

    def default_head(self) -> bytes:
        """The server's default headers as bytes; uvicorn replaces the list once a second."""
        current = self.server_state.default_headers
        cache = _DEFAULT_HEAD
        if current is not cache.source:
            cache.head = b"".join(
                [b"%s: %s\r\n" % (name.lower(), value) for name, value in current]
            )
            cache.source = current
        return cache.head


class Cycle:
    """One request and its response on a client connection (uvicorn's cycle, leaner)."""

    __slots__ = (
        "_flush_handle",
        "_head",
        "_ready",
        "_waiter",
        "body",
        "chunked",
        "context",
        "delimited",
        "disconnected",
        "flow",
        "http10",
        "is_head",
        "keep_alive",
        "loop",
        "message_event",
        "more_body",
        "on_response",
        "protocol",
        "remaining",
        "response_complete",
        "response_started",
        "scope",
        "transport",
        "waiting_for_100_continue",
    )

    def __init__(
        self,
        protocol: GatewayHttpProtocol,
        scope: dict[str, Any],
        *,
        keep_alive: bool,
        http10: bool = False,
    ) -> None:
        self.protocol = protocol
        self.scope = scope
        self.context: RequestContext = scope[CONTEXT]
        self.transport: asyncio.Transport = protocol.transport
        self.flow: FlowControl = protocol.flow
        self.loop = protocol.loop
        self.on_response: Callable[[], None] = protocol.on_response_complete
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = protocol.expect_100_continue
        self.is_head = scope["method"] == "HEAD"
        # The protocol calls ``cycle.message_event.set()`` when body bytes or the end arrive.
        self.message_event = self
        self._ready = False
        self._waiter: asyncio.Future[None] | None = None
        self.disconnected = False
        self.body = bytearray()
        self.more_body = True
        self.response_started = False
        self.response_complete = False
        self.chunked = False
        self.http10 = http10
        self.delimited = False  # an HTTP/1.0 body without a length: it ends when we close
        self.remaining = -1  # Content-Length still to send; -1: none given
        self._head = b""
        self._flush_handle: asyncio.Handle | None = None

    # -- the event the protocol sets ------------------------------------------------------
    def set(self) -> None:
        self._ready = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the ASGI app ---------------------------------------------------------------------
    async def run_asgi(self, app: Any) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            self.protocol.logger.error("Exception in ASGI application\n", exc_info=exc)
            if not self.response_started:
                await self._send_500()
            else:
                self.transport.close()
        else:
            if result is not None:
                self.protocol.logger.error(
                    "ASGI callable should return None, but returned %r.", result
                )
                self.transport.close()
            elif not self.response_started and not self.disconnected:
                self.protocol.logger.error("ASGI callable returned without starting response.")
                await self._send_500()
            elif not self.response_complete and not self.disconnected:
                self.protocol.logger.error("ASGI callable returned without completing response.")
                self._flush()
                self.transport.close()
        finally:
            self.on_response = _nothing

    async def _send_500(self) -> None:
        await self.send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", b"21"),
                    (b"connection", b"close"),
                ],
            }
        )
        await self.send({"type": "http.response.body", "body": b"Internal Server Error"})

    async def receive(self) -> dict[str, Any]:
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(_CONTINUE)
            self.waiting_for_100_continue = False
        if not self.disconnected and not self.response_complete:
            self.flow.resume_reading()
            if not self._ready:
                waiter = self._waiter = self.loop.create_future()
                try:
                    await waiter
                finally:
                    self._waiter = None
            self._ready = False
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        message = {"type": "http.request", "body": bytes(self.body), "more_body": self.more_body}
        self.body = bytearray()
        return message

    async def send(self, message: dict[str, Any]) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.start', but got '{kind}'."
                )
            self._start(message["status"], message.get("headers", ()))
        elif not self.response_complete:
            if kind != "http.response.body":
                raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{kind}'.")
            self._body(message.get("body", b""), message.get("more_body", False))
        else:
            raise RuntimeError(
                f"Unexpected ASGI message '{kind}' sent, after response already completed."
            )

    # -- response writing -----------------------------------------------------------------
    def _start(self, status: int, headers: Any) -> None:
        self.response_started = True
        self.waiting_for_100_continue = False
        context = self.context
        context.status = status  # what the observer counts and logs
        parts = [b"%s: %s\r\n" % (name, value) for name, value in headers]
        if not _HEAD_LINES.fullmatch(b"".join(parts)):
            raise RuntimeError("Invalid HTTP header name or value.")
        close = False
        for name, value in headers:
            name = name.lower()
            if name == b"content-length":
                if not self.chunked:
                    self.remaining = int(value)
            elif name == b"transfer-encoding":
                if value.lower() == b"chunked":
                    self.chunked = True
                    self.remaining = 0
            elif name == b"connection" and b"close" in [
                token.strip() for token in value.lower().split(b",")
            ]:
                close = True
                self.keep_alive = False
        head = [STATUS_LINE[status], self.protocol.default_head(), *parts]
        if self.remaining < 0 and not self.chunked:
            if not self.is_head and status not in (204, 304):
                if self.http10:
                    # RFC 9112 section 6.1: never chunked to 1.0; the close ends the body.
                    self.delimited = True
                    self.keep_alive = False
                else:
                    self.chunked = True
                    head.append(b"transfer-encoding: chunked\r\n")
            self.remaining = 0
        if not self.keep_alive:
            if not close:
                head.append(b"connection: close\r\n")
        elif self.http10:
            head.append(b"connection: keep-alive\r\n")  # 1.0 closes unless told otherwise
        head.append(b"\r\n")
        self._head = b"".join(head)
        # Written with the first body chunk when that comes in this same turn of the loop
        # (one syscall for a small response); otherwise on the next turn, never held back.
        # The proxy says when its body message follows at once: no flush to schedule then.
        if not context.body_follows:
            self._flush_handle = self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        if self._head:
            head, self._head = self._head, b""
            if not self.disconnected and not self.transport.is_closing():
                self.transport.write(head)

    def _body(self, body: bytes, more_body: bool) -> None:
        if self.is_head:
            body = b""
            self.remaining = 0
        elif self.chunked:
            if body:
                body = b"%x\r\n%s\r\n" % (len(body), body)
            if not more_body:
                body += b"0\r\n\r\n"
        elif not self.delimited:
            self.remaining -= len(body)
            if self.remaining < 0:
                raise RuntimeError("Response content longer than Content-Length")
        if self._head:
            body = self._head + body
            self._head = b""
            handle = self._flush_handle
            if handle is not None:
                handle.cancel()
                self._flush_handle = None
        if body:
            self.transport.write(body)
        if not more_body:
            if self.remaining > 0 and not self.chunked:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()


def _nothing() -> None:
    return None


def _wait_expired(protocol: GatewayHttpProtocol) -> None:
    protocol._expired()


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


UPGRADE_REFUSED = BadRequest(
    "This gateway does not switch protocols (no WebSocket): send the request without Upgrade."
)


async def refuse_upgrade(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The app for every Upgrade request: 400, and the connection's framing is kept."""
    body = UPGRADE_REFUSED.detail.encode("ascii")
    await send(
        {
            "type": "http.response.start",
            "status": UPGRADE_REFUSED.status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
