"""The admin dashboard's cookie: set by its login form, accepted by ``TokenAuth`` for GET."""

from __future__ import annotations

import hashlib
import hmac

from starlette.responses import RedirectResponse, Response

COOKIE = "gateway_admin"


def cookie_value(token: str) -> str:
    # Not the token itself: a cookie leaked from a browser profile is not an API credential.
    return hmac.new(token.encode(), b"gateway-admin-cookie", hashlib.sha256).hexdigest()


def login_redirect(token: str, secure: bool = False) -> Response:
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        COOKIE, cookie_value(token), httponly=True, samesite="strict", secure=secure, path="/"
    )
    return response
