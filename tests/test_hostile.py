"""A hostile-client battery: raw sockets against a real gateway (two teams, real uvicorn
upstreams), served exactly as ``gateway serve`` serves it (``gateway.server.uvicorn_config``,
so the listener limits of gateway/limits.py apply). docs/reliability.md "hostile clients"
lists each case and the gateway's answer.

The deadlines are short here (``HEADER_TIMEOUT``, ``BODY_IDLE_TIMEOUT``); every wait for an
answer is bounded by a generous ``WAIT`` so a gateway that never answers fails the test
instead of hanging it. No test asserts an upper bound on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
import uvicorn

from gateway.app import create_app
from gateway.config import Config
from gateway.limits import ListenerConfig, ListenerLimits
from gateway.runtimes.base import Runtime
from gateway.server import uvicorn_config
from tests.conftest import Running, free_socket
from tests.servers import Proxied, UvicornUpstream, gateway_for, wait_for

HEADER_TIMEOUT = 1.0
BODY_IDLE_TIMEOUT = 1.0
WAIT = 15.0  # the longest any answer may take before the test fails (a loaded machine)
IDLE_OK = 60.0  # header_timeout where a test holds connections open before it uses them
TEAMS = ("alpha", "beta")


@dataclass
class Edge:
    gw: Proxied
    upstreams: dict[str, UvicornUpstream]
    limits: ListenerLimits  # the listener's live connection counts
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def open_connections(self) -> int:
        return self.limits.open

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A raw connection, closed by the fixture at the end of the test."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers.append(writer)
        return reader, writer

    @property
    def port(self) -> int:
        return self.gw.port

    def head(
        self, team: str, target: str = "/echo", extra: str = "", version: str = "1.1"
    ) -> bytes:
        """A signed-in request head for ``team`` (no body unless ``extra`` says so)."""
        return (
            f"GET {target} HTTP/{version}\r\nHost: {team}.localhost\r\n"
            f"Authorization: Bearer {self.gw.tokens[team]}\r\n{extra}\r\n"
        ).encode()


StartEdge = Callable[..., Awaitable[Edge]]


@pytest.fixture
async def start_edge(config: Config) -> AsyncIterator[StartEdge]:
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []
    upstreams: list[UvicornUpstream] = []
    limits: dict[int, ListenerLimits] = {}
    edges: list[Edge] = []

    async def serve(
        config: Config, runtime: Runtime | None = None, teams: tuple[str, ...] = ()
    ) -> Running:
        sock = free_socket()
        config = config.replace(port=sock.getsockname()[1])
        app = create_app(config, runtime=runtime)
        listener = uvicorn_config(app, config)  # the production listener
        assert isinstance(listener, ListenerConfig)
        limits[config.port] = listener.limits
        server = uvicorn.Server(listener)
        task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        servers.append((server, task))
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        return Running(app, config.port, config)

    async def start(**settings: Any) -> Edge:
        ups = {team: await UvicornUpstream().start() for team in TEAMS}
        upstreams.extend(ups.values())
        settings = {
            "header_timeout": HEADER_TIMEOUT,
            "body_idle_timeout": BODY_IDLE_TIMEOUT,
            "log_level": "warning",
            **settings,
        }
        gw = await gateway_for(
            serve, config.replace(**settings), {t: [u.address] for t, u in ups.items()}
        )
        edges.append(Edge(gw, ups, limits[gw.port]))
        return edges[-1]

    yield start
    for writer in [w for e in edges for w in e.writers]:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    for server, task in servers:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
    for upstream in upstreams:
        await upstream.close()


@pytest.fixture
async def edge(start_edge: StartEdge) -> Edge:
    return await start_edge()


# -- raw-socket helpers -------------------------------------------------------------------------
async def read_until_closed(reader: asyncio.StreamReader, timeout: float = WAIT) -> bytes:
    out = b""
    async with asyncio.timeout(timeout):
        while chunk := await reader.read(65536):
            out += chunk
    return out


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One response with a Content-Length: (head, body)."""
    async with asyncio.timeout(WAIT):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(header(head, b"content-length") or b"0")
        return head, await reader.readexactly(length)


def header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


async def send_while_open(writer: asyncio.StreamWriter, pieces: Any, pause: float = 0.0) -> int:
    """Send ``pieces`` until the gateway stops reading; returns the bytes sent."""
    sent = 0
    with contextlib.suppress(ConnectionError):
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            sent += len(piece)
            if pause:
                await asyncio.sleep(pause)
    return sent


