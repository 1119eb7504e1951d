"""CSRF protection for the gateway's own forms: three independent checks.

1. A token bound to the session (or, before sign-in, to a random ``gateway_csrf`` cookie),
   signed with its own salt and valid for 12 hours.
2. An exact ``Origin`` check against the configured base URL. A missing or ``null`` Origin is
   refused: every browser sends Origin on a form POST.
3. ``Sec-Fetch-Site: same-site`` or ``cross-site`` is refused. A sibling team's subdomain is
   *same-site* but not same-origin, and is exactly the attacker we worry about (tenants share
   the parent domain), so check 2 and 3 both exclude it.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from itsdangerous import BadData, URLSafeTimedSerializer

MAX_AGE = 12 * 3600
ANON_COOKIE = "gateway_csrf"


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def binding(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def make_token(signer: URLSafeTimedSerializer, bound_to: str) -> str:
    return signer.dumps(binding(bound_to))


def check(
    signer: URLSafeTimedSerializer,
    bound_to: str,
    token: str,
    origin: str | None,
    fetch_site: str | None,
    expected_origin: str,
) -> str | None:
    """Return why the request is refused, or None when all three checks pass."""
    if origin is None:
        return "the request carried no Origin header"
    if origin.strip().lower() != expected_origin:
        return "the request came from another site" if origin != "null" else "Origin is null"
    if fetch_site is not None and fetch_site.strip().lower() in ("same-site", "cross-site"):
        return "the request came from another site (Sec-Fetch-Site)"
    if not bound_to or not token:
        return "the form has expired; please reload the page and try again"
    try:
        value = signer.loads(token, max_age=MAX_AGE)
    except (BadData, UnicodeError, ValueError):
        return "the form has expired; please reload the page and try again"
    if not isinstance(value, str) or not hmac.compare_digest(value, binding(bound_to)):
        return "the form has expired; please reload the page and try again"
    return None
