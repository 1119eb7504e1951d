"""The admin API: JSON over a separate listener (127.0.0.1 or a unix socket), bearer-token auth.

    GET  /api/status                  summary: ready, counters, every team and its targets
    GET  /api/routes                  the live route table: host -> team, state, targets
    GET  /api/teams                   teams in the store, with their live state
    GET  /api/targets                 every routed target: state, in-flight, served
    POST /api/teams/{slug}/pause      hold the team's new requests (?seconds=30, at most
                                      max_pause; the answer says the seconds applied)
    POST /api/teams/{slug}/resume     release held requests
    GET  /api/teams/{slug}/idle-timeout   the team's own idle timeout, the gateway's, the one
                                      applied (seconds; 0: never sleeps)
    PUT  /api/teams/{slug}/idle-timeout   {"seconds": 600}, 0 (never), or null / "default"
                                      (the gateway's); validated as `gateway teams idle-timeout`
    POST /api/targets/{id}/drain      drain a target, stop its instance, take it out of routing
    GET  /api/deploys                 recent deploys (the ``deploys`` table)
    GET  /api/imports                 recent CSV import jobs (the ``import_jobs`` table)
    GET  /metrics                     Prometheus exposition
    GET  /livez, /readyz              for an outer load balancer (no token)

Deploys, rollback, maintenance and restart: ``gateway/deploy/api.py``; backups:
``gateway/backup/api.py``. Handlers find the parts at ``request.app.state.parts``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.admin.endpoints import json_body, mapped
from gateway.admin.parts import AdminParts
from gateway.backup.api import backup_routes
from gateway.deploy.api import deploy_routes
from gateway.errors import BadRequest, ConfigError, NotFound
from gateway.idle import idle_timeout_value
from gateway.observability.prom import exposition, make_registry
from gateway.routing.target import Target
from gateway.runtimes.swarm.api import move_routes


def team_view(gw: AdminParts, slug: str, store_state: str = "active") -> dict[str, Any]:
    service = gw.fleet.service(slug)
    return {
        "slug": slug,
        "url": gw.config.team_url(slug) + "/",
        "state": service.state() if service else store_state,
        "hosts": list(service.hosts) if service else [],
        "targets": [t.snapshot() for t in service.targets()] if service else [],
        # "restore", "deploy" or "delete" while one holds the team (Fleet.claim), else null.
        "operation": gw.fleet.operations.get(slug),
        # Seconds without a request before it sleeps (0: never); a sleeper wakes on a request.
        "idle_timeout": gw.fleet.idle_timeout(slug),
    }


def status_view(gw: AdminParts) -> dict[str, Any]:
    c = gw.counters
    drains = gw.fleet.drains
    return {
        "gateway_id": gw.gateway_id,
        "domain": gw.config.domain,
        "url": gw.config.base_url + "/",
        "runtime": gw.config.runtime,
        "ready": gw.fleet.ready,
        "problems": [p for p in (gw.runtime.problem(), gw.space.problem()) if p],
        "teams": [team_view(gw, t.slug, t.state) for t in gw.store.teams()],
        "backups": gw.backups.status(),
        "counters": {
            "requests": sum(st.count for st in gw.stats.teams.values()),
            "proxied": c.requests,
            "retries": c.retries,
            "retry_skipped_body": c.retry_skipped_body,
            "retry_skipped_method": c.retry_skipped_method,
            "errors": dict(c.errors),
            "drains": len(drains),
            "drain_cancelled": sum(d.cancelled for d in drains),
        },
    }


def recent(gw: AdminParts, table: str, order: str, limit: int = 50) -> list[dict[str, Any]]:
    """Newest rows of another part's table; [] while that table does not exist yet."""
    with contextlib.suppress(sqlite3.Error):
        rows = gw.store.query(f"SELECT * FROM [{table}] ORDER BY {order} DESC LIMIT ?", [limit])
        return [dict(r) for r in rows]
    return []


def _gw(request: Request) -> AdminParts:
    parts: AdminParts = request.app.state.parts  # set by gateway/admin/listener_app.py
    return parts


def _find_target(gw: AdminParts, target_id: str) -> Target:
    for service in gw.fleet.services.values():
        for target in service.targets():
            if target.id == target_id:
                return target
    raise NotFound(f"no routed target {target_id!r}")


def _service(gw: AdminParts, slug: str) -> Any:
    service = gw.fleet.service(slug)
    if service is None:
        raise NotFound(f"no routed team {slug!r}")
    return service


