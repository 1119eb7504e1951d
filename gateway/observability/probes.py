"""Liveness and readiness for an outer load balancer.

``livez``: the process and its event loop answer. ``readyz``: the route table is loaded
(``fleet.ready``), the runtime can start instances (``Runtime.problem()``: the docker engine
answers) and the data dir has ``min_free_mb`` free, so a request to a known team will be
routed and saved; 503 with the reason otherwise.
Served on the admin listener (``/livez``, ``/readyz``) and on the apex
(``/-/gateway/livez``, ``/-/gateway/readyz``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from gateway.fleet import Fleet


def health_routes(fleet: Fleet, problem: Callable[[], str], prefix: str = "") -> list[Route]:
    """``problem``: why requests cannot be served now (runtime, disk), "" when nothing."""

    async def livez(request: Request) -> Response:
        return JSONResponse({"ok": True}, headers={"cache-control": "no-store"})

    async def readyz(request: Request) -> Response:
        why = problem()
        ready = bool(fleet.ready) and not why
        body: dict[str, object] = {"ok": ready, "ready": ready, "teams": len(fleet.services)}
        if why:
            body["problem"] = why
        return JSONResponse(
            body,
            status_code=200 if ready else 503,
            headers={"cache-control": "no-store"},
        )

    return [Route(f"{prefix}/livez", livez), Route(f"{prefix}/readyz", readyz)]
