"""How an error answer looks: HTML for people, JSON for API clients (by ``Accept``). Which
status an error gets is decided in errors.py."""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from starlette.responses import Response

from gateway.context import CONTEXT, RequestContext
from gateway.errors import HTTPError, SignInHandoff, SignInRequired

# Where an apex error page sends people on.
APEX_LINKS = (("/", "Front page"), ("/dashboard", "Your dashboard"))


def team_links(
    base_url: str, team_url: Callable[[str], str], scope: dict[str, Any], err: HTTPError
) -> tuple[tuple[str, str], ...]:
    """Where an error page on a team host sends people on: the team's Datasette and upload
    page for a member; sign-in for anyone else; always the dashboard and the front page.
    (An unknown team host has no team: the apex's links.)"""
    ctx: RequestContext | None = scope.get(CONTEXT)
    apex = ((f"{base_url}/dashboard", "Your dashboard"), (f"{base_url}/", "Front page"))
    if ctx is None or not ctx.team:
        return apex
    team = ctx.team
    home = team_url(team)
    if ctx.user:
        return ((f"{home}/", f"{team}'s Datasette"), (f"{home}/-/upload-csv", "Upload a CSV"),
                *apex)  # fmt: skip
    target = (scope.get("raw_path") or scope.get("path", "/").encode()).decode("latin-1")
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("latin-1")
    sign_in = f"{base_url}/login?next={quote(home + target, safe='')}"
    if err.status == 403:  # signed in, but not a member: the team's pages answer 403 too
        return ((sign_in, "Sign in as someone else"), *apex)
    return ((f"{home}/", f"{team}'s Datasette"), (sign_in, "Sign in"), *apex)


def wants_json(scope: dict[str, Any]) -> bool:
    accept = b""
    for name, value in scope.get("headers", ()):
        if name == b"accept":
            accept = value.lower()
            break
        if name == b"x-requested-with" and value.lower() == b"xmlhttprequest":
            return True
    if b"application/json" in accept and b"text/html" not in accept:
        return True
    return scope.get("path", "").endswith(".json")


def is_api_client(scope: dict[str, Any]) -> bool:
    """An API client gets 401 JSON instead of a sign-in redirect: a JSON Accept header, an
    Authorization header, or an XHR request (oauth2-proxy's --api-route, by headers)."""
    ctx: RequestContext | None = scope.get(CONTEXT)
    if ctx is not None and ctx.api:  # auth already took a gateway API token off the headers
        return True
    headers = scope.get("headers", ())
    if (b"sec-fetch-mode", b"navigate") in headers:
        return False  # a browser following a link or typed URL, even to a .json page
    for name, value in headers:
        if name == b"authorization":
            return True
        if name == b"x-requested-with" and value.lower() == b"xmlhttprequest":
            return True
    return wants_json(scope)


def error_body(
    scope: dict[str, Any], err: HTTPError, links: tuple[tuple[str, str], ...] = ()
) -> tuple[bytes, bytes]:
    """The answer to ``err``: JSON for API clients, else a page (with ``links`` onward)."""
    if is_api_client(scope):
        payload = {"ok": False, "status": err.status, "error": err.title, "detail": err.detail}
        return json.dumps(payload).encode(), b"application/json"
    title = html.escape(f"{err.status} {err.title}")
    detail = html.escape(err.detail)
    if links:
        onward = " · ".join(f'<a href="{html.escape(u)}">{html.escape(t)}</a>' for u, t in links)
        detail += f"</p><p>{onward}"
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;"
        "padding:0 1rem;color:#1f2328}h1{font-size:1.5rem}</style></head>"
        f"<body><main><h1>{title}</h1><p>{detail}</p></main></body></html>"
    )
    return page.encode(), b"text/html; charset=utf-8"


def error_response(
    scope: Any,
    err: HTTPError,
    links: tuple[tuple[str, str], ...] = (),
    headers: Mapping[str, str] | None = None,
) -> Response:
    """``error_body`` as a Starlette response: the apex site's and admin listener's errors."""
    body, content_type = error_body(dict(scope), err, links)
    return Response(body, err.status, headers=dict(headers or {}), media_type=content_type.decode())


async def send_error(
    scope: dict[str, Any],
    send: Any,
    err: HTTPError,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    links: tuple[tuple[str, str], ...] = (),
) -> None:
    if isinstance(err, SignInRequired) and not is_api_client(scope):
        await _redirect(scope, send, err.location)
        return
    if isinstance(err, SignInHandoff):
        await _redirect(scope, send, err.location, err.set_cookie)
        return
    body, content_type = error_body(scope, err, links)
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if err.retry_after is not None:
        headers.append((b"retry-after", str(err.retry_after).encode()))
    if extra_headers:
        headers += extra_headers
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send(
        {"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body}
    )


async def _redirect(
    scope: dict[str, Any], send: Any, location: str, set_cookie: str | None = None
) -> None:
    # 302 for GET/HEAD; 303 makes a browser follow a POST's redirect with a GET.
    status = 302 if scope.get("method") in ("GET", "HEAD") else 303
    headers = [
        (b"location", location.encode("latin-1", "replace")),
        (b"content-length", b"0"),
        (b"cache-control", b"no-store"),
    ]
    if set_cookie:
        headers.append((b"set-cookie", set_cookie.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
