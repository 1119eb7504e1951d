"""Admin API endpoint for moving a team to another node (token auth like every /api route):

POST /api/teams/{slug}/move  {"node": "<id, hostname or KEY=VALUE label>"}; answers NDJSON
                             lines: {"event": "step", "message": ...} while it runs, then
                             {"event": "done", "ok": true, ...} or {"event": "done", "ok":
                             false, "reason": ...} (the move was undone)
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from gateway.admin.endpoints import json_body, mapped
from gateway.errors import BadRequest, GatewayError, RuntimeUnavailable
from gateway.runtimes.swarm.move import MoveParts, move_team

log = logging.getLogger("gateway.swarm")
_moves: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones


async def move(request: Request) -> Response:
    gw: MoveParts = request.app.state.parts  # set by gateway/admin/listener_app.py
    slug = request.path_params["slug"]
    node = (await json_body(request)).get("node")
    if not isinstance(node, str) or not node.strip():
        raise BadRequest('give {"node": "<node id, hostname or KEY=VALUE label>"}')
    if gw.fleet.runtime.name != "swarm":  # refused before the stream starts (400)
        raise RuntimeUnavailable(
            f"the {gw.fleet.runtime.name} runtime runs every team on this one host: there is "
            "no node to move to (moves need --runtime swarm)"
        )
    gw.fleet.require(slug)  # 404
    gw.fleet.check_free(slug)  # 409
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def run() -> None:
        try:
            result = await move_team(
                gw, slug, node.strip(), lambda m: queue.put_nowait({"event": "step", "message": m})
            )
            queue.put_nowait({"event": "done", "ok": True, **result.as_dict()})
        except Exception as exc:  # the engine's own errors too: said, never a cut stream
            if not isinstance(exc, GatewayError):
                log.exception("move of %s failed", slug)
            queue.put_nowait({"event": "done", "ok": False, "reason": str(exc)})
        finally:
            queue.put_nowait(None)

    # A task of its own: a client that goes away does not cut a move (or its undo) short.
    job = asyncio.ensure_future(run())
    _moves.add(job)
    job.add_done_callback(_moves.discard)

    async def lines() -> AsyncIterator[bytes]:
        while (event := await queue.get()) is not None:
            yield json.dumps(event).encode() + b"\n"
        await job

    return StreamingResponse(lines(), media_type="application/x-ndjson")


def move_routes() -> list[BaseRoute]:
    return [Route("/api/teams/{slug}/move", mapped(move), methods=["POST"])]
