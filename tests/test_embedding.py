"""The documented Python API for appliances: ``from gateway import create_app, Config``.

An appliance runs the gateway's ASGI app inside its OWN uvicorn server and event loop (here:
its own thread), wrapped in its own middleware, and may serve the admin API next to it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from gateway import Config, create_app
from gateway.admin import build_admin_app
from tests.listen_fds import listening_socket, port_of


class ApplianceHeader:
    """The appliance's own middleware around the gateway: proof the app composes."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def tagged(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-appliance", b"1")]
            await send(message)

        await self.app(scope, receive, tagged if scope["type"] == "http" else send)


def test_embedded_in_the_appliances_own_uvicorn(tmp_path: Path) -> None:
    # The appliance binds its own sockets (port 0, read back) and gives them to uvicorn.
    public_sock, admin_sock = listening_socket(), listening_socket()
    port, admin_port = port_of(public_sock), port_of(admin_sock)
    config = Config(domain="localhost", data_dir=tmp_path / "data", port=port, hold_timeout=30)
    gateway = create_app(config)
    gateway.store.create_team("alpha")
    db = sqlite3.connect(config.control_db)
    with db:  # public: this test is about embedding, not sign-in
        db.execute("UPDATE teams SET public = 1 WHERE slug = 'alpha'")
    db.close()
    token = "appliance-admin-token-0123456789"
    public = uvicorn.Server(
        uvicorn.Config(
            ApplianceHeader(gateway),
            host="127.0.0.1",
            port=port,
            lifespan="on",
            log_level="warning",
        )
    )
    admin = uvicorn.Server(
        uvicorn.Config(
            build_admin_app(gateway, token),
            host="127.0.0.1",
            port=admin_port,
            lifespan="off",
            log_level="warning",
        )
    )

    async def appliance_main() -> None:  # the appliance's own event loop
        await asyncio.gather(public.serve([public_sock]), admin.serve([admin_sock]))

    thread = threading.Thread(target=lambda: asyncio.run(appliance_main()), daemon=True)
    thread.start()
    try:
        with httpx.Client(timeout=30) as client:
            r = get_until_ok(client, f"http://127.0.0.1:{port}/-/versions.json", "alpha.localhost")
            assert "datasette" in r.json()
            assert r.headers["x-appliance"] == "1"
            status = client.get(
                f"http://127.0.0.1:{admin_port}/api/status",
                headers={"authorization": f"Bearer {token}"},
            )
            assert status.status_code == 200
            [team] = status.json()["teams"]
            assert team["slug"] == "alpha" and team["state"] == "up"
    finally:
        public.should_exit = admin.should_exit = True
        thread.join(60)
        public_sock.close()
        admin_sock.close()
    assert not thread.is_alive()
    # The lifespan stopped the team's Datasette with the appliance's server.
    assert gateway.fleet.instances
    assert all(str(t.state) == "stopped" for _, t in gateway.fleet.instances.values())


def get_until_ok(client: httpx.Client, url: str, host: str) -> httpx.Response:
    deadline = time.monotonic() + 90
    last: object = None
    while time.monotonic() < deadline:
        try:
            r = client.get(url, headers={"host": host})
            if r.status_code == 200:
                return r
            last = r.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"{host} never answered: {last}")
