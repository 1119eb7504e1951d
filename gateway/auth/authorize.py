"""The header pass of the per-request check for team hosts (kept apart: it is the hot path).

One walk over the request headers finds the gateway's session cookie and a gateway API token,
and rewrites ``scope["headers"]`` without them and without any client-sent ``x-gateway-*``
header, so neither the SSO cookie nor a forged identity ever reaches a tenant's Datasette.
Other cookies (Datasette's own ``ds_actor``, CSRF cookies) pass through untouched.
"""

from __future__ import annotations

from typing import Any

from gateway.auth.tokens import PREFIX

ACTOR_TTL = 60.0  # seconds a signed x-gateway-actor value is reused
_BEARER = b"bearer " + PREFIX.encode()


def scan_headers(scope: dict[str, Any], cookie_name: bytes) -> tuple[str | None, str | None]:
    """Return (session cookie value, gateway bearer token) and strip both from the scope."""
    cookie: str | None = None
    bearer: str | None = None
    out: list[tuple[bytes, bytes]] = []
    changed = False
    for name, value in scope["headers"]:
        if name == b"cookie" and cookie_name in value:
            kept = []
            for part in value.split(b";"):
                key, _, val = part.strip().partition(b"=")
                if key == cookie_name:
                    cookie = val.decode("latin-1")
                elif part.strip():
                    kept.append(part.strip())
            changed = True
            if kept:
                out.append((name, b"; ".join(kept)))
            continue
        if name == b"authorization" and value[:11].lower() == _BEARER:
            bearer = value[7:].strip().decode("latin-1")
            changed = True
            continue
        if name.startswith(b"x-gateway-"):
            changed = True
            continue
        out.append((name, value))
    if changed:
        scope["headers"] = out
    return cookie, bearer
