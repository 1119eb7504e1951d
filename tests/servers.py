"""Real upstreams for the proxy tests, on 127.0.0.1 random ports: no mocks.

* ``RawUpstream``: a hand-written asyncio HTTP/1.1 server that misbehaves on purpose
  (resets right after accept, closes a reused keep-alive connection without answering, hangs,
  dies mid-body). It answers ``/-/health`` normally (except when a reset is armed) so the
  gateway's health checks mark it healthy first; then the test makes it misbehave.
* ``ClosedPort``: a port nothing listens on (connection refused), held so nobody takes it.
* ``UvicornUpstream``: a real uvicorn server running ``echo_app`` (echo, streaming both ways,
  repeated Set-Cookie, redirects, HEAD, hop-by-hop response headers, a slow endpoint).
* ``gateway_for``: a gateway in front of any of these, one or more targets per team.
* ``start_protocol_server``: any ASGI app under the gateway's own HTTP protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx
import uvicorn

from gateway.config import Config
from gateway.http.protocol import GatewayHttpProtocol
from gateway.runtimes.static import StaticRuntime
from gateway.store import open_store
from gateway.store.db import Store
from tests.conftest import LoopbackTransport, Running, StartGateway, free_socket
from tests.shutdown import stop_server

Address = tuple[str, int]


class ClosedPort:
    """A loopback port nothing listens on (connecting is refused) that no other program can
    take while this holds it: a socket bound, never listening. A server started later on
    ``sock`` (``UvicornUpstream.start(sock=...)``) listens on that very port."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ClosedPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Blackhole:
    """A listener on ``port`` whose accept queue is full: new connections never complete (SYNs
    are dropped), so connecting times out, as with a wedged or firewalled host."""

    def __init__(self, port: int = 0, sock: socket.socket | None = None) -> None:
        """On ``port``, or on the bound socket ``sock`` (``RawUpstream.take_port``)."""
        if sock is None:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
        port = int(sock.getsockname()[1])
        self.listener = sock
        self.listener.listen(0)
        self.fillers: list[socket.socket] = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            self.fillers.append(filler)

    def close(self) -> None:
        for filler in self.fillers:
            filler.close()
        self.listener.close()

    def __enter__(self) -> Blackhole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def response(status: int = 200, body: bytes = b'{"ok": true}', *, close: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    )
    if close:
        head += "connection: close\r\n"
    return head.encode() + b"\r\n" + body


