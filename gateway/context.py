"""``RequestContext``: what the gateway learns about one request on its way through.

ASGI hands each part only ``(scope, receive, send)``. Instead of loose scope keys that one
module writes and another reads by string, the server (or, under another ASGI server, the
observer) puts one typed object in the scope under ``CONTEXT``, and every part reads and
writes its attributes:

    writer                     attribute       readers
    app.py (host -> team)      team            observe, accesslog, responses (error links)
    routing/headers.py         request_id      accesslog
    routing/proxy.py           target, retries accesslog
    auth/gatekeeper.py            user, api,      responses (error links, JSON or page),
                               private         upload/views, routing/proxy (Cache-Control)
    the server's Cycle         status          observe
    routing/proxy.py           body_follows    protocol.py (head and body in one write)
"""

from __future__ import annotations

from typing import Any, Final

# The scope key that holds the request's context (an ASGI extension key: servers and
# frameworks that do not know it pass it through).
CONTEXT: Final = "gateway.context"


class RequestContext:
    __slots__ = (
        "api",
        "body_follows",
        "private",
        "request_id",
        "retries",
        "status",
        "target",
        "team",
        "user",
    )

    def __init__(self) -> None:
        self.team = ""  # the team host's slug; "" for the apex and unknown hosts
        self.request_id = b""  # the X-Request-ID sent upstream
        self.target = ""  # the instance that answered (or was tried last)
        self.retries = 0
        # The signed-in member ({"id", "email"}), None when anonymous or not yet checked.
        self.user: dict[str, Any] | None = None
        self.api = False  # the request carried a gateway API token
        self.private = False  # a member's answer from a private team: Cache-Control private
        # Set by the proxy just before its response head: the body follows at once, so the
        # server may hold the head and write both together (other servers ignore it).
        self.body_follows = False
        self.status = 0  # the response status once the head went out; 0: no answer yet


def context_of(scope: dict[str, Any]) -> RequestContext:
    """The request's context, made and stored on first use (a scope built by hand, a test)."""
    ctx = scope.get(CONTEXT)
    if ctx is None:
        ctx = scope[CONTEXT] = RequestContext()
    return ctx
