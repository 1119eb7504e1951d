"""The operator dashboard: one page with every team, its targets, in-flight counts, recent
deploys and request-rate sparklines (inline SVG, no JavaScript). Served on the admin listener.
"""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING, Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from gateway.admin.access import Access, operator_access, refusal
from gateway.admin.api import recent, status_view
from gateway.admin.cookie import login_redirect

if TYPE_CHECKING:
    from gateway.admin.parts import AdminParts
    from gateway.auth.gatekeeper import Auth

APEX_PATH = "/-/gateway/ops"


def sparkline_svg(points: list[float], width: int = 240, height: int = 36) -> Markup:
    """Requests per second as a filled line; the label gives the latest value for readers."""
    top = max(points) if points and max(points) > 0 else 1.0
    step = width / max(len(points) - 1, 1)
    coords = [
        f"{i * step:.1f},{height - 2 - (p / top) * (height - 4):.1f}" for i, p in enumerate(points)
    ]
    line = " ".join(coords)
    area = f"0,{height} {line} {width},{height}"
    last = points[-1] if points else 0.0
    return Markup(
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{last:.2f} requests per second now, peak {top:.2f}">'
        f'<polygon points="{area}" fill="#ddf4ff"/>'
        f'<polyline points="{line}" fill="none" stroke="#0969da" stroke-width="1.5"/></svg>'
    )


def dashboard_data(gw: AdminParts) -> dict[str, Any]:
    now = time.monotonic()
    data = status_view(gw)
    for team in data["teams"]:
        points = gw.stats.sparkline(team["slug"], now)
        team["rate"] = points[-1] if points else 0.0
        team["spark"] = sparkline_svg(points)
        team["inflight"] = sum(t["inflight"] for t in team["targets"])
    data["deploys"] = recent(gw, "deploys", "id", 15)
    data["imports"] = recent(gw, "import_jobs", "rowid", 10)
    return data


def dashboard_routes(gw: AdminParts, token: str) -> list[Route]:
    templates = gw.templates

    async def dashboard(request: Request) -> Response:
        return templates.TemplateResponse(request, "ops_dashboard.html", {"s": dashboard_data(gw)})

    async def login(request: Request) -> Response:
        error = ""
        if request.method == "POST":
            form = await request.form()
            given = str(form.get("token", "")).strip()
            if hmac.compare_digest(given.encode(), token.encode()):
                return login_redirect(token, secure=request.url.scheme == "https")
            gw.stats.event("admin_login_failures")
            error = "That token is not right. It is in <data_dir>/admin.token."
        return templates.TemplateResponse(
            request, "ops_login.html", {"error": error}, status_code=401 if error else 200
        )

    return [Route("/", dashboard), Route("/login", login, methods=["GET", "POST"])]


def apex_ops_routes(gw: AdminParts, auth: Auth, templates: Jinja2Templates) -> list[Route]:
    """The same dashboard on the apex, for signed-in operators (gateway/auth/operators.py)."""

    async def apex_dashboard(request: Request) -> Response:
        access = operator_access(gw.config, gw.store, auth, request)
        if access is not Access.OPERATOR:
            return refusal(access, request, auth, "this page", page=True)
        return templates.TemplateResponse(
            request,
            "ops_dashboard.html",
            {"s": dashboard_data(gw), "static_prefix": "/-/gateway/static"},
            headers={"cache-control": "no-store"},
        )

    return [Route(APEX_PATH, apex_dashboard)]
