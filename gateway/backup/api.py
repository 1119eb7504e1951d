"""Admin API endpoints for backups (token auth like every /api route):

GET  /api/backups                 the daemon and every database: lag, last sync, errors
POST /api/backups/sync            {"team": slug} or {} (every database): upload now and wait
POST /api/teams/{slug}/restore    {"at": "RFC 3339 time"} or {} (latest): pause, restore, resume
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.admin.endpoints import json_body, mapped
from gateway.backup.litestream import parse_time
from gateway.backup.restore import RestoreParts, restore_team
from gateway.errors import BadRequest


def _gw(request: Request) -> RestoreParts:
    parts: RestoreParts = request.app.state.parts  # set by gateway/admin/listener_app.py
    return parts


async def status(request: Request) -> Response:
    return JSONResponse(_gw(request).backups.status())


async def sync(request: Request) -> Response:
    team = (await json_body(request)).get("team")
    if team is not None and not isinstance(team, str):
        raise BadRequest('give {"team": "<slug>"} or {}')
    results = await _gw(request).backups.sync_now([team] if team else None)
    return JSONResponse({"synced": results})


async def restore(request: Request) -> Response:
    gw = _gw(request)
    raw = (await json_body(request)).get("at")
    if raw is not None and not isinstance(raw, str):
        raise BadRequest('"at" must be a time like 2026-01-31T14:05:00Z')
    at = parse_time(raw) if raw else None
    result = await restore_team(gw, request.path_params["slug"], at)
    return JSONResponse(result.as_dict())


def backup_routes() -> list[BaseRoute]:
    return [
        Route("/api/backups", mapped(status)),
        Route("/api/backups/sync", mapped(sync), methods=["POST"]),
        Route("/api/teams/{slug}/restore", mapped(restore), methods=["POST"]),
    ]
