"""Docker labels -> routes: a pure function, the way Traefik's Docker provider does it.

Input is what the engine's container *list* endpoint returns (``Id``, ``Names``, ``State``,
``Status``, ``Labels``, ``Ports``); output is a full snapshot of routes plus the containers
that were rejected and why. Nothing here talks to Docker, so it is tested table-driven.

Only a container whose ``gateway.managed-by`` equals this gateway's id is trusted: anyone can
start a container with copied labels, and routing to it would hand it a team's traffic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import InvalidSlug
from gateway.slugs import validate_slug

PREFIX = "gateway."
MANAGED_BY = "gateway.managed-by"
CONTAINER_PREFIX = "gateway-"  # containers are named gateway-<instance id>
REQUIRED = ("team", "host", "port", "version", "instance")
_INSTANCE = re.compile(r"^[a-z0-9][a-z0-9-]{0,100}$")


class LabelError(ValueError):
    """The container's gateway labels do not describe a valid route."""


@dataclass(frozen=True)
class Route:
    container: str  # container id
    name: str
    team: str
    host: str
    port: int  # the port Datasette listens on inside the container
    version: str
    instance: str
    state: str  # Docker's: created | running | restarting | exited | dead | paused
    health: str  # "" (no healthcheck) | starting | healthy | unhealthy
    published: tuple[str, int] | None  # where the gateway reaches it: (127.0.0.1, port)

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class Rejected:
    container: str
    name: str
    reason: str
    forged: bool  # carries gateway labels but not this gateway's id
    # Another gateway's own container (its name and instance label agree): expected on a
    # shared engine, so not a warning.
    other_gateway: bool = False


@dataclass
class Snapshot:
    routes: list[Route] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    def by_instance(self) -> dict[str, Route]:
        return {r.instance: r for r in self.routes}


def route_from_container(info: dict[str, Any], gateway_id: str, domain: str) -> Route:
    """One trusted container's labels -> a Route, or LabelError saying what is wrong."""
    labels = info.get("Labels") or {}
    missing = [k for k in REQUIRED if not labels.get(PREFIX + k)]
    if missing:
        raise LabelError("missing label(s): " + ", ".join(PREFIX + k for k in missing))
    try:
        team = validate_slug(labels["gateway.team"])
    except InvalidSlug as exc:
        raise LabelError(f"gateway.team: {exc}") from exc
    if team != labels["gateway.team"]:
        raise LabelError("gateway.team must be the canonical (lower-case) slug")
    host = labels["gateway.host"]
    if host != f"{team}.{domain}":
        raise LabelError(f"gateway.host {host!r} is not {team}.{domain}")
    port = _port(labels["gateway.port"])
    instance = labels["gateway.instance"]
    if not _INSTANCE.match(instance) or not instance.startswith(team + "-"):
        raise LabelError(f"gateway.instance {instance!r} is not an instance of team {team}")
    name = _name(info)
    if name != CONTAINER_PREFIX + instance:
        # Docker names are unique, so one instance can never have two routes.
        raise LabelError(f"container name {name!r} is not {CONTAINER_PREFIX}{instance}")
    return Route(
        container=str(info.get("Id", "")),
        name=name,
        team=team,
        host=host,
        port=port,
        version=labels["gateway.version"],
        instance=instance,
        state=str(info.get("State", "")),
        health=_health(str(info.get("Status", ""))),
        published=_published(info.get("Ports") or [], port),
    )


def build_snapshot(containers: list[dict[str, Any]], gateway_id: str, domain: str) -> Snapshot:
    """Every container -> a full snapshot; one bad container never stops the others."""
    snap = Snapshot()
    for info in containers:
        labels = info.get("Labels") or {}
        owner = labels.get(MANAGED_BY)
        if owner is None:
            continue  # not a gateway container at all
        cid, name = str(info.get("Id", "")), _name(info)
        if owner != gateway_id:
            theirs = name == CONTAINER_PREFIX + str(labels.get("gateway.instance", ""))
            reason = f"managed-by {owner!r} is not us"
            snap.rejected.append(Rejected(cid, name, reason, not theirs, theirs))
            continue
        try:
            route = route_from_container(info, gateway_id, domain)
        except LabelError as exc:
            snap.rejected.append(Rejected(cid, name, str(exc), False))
            continue
        snap.routes.append(route)
    return snap


def _port(raw: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise LabelError(f"gateway.port {raw!r} is not a port number")
    return int(raw)


def _name(info: dict[str, Any]) -> str:
    names = info.get("Names") or [""]
    return str(names[0]).lstrip("/")


def _health(status: str) -> str:
    for word in ("starting", "unhealthy", "healthy"):
        if f"({word})" in status or f"(health: {word})" in status:
            return word
    return ""


def _published(ports: list[dict[str, Any]], port: int) -> tuple[str, int] | None:
    """Only a loopback binding counts: the gateway never routes to a bare bridge IP."""
    for p in ports:
        mine = p.get("PrivatePort") == port and p.get("Type", "tcp") == "tcp"
        if mine and p.get("PublicPort") and p.get("IP") == "127.0.0.1":
            return "127.0.0.1", int(p["PublicPort"])
    return None
