"""Admin API endpoints for deploys, rollback, maintenance and the gateway's own restart.

POST /api/deploy                 {"team": slug} or {"all": true}, optional "image",
                                 "parallel", "rollout" (resume); answers NDJSON lines:
                                 {"event": "start"|"done"|"summary", ...}
POST /api/teams/{slug}/rollback  back to the team's previous version
POST /api/teams/{slug}/maintenance  {"message": "..."} or {"message": null} to end it
POST /api/restart                hand the sockets to a new gateway process (like SIGHUP)
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from gateway.admin.endpoints import json_body, mapped
from gateway.deploy.service import Deployer, DeployResult, new_rollout_id
from gateway.errors import BadRequest

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.fleet import Fleet


class DeployParts(Protocol):
    """What these endpoints use (the gateway built in app.py has it)."""

    config: Config
    fleet: Fleet
    deployer: Deployer


def _gw(request: Request) -> DeployParts:
    parts: DeployParts = request.app.state.parts  # set by gateway/admin/listener_app.py
    return parts


async def deploy(request: Request) -> Response:
    gw = _gw(request)
    body = await json_body(request)
    image = body.get("image") or None
    rollout: str | None = None
    if body.get("all"):
        # The id is known before the first deploy, so a client cut off mid-rollout can resume
        # it; a resumed rollout lists only the teams it has left.
        rollout = str(body.get("rollout") or new_rollout_id())
        teams = gw.deployer.pending(rollout)
    elif isinstance(body.get("team"), str):
        gw.fleet.require(body["team"])
        gw.fleet.check_free(body["team"])  # refused with 409 before the stream starts
        teams = [body["team"]]
    else:
        raise BadRequest('give {"team": "<slug>"} or {"all": true}')
    parallel = int(body.get("parallel") or gw.config.deploy_parallel)

    async def lines() -> AsyncIterator[bytes]:
        queue: asyncio.Queue[DeployResult | None] = asyncio.Queue()
        job: asyncio.Future[Any]
        if body.get("all"):
            job = asyncio.ensure_future(
                gw.deployer.deploy_all(
                    image, parallel=parallel, rollout=rollout, on_done=queue.put_nowait
                )
            )
        else:
            job = asyncio.ensure_future(_one(gw, teams[0], image, queue))
        job.add_done_callback(lambda _: queue.put_nowait(None))
        yield _line({"event": "start", "teams": teams, "rollout": rollout})
        results: list[DeployResult] = []
        while (result := await queue.get()) is not None:
            results.append(result)
            yield _line({"event": "done", **result.as_dict()})
        yield _line(
            {
                "event": "summary",
                "rollout": rollout,
                "ok": all(r.ok for r in results),
                "results": [r.as_dict() for r in results],
            }
        )

    return StreamingResponse(lines(), media_type="application/x-ndjson")


async def _one(
    gw: DeployParts, team: str, image: str | None, queue: asyncio.Queue[DeployResult | None]
) -> None:
    queue.put_nowait(await gw.deployer.deploy(team, image))


async def rollback(request: Request) -> Response:
    result = await _gw(request).deployer.rollback(request.path_params["slug"])
    return JSONResponse(result.as_dict(), status_code=200 if result.ok else 409)


async def maintenance(request: Request) -> Response:
    gw = _gw(request)
    message = (await json_body(request)).get("message")
    if message is not None and (not isinstance(message, str) or not message.strip()):
        raise BadRequest("message must be a non-empty string, or null to end maintenance")
    slug = request.path_params["slug"]
    gw.fleet.set_maintenance(slug, message)
    return JSONResponse({"team": slug, "maintenance": message})


async def restart(request: Request) -> Response:
    os.kill(os.getpid(), signal.SIGHUP)
    return JSONResponse({"restarting": True, "pid": os.getpid()}, status_code=202)


def _line(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode() + b"\n"


def deploy_routes() -> list[BaseRoute]:
    return [
        Route("/api/deploy", mapped(deploy), methods=["POST"]),
        Route("/api/teams/{slug}/rollback", mapped(rollback), methods=["POST"]),
        Route("/api/teams/{slug}/maintenance", mapped(maintenance), methods=["POST"]),
        Route("/api/restart", mapped(restart), methods=["POST"]),
    ]
