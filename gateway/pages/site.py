"""The apex site: the front page, the operators' status page and status.json, and (from
gateway/auth and gateway/admin) sign-in, the dashboard and the operator dashboard."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from gateway.admin.access import Access, operator_access, refusal
from gateway.diskspace import no_space, out_of_space
from gateway.errors import for_status
from gateway.responses import APEX_LINKS, error_response

if TYPE_CHECKING:
    from gateway.auth.gatekeeper import Auth
    from gateway.config import Config
    from gateway.store import Store

HERE = Path(__file__).parent
# The same square as base.html's inline icon.
FAVICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    b'<rect width="16" height="16" rx="3" fill="#0969da"/></svg>'
)


def apex_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown path, wrong method, a form field over its size limit)
    answered as the gateway's: the product's page for people, JSON for API clients."""
    assert isinstance(exc, HTTPException)
    detail = str(exc.detail)
    if exc.status_code == 404:
        detail = f"There is no page at {request.url.path}."
    elif exc.status_code == 405:
        detail = f"This page does not take {request.method} requests."
    elif "exceeded maximum size" in detail:
        detail = (
            "A form field was far larger than any name, email or password can be "
            f"({detail.split('size of ')[-1].rstrip('.')} at most), so the form was refused. "
            "Check what was pasted into it and try again."
        )
    err = for_status(exc.status_code, detail)
    headers = {**(exc.headers or {}), "cache-control": "no-store"}
    return error_response(request.scope, err, APEX_LINKS, headers)


def build_site(
    config: Config,
    store: Store,
    auth: Auth,
    templates: Jinja2Templates,
    status: Callable[[], dict[str, Any]],
    mounted: Sequence[BaseRoute],
) -> Starlette:
    """``status``: the admin API's /api/status view (one place builds it); ``mounted``: the
    pages other parts serve on the apex (health, the operator dashboard, accounts, teams)."""

    async def home(request: Request) -> Response:
        session = auth.session_from_cookies(dict(request.cookies))
        if session is not None:
            return RedirectResponse("/dashboard", status_code=303)
        # The address a team really gets (scheme and port included), not an assumed https.
        example = config.team_url("TEAM").replace("TEAM", "<team>", 1) + "/"
        return templates.TemplateResponse(
            request, "home.html", {"domain": config.domain, "team_address": example}
        )

    # The status names every team and its addresses: operators only (gateway/admin/access.py).
    async def status_page(request: Request) -> Response:
        access = operator_access(config, store, auth, request)
        if access is not Access.OPERATOR:
            return refusal(access, request, auth, "the status page", page=True)
        return templates.TemplateResponse(request, "status.html", {"s": status()})

    async def status_json(request: Request) -> Response:
        access = operator_access(config, store, auth, request)
        if access is not Access.OPERATOR:
            return refusal(access, request, auth, "the status", page=False)
        return JSONResponse(status(), headers={"cache-control": "no-store"})

    async def favicon(request: Request) -> Response:
        # Pages without <link rel=icon> (error pages) make browsers ask; a 404 is a console error.
        return Response(
            FAVICON, media_type="image/svg+xml", headers={"cache-control": "max-age=86400"}
        )

    async def out_of_space_page(request: Request, exc: Exception) -> Response:
        """A write that failed for space (a session row, a form): 507 and a page, never 500."""
        if not out_of_space(exc):
            raise exc
        logging.getLogger("gateway").warning("out of storage space: %s", exc)
        err = no_space()
        headers = {"retry-after": str(err.retry_after), "cache-control": "no-store"}
        return error_response(request.scope, err, headers=headers)

    return Starlette(
        exception_handlers={
            OSError: out_of_space_page,
            sqlite3.Error: out_of_space_page,
            HTTPException: apex_error,
        },
        routes=[
            Route("/", home),
            Route("/-/gateway/status", status_page),
            Route("/-/gateway/status.json", status_json),
            Route("/favicon.ico", favicon),
            *mounted,
            Mount("/-/gateway/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ],
    )