class RawUpstream:
    """A misbehaving HTTP/1.1 server. ``behaviour`` is one of:

    ok        answer every request (keep-alive)
    reset     once ``armed``: RST right after accept, before reading anything
    stale     answer the first request of each connection with keep-alive, then close the
              connection without answering the next one (after ``stale_delay`` seconds): the
              stale keep-alive race ("Server disconnected without sending a response")
    hang      read the request, never answer; count the connections the peer closed
    midbody   answer Content-Length 1000, send 100 bytes, close
    chunked_cut      answer chunked, send one 100-byte chunk, close (no last chunk)
    close_delimited  answer without Content-Length; the body ends when the connection closes
    interim   send 100 Continue and 103 Early Hints before the real answer
    early     answer 413 right after the request head, never reading the body, and close
    stall     read the request head, then never read the body nor answer
    """

    def __init__(self, behaviour: str, *, stale_delay: float = 0.0) -> None:
        self.behaviour = behaviour
        self.stale_delay = stale_delay
        self.armed = False
        self.accepts = 0
        self.resets = 0
        self.requests: list[tuple[str, str, int]] = []  # (method, path, body bytes) non-health
        self.peer_closed = 0  # hang: connections the gateway closed while we held them
        self.hanging = 0  # hang: requests currently held without an answer
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        self._kept: socket.socket | None = None  # the port, held once it stopped listening

    @property
    def address(self) -> Address:
        return ("127.0.0.1", self.port)

    async def start(self) -> RawUpstream:
        # SO_REUSEPORT: stop_listening can keep the port (a socket bound beside the listener).
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, reuse_port=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop_listening(self) -> None:
        """Close the listener: new connections are now refused. The port stays held (bound,
        not listening), so no other program takes it; ``take_port`` hands it to another
        server, as an instance coming back on its port."""
        if self._server is not None:
            kept = socket.socket()
            kept.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            kept.bind(("127.0.0.1", self.port))
            self._kept = kept
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def take_port(self) -> socket.socket:
        """The held port's socket, bound and not listening, for another server to listen on."""
        assert self._kept is not None, "stop_listening first"
        kept, self._kept = self._kept, None
        return kept

    async def close(self) -> None:
        if self._kept is not None:
            self._kept.close()
            self._kept = None
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _early_answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """early: answer 413 after the request head, without reading the body, then close."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            return False
        if head.startswith(b"GET /-/health "):
            writer.write(response(close=True))
        else:
            self.requests.append(("POST", "early", 0))
            writer.write(response(413, b'{"too": "large"}', close=True))
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        return True

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[str, str, bytes] | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        return method, path, await _read_body(reader, length)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts += 1
        self._writers.add(writer)
        try:
            if self.behaviour == "reset" and self.armed:
                self.resets += 1
                _reset(writer)
                return
            if self.behaviour == "early":
                await self._early_answer(reader, writer)
                return
            if self.behaviour == "stall":
                await self._stall(reader, writer)
                return
            answered = 0
            while True:
                request = await self._read_request(reader)
                if request is None:
                    return
                method, path, body = request
                if path == "/-/health":
                    writer.write(response(close=True))
                    await writer.drain()
                    return
                self.requests.append((method, path, len(body)))
                if self.behaviour == "stale" and answered >= 1:
                    await asyncio.sleep(self.stale_delay)
                    _reset(writer)
                    return
                if self.behaviour == "hang":
                    await self._hang(reader)
                    return
                if self.behaviour == "chunked_cut":
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                        b"transfer-encoding: chunked\r\n\r\n64\r\n" + b"c" * 100 + b"\r\n"
                    )
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    writer.transport.abort()
                    return
                if self.behaviour == "close_delimited":
                    # HTTP/1.0 style: no Content-Length, the body ends when the connection does.
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n")
                    for _ in range(10):
                        writer.write(b"d" * 1000)
                        await writer.drain()
                    writer.close()
                    return
                if self.behaviour == "interim":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </x.css>\r\n\r\n")
                if self.behaviour == "midbody":
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                        b"content-length: 1000\r\n\r\n" + b"x" * 100
                    )
                    await writer.drain()
                    await asyncio.sleep(0.05)  # let the 100 bytes reach the client first
                    writer.transport.abort()
                    return
                answered += 1
                body_out = json.dumps({"ok": True, "method": method, "n": len(body)}).encode()
                answer = response(body=body_out)
                if method == "HEAD":  # the same head, no body
                    answer = answer[: answer.index(b"\r\n\r\n") + 4]
                writer.write(answer)
                await writer.drain()
        except ConnectionError:
            return
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _stall(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """stall: answer health checks; otherwise read the request head, then nothing more."""
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"GET /-/health "):
            writer.write(response(close=True))
            await writer.drain()
            return
        self.requests.append(("POST", "stall", 0))
        self.hanging += 1
        try:
            await asyncio.Event().wait()  # until the server is closed
        finally:
            self.hanging -= 1

    async def _hang(self, reader: asyncio.StreamReader) -> None:
        self.hanging += 1
        try:
            with contextlib.suppress(ConnectionError):
                while await reader.read(65536):
                    pass
            self.peer_closed += 1
        finally:
            self.hanging -= 1


async def _read_body(reader: asyncio.StreamReader, length: int) -> bytes:
    try:
        return await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError as exc:
        return exc.partial


# -- a real uvicorn upstream ---------------------------------------------------------------------
CHUNK = b"z" * (256 * 1024)


class UpstreamState:
    """What the echo app saw, for assertions."""

    def __init__(self) -> None:
        self.slow_started = 0
        self.slow_finished = 0
        self.slow_disconnected = 0
        self.paths: list[str] = []
        self.gate = asyncio.Event()  # /gate requests wait until the test opens it
        self.gated = 0  # /gate requests that arrived
        self.body_disconnected = 0  # requests whose body ended in a disconnect
        self.trickling = 0  # /trickle answers begun (100 of 1000 bytes sent, then nothing)


def echo_app(state: UpstreamState) -> Callable[..., Awaitable[None]]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path: str = scope["path"]
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        if path != "/-/health":
            state.paths.append(path)

        async def answer(
            status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
        ) -> None:
            out = [(b"content-length", str(len(body)).encode()), *(headers or [])]
            if not any(n == b"content-type" for n, _ in out):
                out.append((b"content-type", b"application/json"))
            await send({"type": "http.response.start", "status": status, "headers": out})
            await send({"type": "http.response.body", "body": body})

        if path == "/stream":
            n = int(query.get("n", "0"))
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/octet-stream"),
                        (b"content-length", str(n).encode()),
                    ],
                }
            )
            if n == 0:
                await send({"type": "http.response.body", "body": b""})
            while n > 0:
                piece = CHUNK if n >= len(CHUNK) else CHUNK[:n]
                n -= len(piece)
                await send({"type": "http.response.body", "body": piece, "more_body": n > 0})
            return
        if path == "/trickle":  # a straggler mid-body: the head and a tenth of the body
            head = [(b"content-type", b"text/plain"), (b"content-length", b"1000")]
            await send({"type": "http.response.start", "status": 200, "headers": head})
            await send({"type": "http.response.body", "body": b"t" * 100, "more_body": True})
            state.trickling += 1
            await asyncio.Event().wait()  # never more (until the connection goes)
        # Everything else reads the whole request body (counting it, holding at most 1 KiB).
        size, kept = 0, b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                state.body_disconnected += 1
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if len(kept) < 1024:
                kept += chunk[: 1024 - len(kept)]
            more = message.get("more_body", False)
        if path == "/-/health":
            await answer(200, b'{"ok": true}')
        elif path == "/echo":
            payload = {
                "method": scope["method"],
                "path": path,
                "raw_path": scope.get("raw_path", b"").decode("latin-1"),
                "query": scope["query_string"].decode("latin-1"),
                "headers": [
                    [n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]
                ],
                "body_bytes": size,
                "body": kept.decode("latin-1"),
            }
            await answer(200, json.dumps(payload).encode())
        elif path == "/cookies":
            await answer(
                200,
                b"{}",
                [
                    (b"set-cookie", b"a=1; Path=/"),
                    (b"set-cookie", b"b=2; Path=/; HttpOnly"),
                    (b"set-cookie", b"sso=evil; Domain=localhost; Path=/"),
                    (b"set-cookie", b"sso2=evil; Domain=.LOCALHOST; Path=/"),
                    (b"set-cookie", b"own=ok; Domain=alpha.localhost; Path=/"),
                    (b"set-cookie", b"gateway_session=planted; Path=/"),
                ],
            )
        elif path == "/set-cookie":  # each ?c= becomes a Set-Cookie, as given
            cookies = parse_qs(scope["query_string"].decode()).get("c", [])
            await answer(200, b"{}", [(b"set-cookie", c.encode("latin-1")) for c in cookies])
        elif path == "/unsized":  # a body in two pieces, with no length: chunked upstream
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"first,", "more_body": True})
            await send({"type": "http.response.body", "body": b"second"})
        elif path == "/redirect":
            await answer(
                int(query.get("status", "302")),
                b"",
                [(b"location", query.get("to", "/echo?from=redirect").encode())],
            )
        elif path == "/head":
            await answer(200, b"h" * 1234, [(b"x-head", b"yes")])
        elif path == "/hop":
            await answer(
                200,
                b"{}",
                [
                    (b"connection", b"x-secret-hop, keep-alive"),
                    (b"x-secret-hop", b"1"),
                    (b"keep-alive", b"timeout=5"),
                    (b"proxy-authenticate", b"Basic"),
                    (b"x-kept", b"1"),
                ],
            )
        elif path == "/status":
            await answer(int(query.get("code", "200")), b'{"upstream": true}')
        elif path == "/gate":
            state.gated += 1
            await state.gate.wait()
            await answer(200, b'{"gate": "open"}')
        elif path == "/slow":
            state.slow_started += 1
            try:
                await asyncio.sleep(float(query.get("s", "1")))
            except asyncio.CancelledError:
                state.slow_disconnected += 1
                raise
            state.slow_finished += 1
            await answer(200, b'{"slow": true}')
        else:
            await answer(404, b'{"error": "no such path"}')

    return app


class UvicornUpstream:
    """A real uvicorn server (httptools) serving ``echo_app`` in the test's event loop."""

    def __init__(self) -> None:
        self.state = UpstreamState()
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> Address:
        return ("127.0.0.1", self.port)

    async def start(self, sock: socket.socket | None = None) -> UvicornUpstream:
        """On a fresh port, or on a port the test holds (``ClosedPort``, ``take_port``)."""
        if sock is None:
            sock = free_socket()
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(
            uvicorn.Config(
                echo_app(self.state),
                lifespan="on",
                log_level="error",
                access_log=False,
                loop="none",
                http="httptools",
                proxy_headers=False,
                timeout_graceful_shutdown=1,  # a test may leave a /slow request behind
            )
        )
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        return self

    async def close(self) -> None:
        if self._server is not None and self._task is not None:
            server, self._server = self._server, None
            await stop_server(server, self._task, 10)


