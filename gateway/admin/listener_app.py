"""The admin listener's ASGI app: token auth in front of the API, /metrics and the dashboard.

Auth: ``Authorization: Bearer <token>`` for everything. People use the dashboard through a
form that sets an HttpOnly, SameSite=Strict cookie derived from the token; that cookie is
accepted for GET only, so a cross-site form can never pause, drain or deploy anything.
``/livez`` and ``/readyz`` need no token: a load balancer probes them.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from gateway.admin.api import api_routes
from gateway.admin.cookie import COOKIE, cookie_value, login_redirect
from gateway.admin.dashboard import dashboard_routes
from gateway.errors import HTTPError, Unauthorized
from gateway.observability.probes import health_routes
from gateway.responses import error_response

if TYPE_CHECKING:
    from gateway.admin.parts import AdminParts

PUBLIC = ("/livez", "/readyz", "/login", "/static/")
_REALM = 'Bearer realm="gateway-admin"'
STATIC = Path(__file__).resolve().parent.parent / "pages" / "static"


class TokenAuth:
    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.bearer = f"Bearer {token}".encode()
        self.cookie = cookie_value(token).encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(PUBLIC):
            await self.app(scope, receive, send)
            return
        if self._allowed(scope):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "GET" and scope["path"] == "/":
            await RedirectResponse("/login", status_code=303)(scope, receive, send)
            return
        err = Unauthorized("send Authorization: Bearer <token> (see <data_dir>/admin.token)")
        response = error_response(scope, err, headers={"www-authenticate": _REALM})
        await response(scope, receive, send)

    def _allowed(self, scope: dict[str, Any]) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization" and hmac.compare_digest(value, self.bearer):
                return True
            if name == b"cookie" and scope["method"] in ("GET", "HEAD"):
                for part in value.split(b";"):
                    key, _, val = part.strip().partition(b"=")
                    if key == COOKIE.encode() and hmac.compare_digest(val, self.cookie):
                        return True
        return False


def build_admin_app(gw: AdminParts, token: str) -> TokenAuth:
    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPError)
        return error_response(request.scope, exc)

    app = Starlette(
        routes=[
            *health_routes(gw.fleet, gw.problem),
            *api_routes(gw),
            *dashboard_routes(gw, token),
            Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
        ],
        exception_handlers={HTTPError: http_error},
    )
    app.state.parts = gw  # what the /api handlers read (admin/api.py, backup/api.py...)
    return TokenAuth(app, token)


__all__ = ["COOKIE", "build_admin_app", "login_redirect"]