# -- limits while parsing ----------------------------------------------------------------------
async def test_a_request_target_over_max_request_line_gets_414(edge: Edge) -> None:
    reader, writer = await edge.connect()
    writer.write(edge.head("alpha", "/" + "a" * 8192))
    raw = await read_until_closed(reader)
    assert status(raw) == 414
    assert b"connection: close" in raw


async def test_a_4_mib_target_is_refused_at_the_limit(edge: Edge) -> None:
    reader, writer = await edge.connect()
    sender = asyncio.ensure_future(
        send_while_open(writer, [b"GET /"] + [b"a" * 65536] * 64 + [b" HTTP/1.1\r\n\r\n"])
    )
    raw = await read_until_closed(reader)
    await asyncio.wait_for(sender, WAIT)
    writer.close()
    assert status(raw) == 414


async def test_a_header_block_over_max_header_bytes_gets_431(edge: Edge) -> None:
    reader, writer = await edge.connect()
    writer.write(edge.head("alpha", extra="X-Big: " + "b" * 40_000 + "\r\n"))
    raw = await read_until_closed(reader)
    assert status(raw) == 431


async def test_an_unterminated_8_mib_header_is_refused_before_it_is_held(edge: Edge) -> None:
    reader, writer = await edge.connect()
    start = b"GET / HTTP/1.1\r\nHost: alpha.localhost\r\nX-Big: "
    sender = asyncio.ensure_future(send_while_open(writer, [start] + [b"v" * 65536] * 128))
    raw = await read_until_closed(reader)
    await asyncio.wait_for(sender, WAIT)
    writer.close()
    assert status(raw) == 431


async def test_more_than_max_headers_gets_431_and_max_headers_is_served(edge: Edge) -> None:
    # The gateway's own request has 2 headers (Host, Authorization); 98 more make 100.
    fill = "".join(f"X-H{i}: {i}\r\n" for i in range(98))
    reader, writer = await edge.connect()
    writer.write(edge.head("alpha", extra=fill))
    head, _ = await read_response(reader)
    assert status(head) == 200
    writer.write(edge.head("alpha", extra=fill + "X-One-Too-Many: 1\r\n"))
    raw = await read_until_closed(reader)
    assert status(raw) == 431


async def test_a_header_trickled_line_by_line_past_max_headers_gets_431(edge: Edge) -> None:
    reader, writer = await edge.connect()
    lines = [b"GET / HTTP/1.1\r\nHost: alpha.localhost\r\n"] + [
        b"X-H%d: 1\r\n" % i for i in range(200)
    ]
    sender = asyncio.ensure_future(send_while_open(writer, lines, pause=0.001))
    raw = await read_until_closed(reader)
    await asyncio.wait_for(sender, WAIT)
    assert status(raw) == 431


# -- deadlines ---------------------------------------------------------------------------------
async def test_a_head_that_never_completes_gets_408(edge: Edge) -> None:
    reader, writer = await edge.connect()
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer.write(b"GET / HTTP/1.1\r\n")
    raw = await read_until_closed(reader)
    assert status(raw) == 408
    assert loop.time() - started >= HEADER_TIMEOUT * 0.9


async def test_a_head_trickled_a_byte_at_a_time_gets_408(edge: Edge) -> None:
    reader, writer = await edge.connect()
    trickle = [b"GET / HTTP/1.1\r\nHost: alpha.localhost\r\nX-Slow: "] + [b"a"] * 10_000
    sender = asyncio.ensure_future(send_while_open(writer, trickle, pause=0.1))
    raw = await read_until_closed(reader)
    sender.cancel()
    assert status(raw) == 408


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer(edge: Edge) -> None:
    reader, writer = await edge.connect()
    assert await read_until_closed(reader) == b""
    writer.close()


async def test_a_stalled_body_gets_408_and_the_upstream_exchange_is_aborted(edge: Edge) -> None:
    upstream = edge.upstreams["alpha"].state
    reader, writer = await edge.connect()
    # Past the 64 KiB replay buffer: the proxy is already streaming it to the upstream.
    writer.write(
        edge.head("alpha", extra="Content-Length: 1048576\r\n").replace(b"GET", b"POST", 1)
        + b"x" * 200_000
    )
    raw = await read_until_closed(reader)
    assert status(raw) == 408
    await wait_for(lambda: upstream.body_disconnected == 1)


async def test_a_slow_body_that_keeps_moving_is_served(edge: Edge) -> None:
    """An idle deadline, not a total one: 5 pieces, each inside the idle time, span more."""
    reader, writer = await edge.connect()
    writer.write(edge.head("alpha", extra="Content-Length: 5000\r\n").replace(b"GET", b"POST", 1))
    await send_while_open(writer, [b"y" * 1000] * 5, pause=BODY_IDLE_TIMEOUT / 2)
    head, body = await read_response(reader)
    assert status(head) == 200
    assert json.loads(body)["body_bytes"] == 5000


