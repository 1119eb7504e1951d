"""Shared fixtures: a real gateway (uvicorn on a real socket) in the test's event loop.

Starting it in the test's own loop lets a test reach into the live objects (drain a target,
read counters) while real HTTP flows over loopback.
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn

from gateway.app import Gateway, create_app
from gateway.config import Config
from gateway.http.protocol import GatewayHttpProtocol
from gateway.runtimes.base import Runtime
from tests.docker_guard import pytest_runtest_setup  # noqa: F401 (the Docker guard hook)
from tests.shutdown import ShutdownFailed, stop_server

if TYPE_CHECKING:
    from tests.servers import UvicornUpstream  # tests.servers imports this module


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class Running:
    app: Gateway
    port: int
    config: Config

    def url(self, team: str | None = None, path: str = "/") -> str:
        host = f"{team}.{self.config.domain}" if team else self.config.domain
        return f"http://{host}:{self.port}{path}"

    def admin_headers(self) -> dict[str, str]:
        """The admin token: the apex status page and status.json are for operators only."""
        from gateway.admin.discovery import admin_token

        return {"authorization": f"Bearer {admin_token(self.config, self.app.store)}"}

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """A client that reaches the gateway on 127.0.0.1 whatever the Host."""
        kwargs.setdefault("timeout", 30)
        return httpx.AsyncClient(transport=LoopbackTransport(), **kwargs)

    async def wait_healthy(self, team: str, timeout: float = 30) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            service = self.app.fleet.service(team)
            if service is not None and service.state() == "up":
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"team {team} did not become healthy in {timeout}s")


class LoopbackTransport(httpx.AsyncHTTPTransport):
    """Send every request to 127.0.0.1, keeping the Host header of its URL.

    Python's resolver does not map *.localhost to loopback (browsers and curl do), so tests
    connect to 127.0.0.1 and let the Host header choose the team, as a real client would.
    """

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(host="127.0.0.1")
        return await super().handle_async_request(request)


StartGateway = Callable[..., Awaitable[Running]]


def xdist_group_of(item: pytest.Item) -> str | None:
    """The xdist group an item runs in under `--dist loadgroup` (the Makefile's PYTEST_XDIST):
    tests of one group run one at a time on one worker, beside the other worker's tests.

    The load proofs each drive the whole machine with a deploy or restart in the middle; the
    Docker tests share the engine, its tenant network and the image build cache; each Chromium
    test is a browser's worth of processes with 30 s page timeouts. Two of a kind at once only
    make them slower and their timeouts tighter.
    """
    path = Path(str(item.path))
    if path.parent.name == "load" and path.name.startswith("test_load_"):
        return "load"
    if item.get_closest_marker("docker") is not None:
        return "docker"
    if item.get_closest_marker("browser") is not None:
        return "browser"
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = xdist_group_of(item)
        if group is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture
def config(tmp_path: Path) -> Config:
    # domain "localhost": *.localhost resolves to loopback without any resolver tricks.
    return Config(
        data_dir=tmp_path / "data",
        domain="localhost",
        hold_timeout=5,
        health_interval=0.2,
        drain_timeout=5,
        watch_interval=0.05,
    )


async def serve_app(
    app: Gateway, sock: socket.socket, log_level: str = "warning"
) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """``app`` served on ``sock`` as `gateway serve` serves it, once it has started; stop it
    with tests/shutdown.py ``stop_server``."""
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            lifespan="on",
            log_level=log_level,
            access_log=False,
            loop="none",
            http=GatewayHttpProtocol,  # the production protocol, as in gateway/server.py
            # As in gateway/server.py: the gateway trusts forwarded headers itself, only
            # from configured proxies; uvicorn's default would trust them from 127.0.0.1.
            proxy_headers=False,
        )
    )
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return server, task


@pytest.fixture
async def start_gateway() -> AsyncIterator[StartGateway]:
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(
        config: Config, runtime: Runtime | None = None, teams: tuple[str, ...] = ()
    ) -> Running:
        sock = free_socket()
        port = sock.getsockname()[1]
        config = config.replace(port=port)
        app = create_app(config, runtime=runtime)
        for slug in teams:
            app.store.create_team(slug)
        server, task = await serve_app(app, sock)
        servers.append((server, task))
        return Running(app, port, config)

    yield start
    failures = []
    for server, task in servers:
        try:
            await stop_server(server, task, 30)
        except ShutdownFailed as exc:
            failures.append(exc)
    if failures:
        raise failures[0]


@pytest.fixture(scope="session")
def docker_image() -> str:
    """The tenant image, built once per run (.ci/run builds it first; then this only checks)."""
    from gateway.runtimes.docker import image

    # Each xdist worker (and any other checkout on this engine) asks: one builds at a time in
    # the shared build cache, the others then find the tag.
    cache = image.cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "tests-image-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        tag, _ = image.build(progress=lambda line: print(line, flush=True))
    return tag


@pytest.fixture
async def upstream() -> AsyncIterator[UvicornUpstream]:
    """A real uvicorn app standing in for a team's instance (echo, paths, status)."""
    from tests.servers import UvicornUpstream  # here: tests.servers imports this module

    server = await UvicornUpstream().start()
    yield server
    await server.close()
