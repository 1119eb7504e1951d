"""A lean HTTP/1.1 client for the proxy hot path: asyncio protocols plus httptools.

A general-purpose client (httpx) proxied an order of magnitude fewer requests per second
(benchmarks/README.md), so the proxy talks to targets through this module. It does exactly
what a reverse proxy needs:
keep-alive pooling with an idle limit below the upstream's own, streaming in both directions
with back-pressure, and precise knowledge of *when* a failure happened (before anything was
sent, on a reused connection before any response byte, or mid-body), which the retry rules
in ``routing/exchange.py`` depend on. Every failure is an ``UpstreamError`` whose ``kind``
says which case.
"""

from __future__ import annotations

import asyncio
import collections
import time

import httptools

from gateway.http.deadlines import deadlines

# Back-pressure: stop reading from the target while this much response body is unconsumed;
# read again once the proxy has taken it (it always takes all that is buffered).
HIGH_WATER = 256 * 1024
# A target that takes none of a request body for this long is given up (504), never waited on
# forever: the read timeout only starts once the whole request is sent.
WRITE_TIMEOUT = 60.0  # default; the gateway passes its read_timeout


class UpstreamError(Exception):
    """A failure talking to a target. ``kind`` is one of:

    connect          refused or unreachable: nothing was sent
    connect_timeout  no connection within the connect timeout: nothing was sent
    reset            closed or reset after the request was (partly) sent, before any response byte
    read_timeout     no response (or no next body chunk) within the read timeout
    protocol         the target answered something that is not HTTP/1.x
    truncated        the target died in the middle of the response body
    aborted          we aborted it ourselves (drain timeout, client gone)
    """

    def __init__(self, kind: str, message: str = "", *, reused: bool = False) -> None:
        super().__init__(message or kind)
        self.kind = kind
        self.reused = reused