async def status(request: Request) -> Response:
    return JSONResponse(status_view(_gw(request)))


async def routes(request: Request) -> Response:
    gw = _gw(request)
    out = []
    for host, slug in gw.table.routes():
        view = team_view(gw, slug)
        out.append({"host": host, "team": slug, "state": view["state"], "targets": view["targets"]})
    return JSONResponse({"routes": out})


async def teams(request: Request) -> Response:
    gw = _gw(request)
    return JSONResponse({"teams": [team_view(gw, t.slug, t.state) for t in gw.store.teams()]})


async def targets(request: Request) -> Response:
    gw = _gw(request)
    out = [
        {"team": slug, **t.snapshot()}
        for slug, service in sorted(gw.fleet.services.items())
        for t in service.targets()
    ]
    return JSONResponse({"targets": out})


async def pause(request: Request) -> Response:
    gw = _gw(request)
    service = _service(gw, request.path_params["slug"])
    raw = request.query_params.get("seconds", "30")
    try:
        seconds = float(raw)
    except ValueError as exc:
        raise BadRequest(f"seconds={raw!r} is not a number") from exc
    try:
        applied = gw.fleet.pause(service.name, seconds)
    except ConfigError as exc:
        raise BadRequest(str(exc)) from exc
    return JSONResponse(
        {
            "team": service.name,
            "state": service.state(),
            "seconds": applied,
            "requested": seconds,
            "max_pause": gw.config.max_pause,
        }
    )


async def resume(request: Request) -> Response:
    gw = _gw(request)
    service = _service(gw, request.path_params["slug"])
    gw.fleet.resume(service.name)
    return JSONResponse({"team": service.name, "state": service.state()})


def _idle_view(gw: AdminParts, slug: str) -> dict[str, Any]:
    return {
        "team": slug,
        "own": gw.fleet.idle.own(slug),
        "default": gw.config.idle_timeout,
        "seconds": gw.fleet.idle_timeout(slug),
        "state": _service(gw, slug).state(),
    }


async def idle_timeout(request: Request) -> Response:
    """GET: the team's idle timeout; PUT: set its own (same rules as the CLI), applied now."""
    gw = _gw(request)
    slug = _service(gw, request.path_params["slug"]).name
    if request.method == "PUT":
        body = await json_body(request)
        if "seconds" not in body:  # never a silent reset to the default
            raise BadRequest('give {"seconds": N} (0: never sleeps) or {"seconds": "default"}')
        gw.fleet.set_idle_timeout(slug, idle_timeout_value(body["seconds"]))
    return JSONResponse(_idle_view(gw, slug))


async def drain(request: Request) -> Response:
    """Drain first, then stop (reliability.md); the target then leaves the routing for good."""
    gw = _gw(request)
    target = _find_target(gw, request.path_params["target"])
    result = await gw.fleet.stop_target(target)
    gw.fleet.drains.append(result)
    for service in gw.fleet.services.values():
        if target in service.targets():
            service.remove_target(target)
    with contextlib.suppress(sqlite3.Error):
        gw.store.update_instance(target.id, role="retired")
    return JSONResponse(
        {
            "target": result.target,
            "completed": result.completed,
            "cancelled": result.cancelled,
            "seconds": round(result.seconds, 3),
        }
    )


async def deploys(request: Request) -> Response:
    return JSONResponse({"deploys": recent(_gw(request), "deploys", "id")})


async def imports(request: Request) -> Response:
    return JSONResponse({"imports": recent(_gw(request), "import_jobs", "rowid")})


def metrics_endpoint(gw: AdminParts) -> Route:
    registry = make_registry(gw)

    async def metrics(request: Request) -> Response:
        return Response(exposition(registry), media_type="text/plain; version=0.0.4")

    return Route("/metrics", metrics)


def api_routes(gw: AdminParts) -> list[BaseRoute]:
    return [
        Route("/api/status", status),
        Route("/api/routes", routes),
        Route("/api/teams", teams),
        Route("/api/targets", targets),
        Route("/api/teams/{slug}/pause", pause, methods=["POST"]),
        Route("/api/teams/{slug}/resume", resume, methods=["POST"]),
        Route("/api/teams/{slug}/idle-timeout", mapped(idle_timeout), methods=["GET", "PUT"]),
        Route("/api/targets/{target}/drain", drain, methods=["POST"]),
        Route("/api/deploys", deploys),
        Route("/api/imports", imports),
        metrics_endpoint(gw),
        *deploy_routes(),
        *backup_routes(),
        *move_routes(),
    ]