async def test_a_body_that_ends_after_an_early_answer_leaves_the_idle_deadline(
    edge: Edge,
) -> None:
    reader, writer = await edge.connect()
    # No credentials: the gateway sends it to sign in before it reads the body.
    writer.write(b"POST /echo HTTP/1.1\r\nHost: alpha.localhost\r\nContent-Length: 10\r\n\r\n12345")
    head, _ = await read_response(reader)
    assert status(head) == 303
    writer.write(b"67890")  # the body ends after its answer: the connection is idle now
    assert await read_until_closed(reader) == b""  # closed by the keep-alive deadline


# -- Upgrade -----------------------------------------------------------------------------------
async def test_an_upgrade_is_refused_and_the_request_after_it_is_answered(edge: Edge) -> None:
    reader, writer = await edge.connect()
    writer.write(
        edge.head("alpha", "/ws", extra="Connection: Upgrade\r\nUpgrade: websocket\r\n")
        + edge.head("alpha", "/echo?after=upgrade")
    )
    head, body = await read_response(reader)
    assert status(head) == 400
    assert b"WebSocket" in body
    head, body = await read_response(reader)
    assert status(head) == 200
    assert json.loads(body)["query"] == "after=upgrade"
    writer.close()


async def test_an_upgrade_with_a_body_is_refused_at_once_and_closed(edge: Edge) -> None:
    reader, writer = await edge.connect()
    writer.write(
        edge.head(
            "alpha",
            "/echo",
            extra="Connection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 3\r\n",
        ).replace(b"GET", b"POST", 1)
        + b"abc"
        + edge.head("alpha")
    )
    raw = await read_until_closed(reader)
    assert status(raw) == 400
    assert b"connection: close" in raw
    assert raw.count(b"HTTP/1.1") == 1  # the body was never taken for a request


# -- HTTP/1.0 ----------------------------------------------------------------------------------
async def test_http10_keep_alive_is_honoured(edge: Edge) -> None:
    reader, writer = await edge.connect()
    for i in range(3):
        writer.write(edge.head("alpha", f"/echo?n={i}", "Connection: keep-alive\r\n", "1.0"))
        head, body = await read_response(reader)
        assert status(head) == 200
        assert header(head, b"connection") == b"keep-alive"
        assert json.loads(body)["query"] == f"n={i}"
    writer.close()


async def test_http10_never_gets_chunked_encoding(edge: Edge) -> None:
    reader, writer = await edge.connect()
    writer.write(edge.head("alpha", "/unsized", "Connection: keep-alive\r\n", "1.0"))
    raw = await read_until_closed(reader)  # close-delimited: the close ends the body
    head, _, body = raw.partition(b"\r\n\r\n")
    assert status(head) == 200
    assert header(head, b"transfer-encoding") is None
    assert header(head, b"connection") == b"close"
    assert body == b"first,second"


async def test_http11_without_a_length_is_still_chunked(edge: Edge) -> None:
    reader, writer = await edge.connect()
    writer.write(edge.head("alpha", "/unsized", "Connection: close\r\n"))
    raw = await read_until_closed(reader)
    assert header(raw.partition(b"\r\n\r\n")[0], b"transfer-encoding") == b"chunked"


# -- Set-Cookie from a team --------------------------------------------------------------------
PLANTED = [
    "gateway_session =X; Path=/",
    "gateway_session\t=X; Path=/",
    "__Secure-gateway_session =X; Path=/; Secure",
    "__Host-gateway_session=X; Path=/; Secure",
    "a=1; Domain =localhost; Path=/",
    "a=2; Domain\t=localhost; Path=/",
    "a=3; DOMAIN=.LocalHost; Path=/",
]


async def test_no_planted_cookie_variant_reaches_the_client(edge: Edge) -> None:
    query = "&".join("c=" + quote(c) for c in [*PLANTED, "own=ok; Path=/"])
    reader, writer = await edge.connect()
    writer.write(edge.head("alpha", "/set-cookie?" + query))
    head, _ = await read_response(reader)
    cookies = [
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"set-cookie:")
    ]
    assert cookies == [b"own=ok; Path=/"]
    writer.close()


