"""Who may see the operators' pages on the apex, decided in one place.

``operator_access`` answers the question: the admin API's bearer token (scripts, load tests)
or a signed-in operator (``gateway/auth/operators.py``) is ``OPERATOR``. The caller picks the
shape of a refusal with ``refusal``: a person's page is sent to sign in, an API client (or a
``page`` asked for JSON) gets 401 and JSON; a signed-in non-operator gets 403 either way.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.admin.discovery import token_matches
from gateway.auth.operators import is_operator
from gateway.errors import Forbidden, HTTPError, Unauthorized
from gateway.responses import error_response, wants_json

if TYPE_CHECKING:
    from gateway.auth.gatekeeper import Auth
    from gateway.config import Config
    from gateway.store import Store


class Access(enum.Enum):
    OPERATOR = "operator"
    SIGNED_OUT = "signed out"  # no session and no admin token
    NOT_OPERATOR = "not an operator"  # signed in, without operator rights


def operator_access(config: Config, store: Store, auth: Auth, request: Request) -> Access:
    header = request.headers.get("authorization", "")
    if header.startswith("Bearer ") and token_matches(config, store, header[7:].strip()):
        return Access.OPERATOR
    session = auth.session_from_cookies(dict(request.cookies))
    if session is None:
        return Access.SIGNED_OUT
    if is_operator(store, config, session.user_id):
        return Access.OPERATOR
    return Access.NOT_OPERATOR


def refusal(access: Access, request: Request, auth: Auth, what: str, page: bool) -> Response:
    """The answer to a refused ``access`` (not OPERATOR); ``what`` names the thing refused.
    ``page``: a person's page, which sends a signed-out browser to sign in."""
    if access is Access.SIGNED_OUT:
        if page and not wants_json(dict(request.scope)):
            return RedirectResponse(auth.login_url(request.url.path), status_code=303)
        err: HTTPError = Unauthorized(f"{what} needs an operator's sign-in or the admin token")
    else:
        err = Forbidden(f"{what} is for the gateway's operators")
    return error_response(request.scope, err)
