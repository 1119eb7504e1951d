"""Judge the Docker provider's full snapshots against the instances the runtime started.

A started instance whose container is gone, stopped, killed (``stopping``: the kill/stop
event came before the death) or restarted on another port is reported lost
(``Runtime.watch``): the fleet drains its target now and relaunches it, which creates, starts
or adopts the container again (``Fleet.instance_lost``). Containers of this gateway that the
store does not know are logged and left alone; foreign ones never reach here (labels.py).
"""

from __future__ import annotations

import asyncio
import logging

from gateway.routing.target import State, Target
from gateway.runtimes.base import InstanceLost
from gateway.runtimes.docker.labels import Route, Snapshot
from gateway.store.db import Instance, Store

log = logging.getLogger("gateway.fleet")


class SnapshotSync:
    def __init__(
        self,
        started: dict[str, tuple[Instance, Target]],
        store: Store,
        on_lost: InstanceLost,
    ) -> None:
        self.started = started  # the runtime's: instances whose start() has finished
        self.store = store
        self.on_lost = on_lost
        self.recovering: set[str] = set()
        self._orphans: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def apply(self, snap: Snapshot) -> None:
        routes = snap.by_instance()
        for inst_id, (inst, target) in list(self.started.items()):
            if inst_id in self.recovering:
                continue  # being replaced
            if target.state in (State.DRAINING, State.STOPPED):
                continue  # the fleet itself is stopping it
            reason = problem(routes.get(inst_id), target)
            if reason:
                self.recovering.add(inst_id)
                task = asyncio.get_running_loop().create_task(
                    self._lost(inst, target, reason), name=f"recover-{inst_id}"
                )
                self._tasks.add(task)  # the loop keeps only weak references to tasks
                task.add_done_callback(self._tasks.discard)
        known = {i.id for i in self.store.instances()}
        for route in snap.routes:
            if route.instance not in known and route.container not in self._orphans:
                self._orphans.add(route.container)
                log.warning(
                    "container %s (instance %s) is not in the control store; left alone",
                    route.name,
                    route.instance,
                )

    async def _lost(self, inst: Instance, target: Target, reason: str) -> None:
        try:
            await self.on_lost(inst, target, reason)
        except Exception:
            log.exception("recovery of %s failed; the next snapshot retries", inst.id)
        finally:
            self.recovering.discard(inst.id)
            # Judged again once a fresh target's start() has finished (it records itself).
            if self.started.get(inst.id, (None, None))[1] is target:
                del self.started[inst.id]


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
