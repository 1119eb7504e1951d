"""Shared plumbing of the apex account pages: who is asking, CSRF, rendering, errors.

Every page answers ``Cache-Control: no-store`` and refuses framing; every unsafe method
passes ``csrf.check`` before a form field is read.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from gateway.auth import csrf
from gateway.auth.accounts import AccountError
from gateway.auth.redirects import safe_next
from gateway.auth.sessions import Session
from gateway.auth.throttle import client_ip
from gateway.errors import BadRequest, Forbidden, HTTPError
from gateway.responses import APEX_LINKS, error_response

if TYPE_CHECKING:
    from gateway.auth.gatekeeper import Auth
    from gateway.config import Config
    from gateway.fleet import Fleet
    from gateway.store import Store
    from gateway.upload import UploadApp

Handler = Callable[[Request], Awaitable[Response]]
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


class Web:
    def __init__(
        self,
        auth: Auth,
        config: Config,
        store: Store,
        fleet: Fleet,
        upload: UploadApp,
        templates: Jinja2Templates,
    ) -> None:
        # What the account and team pages use, handed in by the composition root (app.py).
        self.auth = auth
        self.config = config
        self.store = store
        self.fleet = fleet
        self.upload = upload
        self.templates = templates
        self.origin = csrf.origin_of(config.base_url)
        # form-action also governs where a form's *redirect* may go: sign-in continues to
        # the team subdomains, so they are allowed too (Chromium blocks it otherwise).
        scheme, _, rest = self.origin.partition("://")
        self.headers = {
            **SECURITY_HEADERS,
            "Content-Security-Policy": (
                f"frame-ancestors 'none'; form-action 'self' {scheme}://*.{rest}"
            ),
        }

    # -- who ----------------------------------------------------------------------------------
    def session(self, request: Request) -> Session | None:
        return self.auth.session_from_cookies(request.cookies)

    def ip(self, request: Request) -> str:
        return client_ip(dict(request.scope), self.config.trusted_proxy_set)

    def may_visit(self, session: Session | None) -> Callable[[str], bool]:
        teams = session.teams if session else {}
        return lambda slug: slug in teams or self.auth.is_public(slug)

    def next_url(self, raw: str | None, session: Session | None) -> str:
        cfg = self.config
        return safe_next(raw, cfg.base_url, cfg.domain, self.may_visit(session))

    # -- CSRF ---------------------------------------------------------------------------------
    def _binding(self, request: Request, session: Session | None) -> str:
        if session is not None:
            return session.id_hash
        return request.cookies.get(csrf.ANON_COOKIE, "")

    async def form(self, request: Request, session: Session | None) -> FormData:
        """Read a POSTed form, after all three CSRF checks pass (else 403)."""
        form = await request.form(max_files=0, max_fields=20, max_part_size=64 * 1024)
        token = form.get("csrf_token")
        why = csrf.check(
            self.auth.signers["csrf"],
            self._binding(request, session),
            token if isinstance(token, str) else "",
            request.headers.get("origin"),
            request.headers.get("sec-fetch-site"),
            self.origin,
        )
        if why:
            raise Forbidden(f"This form could not be accepted: {why}.")
        return form

    # -- responses ----------------------------------------------------------------------------
    def render(
        self,
        request: Request,
        name: str,
        context: dict[str, Any],
        session: Session | None,
        status: int = 200,
    ) -> Response:
        anon_cookie = None
        binding = self._binding(request, session)
        if not binding:
            binding = anon_cookie = secrets.token_urlsafe(24)
        ctx = {
            "user": session,
            "csrf_token": csrf.make_token(self.auth.signers["csrf"], binding),
            "base_url": self.config.base_url,
            **context,
        }
        response = self.templates.TemplateResponse(request, name, ctx, status_code=status)
        response.headers.update(self.headers)
        if anon_cookie is not None:
            response.set_cookie(
                csrf.ANON_COOKIE,
                anon_cookie,
                httponly=True,
                samesite="lax",
                secure=self.auth.secure,
                max_age=csrf.MAX_AGE,
            )
        return response

    def redirect(self, url: str, cookie: str | None = None) -> Response:
        response = RedirectResponse(url, status_code=303)
        response.headers.update(self.headers)
        if cookie is not None:
            response.headers.append("set-cookie", cookie)
        return response

    def error(self, request: Request, err: HTTPError) -> Response:
        headers = dict(self.headers)
        if err.retry_after is not None:
            headers["Retry-After"] = str(err.retry_after)
        return error_response(request.scope, err, APEX_LINKS, headers)


def page(web: Web, handler: Handler) -> Handler:
    """Turn the gateway's errors into clean pages: a user's mistake is never a 500."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except HTTPError as err:
            return web.error(request, err)
        except AccountError as err:
            return web.error(request, BadRequest(str(err)))

    return wrapped
