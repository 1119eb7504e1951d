"""The fleet: keeps the route table in step with the control store and the runtime.

The CLI writes *desired* state to the store (a team exists, or is being deleted); a running
gateway notices within ``watch_interval`` through SQLite's ``data_version`` and reconciles:
new teams get an instance and a target, deleted teams are drained, stopped and removed.
The route table is always replaced as a whole snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from gateway import archive
from gateway.config import Config
from gateway.errors import ConfigError, TeamBusy, TeamNotFound
from gateway.idle import IdleTimeouts
from gateway.routing.health_checks import HealthMonitor
from gateway.routing.service import Service
from gateway.routing.signature import RequestSigner
from gateway.routing.table import RouteTable
from gateway.routing.target import DrainResult, Target
from gateway.runtimes.base import Runtime, prepare_team_dir
from gateway.store.db import Instance, Store

# (team slug, its database file) -> a context during which the file may be moved away.
VolumeGuard = Callable[[str, Path], AbstractAsyncContextManager[None]]

log = logging.getLogger("gateway.fleet")

FULL_RESYNC = 5.0  # seconds: reconcile even without a visible store change
BACKOFF_MAX = 30.0  # seconds at most between relaunches of an instance that keeps dying
STABLE_AFTER = 60.0  # seconds without a loss before the backoff starts afresh

# What each operation that replaces or removes a team's instance or file is called in refusals.
BUSY = {
    "restore": "being restored",
    "deploy": "being deployed",
    "delete": "being deleted",
    "sleep": "going to sleep",
    "move": "being moved to another node",
}


class Fleet:
    def __init__(
        self,
        config: Config,
        store: Store,
        runtime: Runtime,
        table: RouteTable,
        health: HealthMonitor,
        signer: RequestSigner | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.signer = signer or RequestSigner(
            lambda team: store.ensure_setting(f"instance_secret:{team}")
        )
        self.runtime = runtime
        self.table = table
        self.health = health
        self.services: dict[str, Service] = {}
        self.instances: dict[str, tuple[Instance, Target]] = {}
        self.drains: list[DrainResult] = []
        self.ready = False
        # Instances that died behind the gateway's back (docker kill, a crashed process).
        self.crashes = 0
        # Wraps the move of a deleted team's volume to the archive: replication (backups)
        # makes its final sync and lets go of the file first. None: nothing to wait for.
        self.volume_guard: VolumeGuard | None = None
        # team -> the one operation that holds it ("restore", "deploy", "delete"): two of them
        # at once would each stop the other's instance or swap a file under it (claim()).
        self.operations: dict[str, str] = {}
        self._released = asyncio.Event()  # set (and replaced) whenever an operation ends
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._backoff: dict[str, tuple[float, float]] = {}  # instance -> (delay, when)
        # Sleep and wake (idle teams): a team's own idle timeout where the store sets one;
        # the instance stops under way per sleeping team; the one wake under way per team.
        self.idle = IdleTimeouts(store, config.idle_timeout)
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._wakes: dict[str, asyncio.Task[None]] = {}
        self.wakes = 0  # gateway_team_wakes_total
        self.sleeps = 0  # gateway_team_sleeps_total

    async def start(self) -> None:
        self._forget_interrupted_deploys()
        await self.reconcile()
        self.ready = True
        self.runtime.watch(self.instance_lost)  # docker: follow the engine's containers
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="fleet-watch")

    async def reconcile(self) -> None:
        async with self._lock:
            teams = {t.slug: t for t in self.store.teams()}
            self.idle.load()
            wanted = {slug for slug, t in teams.items() if t.state == "active"}
            for slug in sorted(wanted - self.services.keys()):
                try:
                    self._add_team(slug)
                except Exception:
                    log.exception("could not start team %s; will retry", slug)
            self.table.replace(self.services)
            for slug in sorted(self.services.keys() - wanted):
                if slug in self.operations:
                    # A restore or deploy holds it: the delete (already in the store) waits
                    # for it and goes ahead at a later reconcile.
                    log.info("removal of %s waits for its %s", slug, self.operations[slug])
                    continue
                await self._remove_team(slug, deleting=slug in teams)
            for slug, team in teams.items():
                if team.state == "deleting" and slug not in self.services:
                    # Nothing of it runs here (a gateway died mid-delete): finish the delete.
                    await self._archive(slug)
            self._apply_maintenance()

    def _apply_maintenance(self) -> None:
        for row in self.store.query("SELECT slug, maintenance FROM teams"):
            service = self.services.get(row["slug"])
            if service is not None and service.maintenance != row["maintenance"]:
                service.set_maintenance(row["maintenance"])

    def _forget_interrupted_deploys(self) -> None:
        """A gateway killed mid-deploy leaves candidate instances: the old ones still serve."""
        with self.store.transaction() as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM instances WHERE role = 'candidate'")]
            conn.executemany("DELETE FROM targets WHERE instance_id = ?", [[i] for i in ids])
            conn.executemany("DELETE FROM instances WHERE id = ?", [[i] for i in ids])
            conn.execute(
                "UPDATE deploys SET status = 'failed', reason = 'interrupted', finished_at = ?"
                " WHERE status = 'running'",
                [time.time()],
            )

    async def _watch(self) -> None:
        version = self.store.data_version()
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.config.watch_interval)
            try:
                current = self.store.data_version()
                if current != version or time.monotonic() - last > FULL_RESYNC:
                    version, last = current, time.monotonic()
                    await self.reconcile()
                self.sleep_idle()
            except Exception:
                log.exception("reconcile failed; retrying")

    def _add_team(self, slug: str) -> None:
        prepare_team_dir(self.config.teams_dir / slug)
        instances = [i for i in self.store.instances(slug) if i.role == "active"]
        if not instances:
            instances = [
                self.store.add_instance(slug, self.runtime.name, version=self.runtime.version())
            ]
        service = Service(slug, hosts=[f"{slug}.{self.config.domain}"])
        service.waker = self.wake
        # A sleeper stays asleep across restarts: routed, no instance until a request comes.
        service.sleeping = self._asleep_in_store(slug)
        if not service.sleeping and self._full():
            # Beyond max_awake a team is routed asleep (a new one, or at a restart), so many
            # teams registered at once never start more instances than that.
            service.sleeping = True
            self._record_sleeping(slug, True)
            log.info("team %s starts asleep: max_awake (%d) reached", slug, self.config.max_awake)
        for inst in [] if service.sleeping else instances:
            self._launch(inst, service)
        self.services[slug] = service
        log.info("team %s routed at %s", slug, self.config.team_url(slug))

    def _launch(self, inst: Instance, service: Service) -> Target:
        target = self.new_target(inst, service)
        service.add_target(target)
        asyncio.get_running_loop().create_task(self.start_target(inst, target))
        return target

    async def instance_lost(self, inst: Instance, target: Target, reason: str) -> None:
        """The runtime saw ``inst`` die behind the gateway's back (``Runtime.watch``): drain
        its target now, then relaunch it, with backoff so one that keeps dying does not spin."""
        log.warning("instance %s: %s; draining its target now", inst.id, reason)
        self.crashes += 1
        await target.drain(self.config.drain_timeout)
        self.health.unwatch(target)
        service = self.services.get(inst.team)
        if service is not None:
            service.remove_target(target)
        if self.instances.get(inst.id, (None, None))[1] is target:
            del self.instances[inst.id]
        await asyncio.sleep(self._relaunch_delay(inst.id))
        if self.relaunch(inst) is not None:
            log.info("instance %s: replaced by a fresh target", inst.id)

    def relaunch(self, inst: Instance) -> Target | None:
        """Route and start a fresh target for ``inst``; None when its team is gone, it is no
        longer active, or it has a target already (deleted or replaced meanwhile)."""
        service = self.services.get(inst.team)
        wanted = {i.id for i in self.store.instances(inst.team) if i.role == "active"}
        if service is None or inst.id not in wanted or inst.id in self.instances:
            return None
        if service.sleeping:  # it went to sleep meanwhile: the next request starts it
            return None
        return self._launch(inst, service)

    def _relaunch_delay(self, inst_id: str) -> float:
        now = time.monotonic()
        delay, when = self._backoff.get(inst_id, (0.0, 0.0))
        delay = 0.0 if now - when > STABLE_AFTER else min(max(delay * 2, 0.5), BACKOFF_MAX)
        self._backoff[inst_id] = (delay, now)
        return delay

    def new_target(self, inst: Instance, service: Service) -> Target:
        """A target for ``inst``, reporting its state changes; not routed until added."""

        def changed(target: Target) -> None:
            service.notify()
            with contextlib.suppress(Exception):
                self.store.record_target(target.id, target.address, str(target.state))

        target = Target(
            inst.id,
            "127.0.0.1",
            inst.port or 0,
            idle_timeout=self.config.pool_idle_timeout,
            write_timeout=self.config.read_timeout,  # a target that stops reading the body
            on_change=changed,
            sign=lambda: self.signer.header(service.name),
        )
        self.instances[inst.id] = (inst, target)
        self.store.record_target(target.id, target.address, str(target.state))
        return target

    async def start_target(self, inst: Instance, target: Target) -> None:
        await self.runtime.start(inst, target)
        self.health.watch(target)

    async def _remove_team(self, slug: str, *, deleting: bool) -> None:
        with self.claim(slug, "delete"):
            await self._removing(slug, deleting=deleting)

    async def _removing(self, slug: str, *, deleting: bool) -> None:
        service = self.services[slug]
        results = await asyncio.gather(*(self.stop_target(t) for t in list(service.targets())))
        self.drains.extend(results)
        del self.services[slug]
        self.table.replace(self.services)
        if deleting:
            await self._archive(slug)
        log.info("team %s removed (%d target(s) drained)", slug, len(results))

    async def _archive(self, slug: str) -> None:
        if self.volume_guard is None:
            archive.delete_team(self.config, self.store, slug)
            return
        async with self.volume_guard(slug, self.config.teams_dir / slug / "data.db"):
            archive.delete_team(self.config, self.store, slug)

    async def stop_target(self, target: Target) -> DrainResult:
        """Drain first, then stop the instance: the order is the point (reliability.md)."""
        result = await target.drain(self.config.drain_timeout)
        self.health.unwatch(target)
        inst, _ = self.instances.pop(target.id, (None, None))
        if inst is not None:
            await self.runtime.stop(inst)
        return result

    def service(self, slug: str) -> Service | None:
        return self.services.get(slug)

    def require(self, slug: str) -> Service:
        service = self.services.get(slug)
        if service is None:
            raise TeamNotFound(f"no running team {slug!r}")
        return service

    # -- one operation per team at a time --------------------------------------------------------
    def check_free(self, slug: str) -> None:
        """Raise TeamBusy, naming what holds the team, if anything does."""
        held = self.operations.get(slug)
        if held is not None:
            raise TeamBusy(
                f"team {slug} is {BUSY.get(held, held)} right now; try again once that has finished"
            )

    @contextlib.contextmanager
    def claim(self, slug: str, operation: str) -> Iterator[None]:
        """Hold ``slug`` for ``operation``, or refuse at once (TeamBusy) if another holds it.
        Check and take happen in one step of the event loop, so two callers cannot both win."""
        self.check_free(slug)
        self.operations[slug] = operation
        try:
            yield
        finally:
            self._release(slug)

    # -- pause, resume, maintenance --------------------------------------------------------------
    def pause(self, slug: str, seconds: float) -> float:
        """Hold the team's new requests (never sent, so safe for every method) until resume
        or for ``seconds``, at most ``max_pause``: the one clamp. Returns the seconds applied."""
        if not math.isfinite(seconds) or seconds <= 0:
            raise ConfigError(f"seconds must be a positive number (got {seconds})")
        applied = min(seconds, self.config.max_pause)
        self.require(slug).pause(applied)
        return applied

    def resume(self, slug: str) -> None:
        self.require(slug).resume()

    def set_maintenance(self, slug: str, message: str | None) -> None:
        """Persisted, so the maintenance page survives a gateway restart."""
        self.require(slug)
        with self.store.transaction() as conn:
            conn.execute("UPDATE teams SET maintenance = ? WHERE slug = ?", [message, slug])
        self._apply_maintenance()

    # -- sleep and wake ---------------------------------------------------------------------------
    def _asleep_in_store(self, slug: str) -> bool:
        rows = self.store.query("SELECT sleeping FROM teams WHERE slug = ?", [slug])
        return bool(rows and rows[0]["sleeping"])

    def _record_sleeping(self, slug: str, sleeping: bool) -> None:
        with self.store.transaction() as conn:
            conn.execute("UPDATE teams SET sleeping = ? WHERE slug = ?", [int(sleeping), slug])

    def idle_timeout(self, slug: str) -> float:
        """Seconds without a request before ``slug`` sleeps; 0: never."""
        return self.idle.get(slug)

    def set_idle_timeout(self, slug: str, seconds: float | None) -> None:
        """The team's own idle timeout (0 = never), or None for the gateway's."""
        self.idle.set(slug, seconds)

    def _sleepable(self, service: Service) -> bool:
        """Awake, held by no operation or wake, not paused, no request held or in flight."""
        name = service.name
        return not (
            service.sleeping
            or name in self.operations
            or name in self._wakes
            or service.paused_until is not None
            or service.holding
            or any(t.inflight for t in service.targets())
        )

    def sleep_idle(self) -> list[str]:
        """Put every team idle past its timeout to sleep; returns their names."""
        now = time.monotonic()
        idle = []
        for slug, service in list(self.services.items()):
            timeout = self.idle_timeout(slug)
            idle_for = now - service.last_used
            if timeout > 0 and idle_for >= timeout and self.sleep(slug) is not None:
                idle.append(slug)
        return idle

    def sleep(self, slug: str) -> asyncio.Task[None] | None:
        """Unroute the team's targets now (one synchronous step: a request after it finds the
        team asleep and wakes it), then drain and stop its instances in a task. The volume
        and the instance rows stay, so a wake starts the same instance (at its version)."""
        service = self.services.get(slug)
        if service is None or not self._sleepable(service):
            return None
        self.operations[slug] = "sleep"  # a deploy, restore or delete waits its turn
        service.sleeping = True
        old = service.swap([])
        self._record_sleeping(slug, True)
        self.sleeps += 1

        async def stop() -> None:
            try:
                self.drains.extend(await asyncio.gather(*(self.stop_target(t) for t in old)))
                log.info("team %s sleeps (%d instance(s) stopped)", slug, len(old))
            finally:
                self._stopping.pop(slug, None)
                self._release(slug)

        task = asyncio.get_running_loop().create_task(stop(), name=f"sleep-{slug}")
        self._stopping[slug] = task
        return task

    async def _wait_free(self, slug: str, deadline: float) -> bool:
        """Wait until no operation holds ``slug``; False when one still does at ``deadline``."""
        while slug in self.operations:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), left)
        return True

    def _release(self, slug: str) -> None:
        del self.operations[slug]
        self._released.set()  # wakes every waiter, each rechecks; a fresh event for the next
        self._released = asyncio.Event()

    async def settled(self, slug: str) -> None:
        """Wait until a sleep under way has stopped the team's instances."""
        stopping = self._stopping.get(slug)
        if stopping is not None:
            await asyncio.shield(stopping)

    def wake(self, slug: str) -> asyncio.Task[None] | None:
        """Start a sleeping team's instance; concurrent callers share the one wake."""
        task = self._wakes.get(slug)
        if task is not None:
            return task
        service = self.services.get(slug)
        if service is None or not service.sleeping:
            return None
        task = asyncio.get_running_loop().create_task(self._wake(slug), name=f"wake-{slug}")
        self._wakes[slug] = task
        return task

    async def _wake(self, slug: str) -> None:
        try:
            await self.settled(slug)  # asleep a moment ago: its instance must be gone first
            # A deploy, restore or delete goes first: it may wake the team or remove it.
            if not await self._wait_free(slug, time.monotonic() + self.config.hold_timeout):
                log.warning("wake of %s gave up: it is %s", slug, BUSY.get(self.operations[slug]))
                return
            # One step of the event loop (no await): room counted and made, instance started.
            service = self.services.get(slug)
            if service is None or not service.sleeping:
                return
            self._make_room(slug)
            service.sleeping = False
            self._record_sleeping(slug, False)
            self.wakes += 1
            for inst in self.store.instances(slug):  # read now: a deploy may have moved it
                if inst.role == "active":
                    self.relaunch(inst)
            log.info("team %s wakes", slug)
        except Exception:
            log.exception("wake of %s failed; its held requests time out with 503", slug)
        finally:
            self._wakes.pop(slug, None)

    def _full(self) -> bool:
        limit = self.config.max_awake
        return bool(limit) and sum(not s.sleeping for s in self.services.values()) >= limit

    def _make_room(self, waking: str) -> None:
        """With ``max_awake`` reached, put the least recently used idle team to sleep first."""
        limit = self.config.max_awake
        while limit:
            awake = [s for n, s in self.services.items() if not s.sleeping and n != waking]
            if len(awake) < limit:
                return
            idle = [s for s in awake if self._sleepable(s)]
            if not idle:
                log.warning(
                    "max_awake (%d) reached and no awake team is idle; waking %s anyway",
                    limit,
                    waking,
                )
                return
            # Unrouted at once; its instance stops in the background while the wake starts
            # (an overlap of one stopping instance, not a wait of a drain and a stop).
            if self.sleep(min(idle, key=lambda s: s.last_used).name) is None:
                return

    def awake_now(self, slug: str) -> None:
        """An operation (a restore) started the team's instance itself: it is awake."""
        service = self.services.get(slug)
        if service is not None and service.sleeping:
            service.sleeping = False
            self._record_sleeping(slug, False)

    async def close(self) -> None:
        for task in list(self._wakes.values()):
            task.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.health.close()
        for _, target in self.instances.values():
            if self.runtime.detaches:
                target.detach()
                with contextlib.suppress(Exception):
                    self.store.record_target(target.id, target.address, "detached")
            else:
                target.stop()
        await self.runtime.close()