@pytest.mark.browser
async def test_chromium_stores_none_of_the_planted_cookies(start_edge: StartEdge) -> None:
    """The issue's report: a real Chromium stored ``gateway_session`` for the apex from a
    team's response. A registrable domain (see tests/test_auth_browser.py) and a public team."""
    from playwright.async_api import async_playwright

    from gateway.auth.accounts import set_public
    from tests.test_auth_browser import chromium

    edge = await start_edge(domain="gateway.test")
    set_public(edge.gw.app.store, "alpha", True)
    edge.gw.app.auth.changed()
    planted = [
        c.replace("localhost", "gateway.test").replace("LocalHost", "Gateway.Test") for c in PLANTED
    ]
    query = "&".join("c=" + quote(c) for c in [*planted, "own=ok; Path=/"])
    rules = "--host-resolver-rules=MAP *.gateway.test 127.0.0.1"
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", rules])
        page = await browser.new_page()
        response = await page.goto(f"http://alpha.gateway.test:{edge.port}/set-cookie?{query}")
        assert response is not None and response.status == 200
        stored = {(c["name"], c["domain"]) for c in await page.context.cookies()}
        await browser.close()
    assert stored == {("own", "alpha.gateway.test")}  # the control: cookies are stored at all


# -- absolute-form targets ---------------------------------------------------------------------
async def test_an_absolute_form_target_routes_by_its_authority(edge: Edge) -> None:
    reader, writer = await edge.connect()
    writer.write(
        f"GET http://beta.localhost:{edge.port}/echo?x=1 HTTP/1.1\r\nHost: alpha.localhost\r\n"
        f"Authorization: Bearer {edge.gw.tokens['beta']}\r\n\r\n".encode()
    )
    head, body = await read_response(reader)
    assert status(head) == 200
    echoed = json.loads(body)
    assert dict(echoed["headers"])["host"] == f"beta.localhost:{edge.port}"
    assert echoed["raw_path"] == "/echo" and echoed["query"] == "x=1"
    assert edge.upstreams["beta"].state.paths == ["/echo"]
    assert edge.upstreams["alpha"].state.paths == []
    writer.close()


async def test_an_absolute_form_target_of_another_scheme_gets_400(edge: Edge) -> None:
    reader, writer = await edge.connect()
    writer.write(b"GET ftp://alpha.localhost/ HTTP/1.1\r\nHost: alpha.localhost\r\n\r\n")
    assert status(await read_until_closed(reader)) == 400


# -- connection caps ---------------------------------------------------------------------------
async def test_connections_over_the_per_ip_cap_are_closed_and_the_others_served(
    start_edge: StartEdge,
) -> None:
    edge = await start_edge(max_connections_per_ip=4, header_timeout=IDLE_OK)
    held = [await edge.connect() for _ in range(4)]
    await wait_for(lambda: edge.open_connections() == 4)
    reader, writer = await edge.connect()
    assert await read_until_closed(reader) == b""  # closed at once, nothing answered
    writer.close()
    for reader, writer in held:  # the others are untouched
        writer.write(edge.head("alpha"))
        head, _ = await read_response(reader)
        assert status(head) == 200
        writer.close()


async def test_the_global_cap_closes_excess_connections(start_edge: StartEdge) -> None:
    edge = await start_edge(max_connections=3, header_timeout=IDLE_OK)
    held = [await edge.connect() for _ in range(3)]
    await wait_for(lambda: edge.open_connections() == 3)
    reader, writer = await edge.connect()
    assert await read_until_closed(reader) == b""
    for _, held_writer in held:
        held_writer.close()
    await wait_for(
        lambda: edge.open_connections() == 0
    )  # released: a new connection is served again
    reader, writer = await edge.connect()
    writer.write(edge.head("alpha"))
    head, _ = await read_response(reader)
    assert status(head) == 200
    writer.close()


async def test_a_trusted_proxy_is_not_capped_as_one_client(start_edge: StartEdge) -> None:
    edge = await start_edge(
        max_connections_per_ip=2, trusted_proxies="127.0.0.1", header_timeout=IDLE_OK
    )
    conns = [await edge.connect() for _ in range(6)]
    for reader, writer in conns:
        writer.write(edge.head("alpha"))
        head, _ = await read_response(reader)
        assert status(head) == 200
        writer.close()


# -- the open-files limit ----------------------------------------------------------------------
def test_the_soft_open_files_limit_is_raised_to_the_hard_one() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 64:
        pytest.fail(f"this machine's hard open-files limit ({hard}) leaves nothing to raise")
    script = (
        "import resource\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))\n"
        "from gateway.limits import raise_fd_limit\n"
        "print(*raise_fd_limit())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=os.environ
    )
    assert out.stdout.split() == [str(hard), str(hard)]
