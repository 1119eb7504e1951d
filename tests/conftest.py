"""Shared fixtures: a real gateway (uvicorn on a real socket) in the test's event loop.

Starting it in the test's own loop lets a test reach into the live objects (drain a target,
read counters) while real HTTP flows over loopback.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from gateway.app import Gateway, create_app
from gateway.config import Config
from gateway.protocol import GatewayHttpProtocol
from gateway.runtimes.base import Runtime
from tests.docker_guard import pytest_runtest_setup  # noqa: F401 (the Docker guard hook)
from tests.shutdown import ShutdownFailed, stop_server


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
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                lifespan="on",
                log_level="warning",
                access_log=False,
                loop="none",
                http=GatewayHttpProtocol,  # the production protocol, as in gateway/server.py
                # As in gateway/server.py: the gateway trusts forwarded headers itself, only
                # from configured proxies; uvicorn's default would trust them from 127.0.0.1.
                proxy_headers=False,
            )
        )
        task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        servers.append((server, task))
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
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

    tag, _ = image.build(progress=lambda line: print(line, flush=True))
    return tag
