"""Header policy: what the proxy forwards each way, and what it adds.

Request: hop-by-hop headers and the ones the gateway sets itself (Host, X-Forwarded-*,
X-Request-ID, Content-Length, ``x-gateway-*`` identity headers) are dropped as the client sent
them; X-Forwarded-For/-Proto are trusted only from ``trusted_proxies``; a request id is kept
when well-formed, else made. Response: hop-by-hop, Date and Server dropped, an upstream
Set-Cookie for the gateway's own session or domain refused, Datasette's bare Link targets put
in angle brackets, Cache-Control made private for a member's view of a private team.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from typing import Any

from gateway.context import RequestContext
from gateway.errors import BadRequest
from gateway.routing.cookies import refused, reserved_names

log = logging.getLogger("gateway.proxy")

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
# Headers the gateway sets itself: a client-sent copy is dropped, never forwarded.
GATEWAY_SET = frozenset(
    {
        b"host",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"forwarded",
        b"x-real-ip",
        b"x-request-id",
        b"content-length",
    }
)
IDENTITY_PREFIX = b"x-gateway-"
DROPPED = HOP_BY_HOP | GATEWAY_SET  # never forwarded as the client sent them
# uvicorn stamps every response with the gateway's own Date; the upstream's copy would make
# two (a singleton field). nginx replaces it the same way. The upstream's Server (uvicorn) is
# hidden, as nginx hides its upstreams' (proxy_hide_header): it only helps an attacker.
RESPONSE_DROPPED = HOP_BY_HOP | {b"date", b"server"}
# The response headers the loop reads by name; any other passes on one set lookup.
RESPONSE_SPECIAL = RESPONSE_DROPPED | {b"set-cookie", b"link"}
# The gateway's session cookie: a team may not set it, under any prefix or letter case.
RESERVED_COOKIES = reserved_names(b"gateway_session")
REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:+/=-]{8,128}$")
# Request IDs the gateway makes: a random per-process prefix and a counter, unique without a
# getrandom() syscall per request (they identify requests in logs; they are no secret).
_ID_PREFIX = os.urandom(12).hex().encode()  # 24 hex digits, + 8 of counter: 32 in all
_ID_COUNTER = itertools.count()


class HeaderPolicy:
    def __init__(
        self,
        trusted_proxies: frozenset[str] = frozenset(),
        cookie_domain: bytes = b"",
        reserved_cookies: frozenset[bytes] = RESERVED_COOKIES,
    ) -> None:
        self.trusted_proxies = trusted_proxies
        self.cookie_domain = cookie_domain  # upstream Set-Cookie naming this domain is stripped
        # An upstream may not set a cookie under the gateway's own session names (fixation).
        self.reserved_cookies = reserved_cookies

    def request(
        self, scope: dict[str, Any], ctx: RequestContext, extra: list[tuple[bytes, bytes]] | None
    ) -> tuple[list[tuple[bytes, bytes]], int | None, bool]:
        """The upstream request's headers (the client's, less the ones the gateway sets,
        plus forwarding headers, the request id and ``extra``), its Content-Length, and
        whether it is chunked. Writes the request id to ``ctx``."""
        out: list[tuple[bytes, bytes]] = []
        content_length: int | None = None
        chunked = False
        connection_tokens: set[bytes] = set()
        request_id = b""
        host = b""
        xff = b""
        proto = b""
        # One set lookup sends an ordinary header straight through; every header the gateway
        # reads is in DROPPED, so the name comparisons run only for those.
        # Typed: mypyc then walks a list and compares bytes natively (per header).
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        for name, value in headers:
            if name in DROPPED:
                if name == b"host":
                    host = value
                elif name == b"content-length":
                    if content_length is not None or not value.strip().isdigit():
                        raise BadRequest("invalid Content-Length")
                    content_length = int(value)
                elif name == b"connection":
                    # Options naming headers dropped anyway (keep-alive) need no second pass.
                    connection_tokens.update(
                        {t.strip().lower() for t in value.split(b",")} - DROPPED
                    )
                elif name == b"transfer-encoding":
                    if value.strip().lower() != b"chunked":
                        raise BadRequest("unsupported Transfer-Encoding")
                    chunked = True
                elif name == b"x-request-id":
                    request_id = value
                elif name == b"x-forwarded-for":
                    xff = value
                elif name == b"x-forwarded-proto":
                    proto = value
            # Two bytes-prefix checks, not one with a tuple: mypyc compiles only the former.
            elif not (name.startswith(b"proxy-") or name.startswith(IDENTITY_PREFIX)):
                out.append((name, value))
        if chunked and content_length is not None:
            raise BadRequest("a request cannot carry both Content-Length and Transfer-Encoding")
        if connection_tokens:
            out = [(n, v) for n, v in out if n not in connection_tokens]
        client = scope.get("client")
        peer = client[0] if client else ""
        trusted = peer in self.trusted_proxies
        forwarded_for = (xff + b", " if (trusted and xff) else b"") + peer.encode()
        if not (trusted and proto in (b"http", b"https")):
            proto = scope.get("scheme", "http").encode()
        if not REQUEST_ID.match(request_id):
            request_id = b"%s%08x" % (_ID_PREFIX, next(_ID_COUNTER) & 0xFFFFFFFF)
        ctx.request_id = request_id
        out += [
            (b"host", host),
            (b"x-forwarded-for", forwarded_for),
            (b"x-forwarded-proto", proto),
            (b"x-forwarded-host", host),
            (b"x-request-id", request_id),
        ]
        if extra:
            out += extra
        return out, content_length, chunked

    def response(
        self, headers: list[tuple[bytes, bytes]], private: bool = False
    ) -> list[tuple[bytes, bytes]]:
        """The upstream response's headers as the client gets them: hop-by-hop, Date, Server
        and refused Set-Cookies dropped, Link fixed, Cache-Control private when ``private``."""
        out = []
        tokens: set[bytes] = set()
        cache: list[bytes] = []
        for name, value in headers:
            if name in RESPONSE_SPECIAL:
                if name == b"connection":
                    tokens.update(t.strip().lower() for t in value.split(b","))
                elif name == b"set-cookie":
                    reason = refused(value, self.reserved_cookies, self.cookie_domain)
                    if reason is None:
                        out.append((name, value))
                    else:
                        log.warning("dropped an upstream Set-Cookie: %s", reason)
                elif name == b"link":
                    out.append((name, fix_link(value)))
                continue
            if private and name == b"cache-control":
                cache.append(value)
                continue
            out.append((name, value))
        if tokens:
            out = [(n, v) for n, v in out if n not in tokens]
        if private:
            out.append((b"cache-control", private_value(cache)))
        return out


def fix_link(value: bytes) -> bytes:
    """Datasette sends ``Link: http://x/t.json; rel="alternate"``: RFC 8288 wants the target
    in angle brackets, so add them when the target is plainly one bare URL; else unchanged."""
    if value.startswith(b"<"):
        return value
    target, sep, params = value.partition(b";")
    target = target.strip()
    if not sep or not target or any(c in target for c in b"<>, \t"):
        return value
    return b"<" + target + b">;" + params


SHARED_CACHE_DIRECTIVES = (b"public", b"private", b"s-maxage", b"proxy-revalidate")
ALREADY_PRIVATE = frozenset({b"private", b"private, no-store", b"no-store, private"})


def private_value(values: list[bytes]) -> bytes:
    """``private`` plus the upstream's own browser directives (max-age, no-store...):
    Datasette's ``max-age`` and a client's ``?_ttl=`` must not let a shared cache keep one
    member's view of a private team."""
    if len(values) == 1 and values[0] in ALREADY_PRIVATE:
        return values[0]  # Datasette's answer to a signed-in actor: nothing to change
    directives = [b"private"]
    for value in values:
        for part in value.split(b","):
            part = part.strip()
            if part and not part.lower().startswith(SHARED_CACHE_DIRECTIVES):
                directives.append(part)
    return b", ".join(directives)


def private_cache(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers with their Cache-Control made private (the gateway's own pages)."""
    values = [v for n, v in headers if n == b"cache-control"]
    out = [(n, v) for n, v in headers if n != b"cache-control"]
    out.append((b"cache-control", private_value(values)))
    return out
