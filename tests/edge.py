"""Start the gateway exactly as ``gateway serve`` wires it (public + redirect + admin listeners,
``gateway.server.build_listeners``), inside the test's event loop, on loopback sockets it
binds on port 0."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.admin.discovery import find_admin
from gateway.app import Gateway, create_app
from gateway.config import Config
from gateway.listeners import run_listeners
from gateway.lock import hold_running_lock
from gateway.restart import Sockets
from gateway.server import build_listeners
from tests.listen_fds import listening_socket, port_of
from tests.shutdown import stop_server


class PinnedTransport(httpx.AsyncHTTPTransport):
    """Connect to 127.0.0.1 whatever the URL's host, but keep that host for the Host header,
    TLS SNI and certificate verification (Python does not resolve *.example.test)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        request.url = request.url.copy_with(host="127.0.0.1")
        request.extensions = {**request.extensions, "sni_hostname": host}
        return await super().handle_async_request(request)


@dataclass
class Edge:
    app: Gateway
    config: Config
    admin_url: str
    token: str

    def url(self, team: str | None = None, path: str = "/", scheme: str | None = None) -> str:
        host = f"{team}.{self.config.domain}" if team else self.config.domain
        scheme = scheme or ("https" if self.config.tls else "http")
        return f"{scheme}://{host}:{self.config.port}{path}"

    def client(self, verify: ssl.SSLContext | bool = True, **kw: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=PinnedTransport(verify=verify), timeout=30, **kw)

    def admin(self, token: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.admin_url,
            headers={"authorization": f"Bearer {token or self.token}"},
            timeout=60,
        )

    async def wait_healthy(self, team: str, timeout: float = 60) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            service = self.app.fleet.service(team)
            if service is not None and service.state() == "up":
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"team {team} did not become healthy in {timeout}s")


@contextlib.asynccontextmanager
async def run_edge(
    config: Config, teams: tuple[str, ...] = (), redirect: bool = False
) -> AsyncIterator[Edge]:
    """``redirect``: a plain-HTTP redirect listener too (TLS configs only)."""
    # Sockets bound here on port 0 and handed over as a restarting gateway hands them over:
    # the config names the ports they got, and nothing can take them in between.
    sockets = Sockets()
    sockets.inherited["public"] = listening_socket()
    config = config.replace(port=port_of(sockets.inherited["public"]), admin_port=0)
    if redirect:
        sockets.inherited["redirect"] = listening_socket()
        config = config.replace(redirect_port=port_of(sockets.inherited["redirect"]))
    app = create_app(config)
    for slug in teams:
        app.store.create_team(slug)
        # Public (read-only for anyone): these tests are about the edge, not about sign-in.
        with app.store.transaction() as conn:
            conn.execute("UPDATE teams SET public = 1 WHERE slug = ?", [slug])
    main, public, aux = build_listeners(app, config, sockets)
    lock = hold_running_lock(config.data_dir)  # as `gateway serve`: the CLI sees it running
    lock.__enter__()
    task = asyncio.ensure_future(run_listeners(main, public, aux))
    try:
        while not (main.started and all(server.started for server, _ in aux)):
            if task.done():
                task.result()
                raise AssertionError("the gateway stopped during startup")
            await asyncio.sleep(0.01)
        found = find_admin(config)
        assert found is not None
        yield Edge(app, config, found.url, found.token)
    finally:
        try:
            await stop_server(main, task, 30)
        finally:
            lock.__exit__(None, None, None)
