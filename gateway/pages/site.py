"""The apex site: status page and status.json (later: sign-in, dashboard)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from gateway.admin.dashboard import apex_ops_routes
from gateway.auth.pages import auth_routes
from gateway.observability.health import health_routes

if TYPE_CHECKING:
    from gateway.app import Gateway

HERE = Path(__file__).parent
# The same square as base.html's inline icon.
FAVICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    b'<rect width="16" height="16" rx="3" fill="#0969da"/></svg>'
)


def status_data(gw: Gateway) -> dict[str, Any]:
    teams = []
    for team in gw.store.teams():
        service = gw.fleet.service(team.slug)
        teams.append(
            {
                "slug": team.slug,
                "url": gw.config.team_url(team.slug) + "/",
                "state": service.state() if service else team.state,
                "targets": [t.snapshot() for t in service.targets()] if service else [],
            }
        )
    c = gw.counters
    drains = gw.fleet.drains
    return {
        "gateway_id": gw.gateway_id,
        "domain": gw.config.domain,
        "runtime": gw.config.runtime,
        "ready": gw.fleet.ready,
        "teams": teams,
        "counters": {
            "requests": c.requests,
            "retries": c.retries,
            "retry_skipped_body": c.retry_skipped_body,
            "retry_skipped_method": c.retry_skipped_method,
            "errors": dict(c.errors),
            "drains": len(drains),
            "drain_cancelled": sum(d.cancelled for d in drains),
        },
    }


def build_site(gw: Gateway) -> Starlette:
    templates = Jinja2Templates(directory=str(HERE / "templates"))

    async def status_page(request: Request) -> Response:
        return templates.TemplateResponse(request, "status.html", {"s": status_data(gw)})

    async def status_json(request: Request) -> Response:
        return JSONResponse(status_data(gw))

    async def favicon(request: Request) -> Response:
        # Pages without <link rel=icon> (error pages) make browsers ask; a 404 is a console error.
        return Response(
            FAVICON, media_type="image/svg+xml", headers={"cache-control": "max-age=86400"}
        )

    return Starlette(
        routes=[
            Route("/", status_page),
            Route("/-/gateway/status.json", status_json),
            Route("/favicon.ico", favicon),
            *health_routes(gw, "/-/gateway"),
            *apex_ops_routes(gw),  # the operator dashboard, for `operators` (gateway/admin)
            *auth_routes(gw, templates),  # register, login, dashboard, teams (gateway/auth)
            Mount("/-/gateway/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ]
    )