class Connection(asyncio.Protocol):
    """One keep-alive connection to a target; at most one exchange at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.exchanges = 0  # completed exchanges: > 0 means this connection was reused
        self.closed = False
        self.idle_since = 0.0
        self._parser: httptools.HttpResponseParser | None = None
        self._head = False
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._headers_done = False
        self._message_done = False
        self._eof_body = False
        self._keep_alive = False
        self._got_bytes = False
        self._body: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._error: UpstreamError | None = None
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # Kept: asyncio.get_running_loop() makes a getpid() syscall on every call (3.11).
        self.loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None or self._message_done:
            # Bytes while idle (or after a HEAD response) mean the framing is off: never reuse.
            self._fail(UpstreamError("protocol", "unexpected bytes from target"))
            return
        self._got_bytes = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError("protocol", f"invalid HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        self._release_writer()  # a send() blocked on a full buffer must not wait forever
        if self._parser is None or self._message_done:
            self._wake()
            return
        if self._headers_done and self._eof_body:
            # A body delimited by connection close ends normally at EOF.
            self._message_done = True
            self._keep_alive = False
            self._wake()
            return
        if self._headers_done:
            self._fail(UpstreamError("truncated", "target closed the connection mid-body"))
        else:
            reused = self.exchanges > 0
            self._fail(
                UpstreamError(
                    "reset",
                    "target closed the connection without sending a response",
                    reused=reused and not self._got_bytes,
                )
            )

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._release_writer()

    def _release_writer(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- httptools callbacks ----------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._headers = []  # an interim response (100 Continue): the real one follows
            return
        self._status = status
        self._headers_done = True
        self._keep_alive = self._parser.should_keep_alive()
        framed = any(n in (b"content-length", b"transfer-encoding") for n, _ in self._headers)
        self._eof_body = not framed and status not in (204, 304) and not self._head
        if self._head:
            # A HEAD response has headers only, whatever Content-Length says.
            self._message_done = True
        if self._drain_waiter is not None:
            self._release_writer()  # answered mid-upload: stop waiting to send the rest
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self._message_done:
            return
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self._headers_done:
            return  # end of an interim response
        self._message_done = True
        assert self._parser is not None
        self._keep_alive = self._keep_alive and self._parser.should_keep_alive()
        self._wake()

    # -- the exchange -----------------------------------------------------------------------
    def begin(self, head: bytes, *, is_head: bool) -> None:
        """Send the request line and headers. After this call the request is committed."""
        self._parser = httptools.HttpResponseParser(self)
        self._head = is_head
        self._status = 0
        self._headers = []
        self._headers_done = self._message_done = self._eof_body = self._got_bytes = False
        self._keep_alive = False
        self._error = None
        assert self.transport is not None
        self.transport.write(head)

    async def send(self, data: bytes) -> None:
        self._raise_failure()
        if self._headers_done:
            # The target answered before taking the whole body (say, 413): that answer stands,
            # the rest of the body is moot, and this half-sent exchange is never reused.
            self._keep_alive = False
            return
        if self.closed or self.transport is None:
            raise UpstreamError("reset", "target closed the connection", reused=self.exchanges > 0)
        self.transport.write(data)
        if self._write_paused:
            loop = asyncio.get_running_loop()
            waiter = self._drain_waiter = loop.create_future()
            timer = loop.call_later(self.pool.write_timeout, self._write_timeout, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
            self._raise_failure()

    def _write_timeout(self, waiter: asyncio.Future[None]) -> None:
        if waiter is self._drain_waiter and not waiter.done():
            self._fail(UpstreamError("read_timeout", "target stopped reading the request body"))

    async def response(self, timeout: float) -> tuple[int, list[tuple[bytes, bytes]]]:
        """Wait for the status and headers, at most ``timeout`` seconds."""
        if not self._headers_done:
            await self._wait(timeout)
        return self._status, self._headers

    async def read(self, timeout: float) -> bytes:
        """The next body chunk, or b"" at the end of the body."""
        while True:
            if self._body:
                return self.take_buffered()[0]
            if self._message_done:
                return b""
            await self._wait(timeout)

    def take_buffered(self) -> tuple[bytes, bool]:
        """The body bytes already received (without waiting), and whether that is all of it.

        Everything buffered is handed over at once: one ASGI send per read, not per packet.
        """
        body = self._body
        if not body:
            return b"", self._message_done
        chunk = body.popleft() if len(body) == 1 else b"".join(body)
        body.clear()
        self._buffered = 0
        if self._reading_paused and self.transport:
            self._reading_paused = False
            self.transport.resume_reading()
        return chunk, self._message_done

    def finish(self) -> None:
        """The exchange is over: back to the pool if the connection can carry another."""
        self.exchanges += 1
        reusable = (
            self._message_done
            and self._keep_alive
            and not self._body
            and self._error is None
            and not self.closed
        )
        if reusable:
            self._parser = None
            self.pool._release(self)
        else:
            self.close()

    def abort(self, reason: str) -> None:
        """Fail the exchange in progress (drain timeout, client gone) and close."""
        self._fail(UpstreamError("aborted", reason))

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True
        self.pool._forget(self)

    # -- internals --------------------------------------------------------------------------
    async def _wait(self, timeout: float) -> None:
        self._raise_failure()
        if self.closed and not self._message_done:
            raise UpstreamError("reset", "target connection is closed", reused=self.exchanges > 0)
        loop = self.loop or asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        clock = deadlines(loop)  # a coarse deadline: no timer armed and cancelled per wait
        clock.add(waiter, timeout, self._timeout, waiter)
        try:
            await waiter
        finally:
            clock.discard(waiter)
            self._waiter = None
        self._raise_failure()

    def _raise_failure(self) -> None:
        # Every check goes through here, never inline: after an await, callbacks may have set
        # _error while the type checker still holds the caller's earlier "is None" (and mypyc
        # enforces that narrowing at run time).
        if self._error is not None:
            raise self._error

    def _timeout(self, waiter: asyncio.Future[None]) -> None:
        if waiter is self._waiter and not waiter.done():
            self._fail(UpstreamError("read_timeout", "target did not answer in time"))

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, err: UpstreamError) -> None:
        if self._error is None:
            self._error = err
        self._wake()
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True
        self.pool._forget(self)


class Pool:
    """Keep-alive connections to one target. LIFO reuse keeps few connections warm."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        idle_timeout: float = 2.0,
        write_timeout: float = WRITE_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self.idle_timeout = idle_timeout
        self.write_timeout = write_timeout
        self.idle: list[Connection] = []
        self.active: set[Connection] = set()
        self.closed = False

    def take_idle(self) -> Connection | None:
        """A live idle connection, if there is one: the fast path of ``acquire``."""
        idle = self.idle
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.closed or now - conn.idle_since >= self.idle_timeout:
                conn.close()
                continue
            self.active.add(conn)
            return conn
        return None

    async def acquire(self, connect_timeout: float, *, fresh: bool = False) -> Connection:
        if not fresh:
            conn = self.take_idle()
            if conn is not None:
                return conn
        if self.closed:
            raise UpstreamError("connect", "target is stopped")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: Connection(self), self.host, self.port
                )
        except TimeoutError as exc:
            raise UpstreamError("connect_timeout", f"no connection to {self.address}") from exc
        except OSError as exc:
            raise UpstreamError(
                "connect", f"cannot connect to {self.address}: {exc.strerror}"
            ) from exc
        self.active.add(conn)
        return conn

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _release(self, conn: Connection) -> None:
        self.active.discard(conn)
        if self.closed:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self.idle.append(conn)

    def _forget(self, conn: Connection) -> None:
        self.active.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)

    def close_idle(self) -> None:
        for conn in list(self.idle):
            conn.close()
        self.idle.clear()

    def sweep(self) -> None:
        """Close connections idle for longer than the idle timeout."""
        now = time.monotonic()
        for conn in list(self.idle):
            if now - conn.idle_since >= self.idle_timeout:
                conn.close()

    def abort_active(self, reason: str) -> int:
        conns = list(self.active)
        for conn in conns:
            conn.abort(reason)
        return len(conns)

    def close(self) -> None:
        self.closed = True
        self.close_idle()

    def connections(self) -> int:
        return len(self.idle) + len(self.active)


def build_head(method: str, target: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    # A list, not an Iterable: mypyc then walks it by index and unpacks natively, per header.
    parts = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
