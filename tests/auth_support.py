"""Helpers for the auth tests: a cookie-keeping "browser", users, and a real SMTP server.

``Browser`` keeps cookies itself, with the browser's Domain rules (a ``Domain=localhost``
cookie goes to ``localhost`` and every ``*.localhost``; a host-only cookie to its host only),
because Python's cookiejar treats ``localhost`` specially. It sends ``Origin`` like a browser
does on form posts, and fetches each form's CSRF token from the page first.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from aiosmtpd.controller import Controller

from gateway.auth import accounts
from gateway.auth.passwords import Passwords
from gateway.config import Config
from tests.conftest import LoopbackTransport, Running, StartGateway
from tests.servers import UvicornUpstream, gateway_for

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PASSWORD = "correct horse battery staple"
_hasher = Passwords()


def make_user(gw: Running, email: str, teams: dict[str, str], password: str = PASSWORD) -> str:
    """A user (through the auth module's own API) who belongs to ``teams`` {slug: role}."""
    user = accounts.create_user(gw.app.store, email, _hasher.hash_sync(password))
    for slug, role in teams.items():
        accounts.add_member(gw.app.store, slug, user.id, role)
    gw.app.auth.changed()
    return user.id


@dataclass
class Browser:
    gw: Running
    cookies: dict[tuple[str, str], str] = field(default_factory=dict)  # (name, scope) -> value
    # False: keep Domain=localhost cookies host-only, as Chromium does (docs/auth.md).
    domain_cookies: bool = True

    def __post_init__(self) -> None:
        # A plain client: never the API-token client some gateway fixtures hand out.
        self.client = httpx.AsyncClient(transport=LoopbackTransport(), timeout=30)

    @property
    def origin(self) -> str:
        return self.gw.url(None, "").rstrip("/")

    def _cookie_header(self, host: str) -> str:
        out = []
        for (name, scope), value in self.cookies.items():
            if scope.startswith("."):
                domain = scope[1:]
                if host != domain and not host.endswith("." + domain):
                    continue
            elif scope != host:
                continue
            out.append(f"{name}={value}")
        return "; ".join(out)

    def cookie(self, name: str) -> str | None:
        for (n, _), value in self.cookies.items():
            if n == name:
                return value
        return None

    async def request(
        self, method: str, url: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        host = urlsplit(url).hostname or ""
        sent = dict(headers or {})
        jar = self._cookie_header(host)
        if jar and "cookie" not in {k.lower() for k in sent}:
            sent["cookie"] = jar
        self.client.cookies.clear()
        response = await self.client.request(method, url, headers=sent, **kwargs)
        for raw in response.headers.get_list("set-cookie"):
            parsed: SimpleCookie = SimpleCookie()
            parsed.load(raw)
            for name, morsel in parsed.items():
                domain = morsel["domain"] if self.domain_cookies else ""
                scope = "." + domain.lstrip(".") if domain else host
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop((name, scope), None)
                else:
                    self.cookies[(name, scope)] = morsel.value
        return response

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def token(self, page: str = "/login") -> str:
        r = await self.get(self.gw.url(None, page))
        match = CSRF.search(r.text)
        assert match, f"no CSRF token on {page}: {r.status_code} {r.text[:200]}"
        return match.group(1)

    async def post(
        self,
        path: str,
        data: dict[str, str],
        *,
        page: str | None = None,
        origin: str | None = "same",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST a form like a browser: CSRF token from ``page`` (default: ``path``), Origin."""
        fields = dict(data)
        if "csrf_token" not in fields:
            fields["csrf_token"] = await self.token(page or path)
        sent = dict(headers or {})
        if origin == "same":
            sent["origin"] = self.origin
        elif origin is not None:
            sent["origin"] = origin
        return await self.request("POST", self.gw.url(None, path), headers=sent, data=fields)

    async def login(
        self, email: str, password: str = PASSWORD, next_url: str = "", remember: bool = False
    ) -> httpx.Response:
        data = {"email": email, "password": password, "next": next_url}
        if remember:
            data["remember"] = "on"
        return await self.post("/login", data)

    async def close(self) -> None:
        await self.client.aclose()


class _BoundController(Controller):
    """aiosmtpd's threaded server on a socket bound here on port 0. Its own ``Controller``
    binds a port it is given, which would have to be probed free first and could be taken by
    another process before it binds."""

    def __init__(self, handler: Any, sock: socket.socket) -> None:
        super().__init__(handler, hostname="127.0.0.1", port=sock.getsockname()[1])
        self._sock = sock

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._sock)


class Mailbox:
    """A real SMTP server (aiosmtpd) on a loopback port; ``messages`` holds what it got."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.event = threading.Event()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        self.port = int(sock.getsockname()[1])
        self.controller = _BoundController(self, sock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content.decode("utf-8", "replace"))
        self.event.set()
        return "250 Message accepted for delivery"

    def __enter__(self) -> Mailbox:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


@pytest.fixture
async def browsers() -> AsyncIterator[Callable[[Running], Browser]]:
    """``browsers(gw)`` makes a Browser that is closed after the test, pass or fail."""
    made: list[Browser] = []

    def make(gw: Running) -> Browser:
        made.append(Browser(gw))
        return made[-1]

    yield make
    for b in made:
        await b.close()


async def two_teams(
    start_gateway: StartGateway, config: Config, up: UvicornUpstream, owners: dict[str, str]
) -> Running:
    """A gateway with teams alpha and beta on the echo server ``up``; ``owners``: email ->
    the team that user owns."""
    gw = await gateway_for(start_gateway, config, {"alpha": [up.address], "beta": [up.address]})
    for email, team in owners.items():
        make_user(gw, email, {team: "owner"})
    return gw


@pytest.fixture
async def site(
    request: pytest.FixtureRequest,
    config: Config,
    start_gateway: StartGateway,
    upstream: UvicornUpstream,
) -> Running:
    """``two_teams`` with the test module's ``OWNERS``."""
    return await two_teams(start_gateway, config, upstream, request.module.OWNERS)