async def start_protocol_server(
    app: Callable[..., Awaitable[None]], log_level: str = "critical", **options: Any
) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    """``app`` under uvicorn with GatewayHttpProtocol on a random loopback port (``options``:
    more ``uvicorn.Config`` settings).

    Returns the server, its task and the port; stop it with ``server.should_exit = True`` and
    await the task.
    """
    sock = free_socket()
    config = uvicorn.Config(
        app, lifespan="off", log_level=log_level, loop="none", http=GatewayHttpProtocol, **options
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return server, task, sock.getsockname()[1]


# -- a gateway in front of them ------------------------------------------------------------------
class TeamTokens(httpx.Auth):
    """Send each team's API token to that team's host (the gateway checks auth first)."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = tokens

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.tokens.get(request.url.host.split(".")[0])
        if token and "authorization" not in request.headers:
            request.headers["authorization"] = f"Bearer {token}"
        yield request


@dataclass
class Proxied(Running):
    """A running gateway whose ``client()`` is signed in to every team it fronts."""

    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        kwargs.setdefault("auth", TeamTokens(self.tokens))
        kwargs.setdefault("timeout", 30)
        return httpx.AsyncClient(transport=LoopbackTransport(), **kwargs)


def grant_token(store: Store, team: str) -> str:
    """A member's API token for ``team`` (through the auth module's own API)."""
    from gateway.auth.accounts import add_member, create_user
    from gateway.auth.tokens import Tokens

    user = create_user(store, f"tests@{team}.example.org", "not-a-real-hash")
    add_member(store, team, user.id, "owner")
    return Tokens(store).create(team, user.id, "tests")


async def gateway_for(
    start_gateway: StartGateway,
    config: Config,
    teams: dict[str, list[Address]],
    *,
    wait: bool = True,
) -> Proxied:
    """Start a gateway whose team ``slug`` has one target per address, in that order."""
    store = open_store(config.control_db)
    tokens: dict[str, str] = {}
    try:
        for slug, addresses in teams.items():
            store.create_team(slug)
            for _ in addresses:
                store.add_instance(slug, "static")
            tokens[slug] = grant_token(store, slug)
    finally:
        store.close()
    gw = await start_gateway(config, runtime=StaticRuntime(teams), teams=())
    proxied = Proxied(gw.app, gw.port, gw.config, tokens)
    if wait:
        for slug in teams:
            await proxied.wait_healthy(slug)
    return proxied


async def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll until ``predicate()`` holds (generous: the machine is shared)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def raw_request(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes to the gateway and read until it closes or a full answer arrives."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        out = b""
        async with asyncio.timeout(timeout):
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                out += chunk
                head, sep, body = out.partition(b"\r\n\r\n")
                if sep:
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length" and len(body) >= int(value):
                            return out
        return out
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def status_line(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])
