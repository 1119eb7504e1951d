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
    # Typed: native list walk and bytes compares under mypyc (see app.request_host).
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    cookie: str | None = None
    bearer: str | None = None
    edits: list[tuple[int, bytes | None]] = []  # (index, new value or None to drop)
    for i, (name, value) in enumerate(headers):
        if name == b"cookie":
            if cookie_name in value:
                found, rest = take_cookie(value, cookie_name)
                if found is not None:
                    cookie = found.decode("latin-1")
                    edits.append((i, rest or None))
        elif name == b"authorization":
            if value[:11].lower() == _BEARER:
                bearer = value[7:].strip().decode("latin-1")
                edits.append((i, None))
        elif name.startswith(b"x-gateway-"):  # no slice copy per header
            edits.append((i, None))
    if edits:
        out = list(headers)
        for i, new in reversed(edits):
            if new is None:
                del out[i]
            else:
                out[i] = (out[i][0], new)
        scope["headers"] = out
    return cookie, bearer


def take_cookie(header: bytes, name: bytes) -> tuple[bytes | None, bytes]:
    """Find cookie ``name`` in a Cookie header: (its last value, the header without it).

    Every copy is removed (a client may send several); other cookies keep their order.
    """
    found: bytes | None = None
    kept: list[bytes] = []
    prefix = name + b"="
    for part in header.split(b";"):
        part = part.strip()
        if part.startswith(prefix):
            found = part[len(prefix) :]
        elif part:
            kept.append(part)
    return found, b"; ".join(kept)
