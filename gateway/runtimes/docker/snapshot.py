"""Apply the Docker provider's full snapshots to the fleet's targets.

A target whose container is gone, stopped, killed (``stopping``: the kill/stop event came
before the death) or restarted on another port is drained *now*, then replaced by a fresh
target for the same instance: starting it creates, starts or adopts the container again,
with backoff so a container that keeps dying does not spin. Containers of this gateway that
the store does not know are logged and left alone; foreign ones never reach here (labels.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from gateway.routing.target import State, Target
from gateway.runtimes.docker.labels import Route, Snapshot
from gateway.store.db import Instance

if TYPE_CHECKING:
    from gateway.fleet import Fleet

log = logging.getLogger("gateway.fleet")

BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0  # seconds without a recovery before the backoff starts afresh


class SnapshotSync:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.recovering: set[str] = set()
        self.recoveries = 0
        self._backoff: dict[str, tuple[float, float]] = {}  # instance -> (delay, when)
        self._orphans: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def apply(self, snap: Snapshot) -> None:
        fleet = self.fleet
        routes = snap.by_instance()
        started: set[str] = getattr(fleet.runtime, "started", set())
        for inst_id, (inst, target) in list(fleet.instances.items()):
            if inst_id in self.recovering or inst_id not in started:
                continue  # being replaced, or its container is still being made
            if target.state in (State.DRAINING, State.STOPPED):
                continue  # the fleet itself is stopping it
            reason = problem(routes.get(inst_id), target)
            if reason:
                self.recovering.add(inst_id)
                task = asyncio.get_running_loop().create_task(
                    self._recover(inst, target, reason), name=f"recover-{inst_id}"
                )
                self._tasks.add(task)  # the loop keeps only weak references to tasks
                task.add_done_callback(self._tasks.discard)
        known = {i.id for i in fleet.store.instances()}
        for route in snap.routes:
            if route.instance not in known and route.container not in self._orphans:
                self._orphans.add(route.container)
                log.warning(
                    "container %s (instance %s) is not in the control store; left alone",
                    route.name,
                    route.instance,
                )

    async def _recover(self, inst: Instance, target: Target, reason: str) -> None:
        fleet = self.fleet
        try:
            log.warning("instance %s: %s; draining its target now", inst.id, reason)
            self.recoveries += 1
            fleet.crashes += 1
            await target.drain(fleet.config.drain_timeout)
            fleet.health.unwatch(target)
            service = fleet.services.get(inst.team)
            if service is not None:
                service.remove_target(target)
            if fleet.instances.get(inst.id, (None, None))[1] is target:
                del fleet.instances[inst.id]
            getattr(fleet.runtime, "started", set()).discard(inst.id)
            await asyncio.sleep(self._next_delay(inst.id))
            service = fleet.services.get(inst.team)
            wanted = {i.id for i in fleet.store.instances(inst.team) if i.role == "active"}
            if service is None or inst.id not in wanted or inst.id in fleet.instances:
                return  # deleted or replaced meanwhile
            fleet._launch(inst, service)  # adds a fresh target and starts the container
            log.info("instance %s: replaced by a fresh target", inst.id)
        except Exception:
            log.exception("recovery of %s failed; the next snapshot retries", inst.id)
        finally:
            self.recovering.discard(inst.id)

    def _next_delay(self, inst_id: str) -> float:
        now = time.monotonic()
        delay, when = self._backoff.get(inst_id, (0.0, 0.0))
        delay = 0.0 if now - when > STABLE_AFTER else min(max(delay * 2, 0.5), BACKOFF_MAX)
        self._backoff[inst_id] = (delay, now)
        return delay


def problem(route: Route | None, target: Target) -> str:
    """Why ``target`` can no longer be served from its container ("" when it can)."""
    if route is None:
        return "its container is gone"
    if route.state == "stopping":
        return "its container is being stopped or killed"
    if not route.running:
        return f"its container is {route.state}"
    if route.published != (target.pool.host, target.pool.port):
        return "its container restarted on another port"
    return ""
