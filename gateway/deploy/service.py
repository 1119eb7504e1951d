"""Zero-downtime deploys (kamal-proxy's sequence, plus the gateway's retries):

    1. start a new target with the same routing; it starts DOWN (STARTING)
    2. wait until it is healthy, within ``deploy_timeout``
    3. cut over atomically: new requests go to the new target
    4. drain the old target: in-flight requests finish; after ``drain_timeout`` stragglers get 504
    5. stop the old target, then remove it

If the new target never becomes healthy it is removed, and the old target, the routing and the
store stay exactly as they were. Every deploy is recorded in the ``deploys`` table, which also
gives ``rollback`` its previous version and lets an interrupted ``--all`` rollout resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from gateway.errors import GatewayError, TeamBusy, TeamNotFound
from gateway.fleet import Fleet
from gateway.routing.target import State, Target

log = logging.getLogger("gateway.deploy")


class DeployFailed(GatewayError):
    """The new instance never became healthy; nothing was changed."""


@dataclass
class DeployResult:
    team: str
    ok: bool
    from_version: str
    to_version: str
    reason: str = ""
    drained: int = 0
    cancelled: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class Deployer:
    def __init__(self, fleet: Fleet, deploy_timeout: float = 30.0) -> None:
        self.fleet = fleet
        self.deploy_timeout = deploy_timeout
        self._locks: dict[str, asyncio.Lock] = {}
        # Deploy outcomes as recorded (gateway_deploys_total{outcome} in /metrics).
        self.outcomes: dict[str, int] = {"succeeded": 0, "failed": 0}

    # -- one team --------------------------------------------------------------------------
    async def deploy(
        self, team: str, version: str | None = None, *, rollout: str | None = None
    ) -> DeployResult:
        lock = self._locks.setdefault(team, asyncio.Lock())
        async with lock:  # two deploys of one team take turns
            await self.fleet.settled(team)  # a team going to sleep is deployed once asleep
            try:
                self.fleet.check_free(team)
            except TeamBusy as exc:
                # A restore or delete holds the team: refused, not queued (a deploy after a
                # delete, or onto a file being swapped, is never what was meant). Not recorded
                # as a deploy, so a rollout's --resume deploys this team again.
                log.warning("deploy of %s refused: %s", team, exc)
                return DeployResult(team, False, "", version or "", str(exc))
            with self.fleet.claim(team, "deploy"):  # no await since the check: it cannot fail
                return await self._deploy(team, version, rollout)

    async def _deploy(self, team: str, version: str | None, rollout: str | None) -> DeployResult:
        fleet, store = self.fleet, self.fleet.store
        service = fleet.service(team)
        if service is None:
            raise TeamNotFound(f"no running team {team!r}")
        started = time.monotonic()
        if service.sleeping:
            asleep = await self._deploy_asleep(team, version, rollout, started)
            if asleep is not None:
                return asleep
        old_targets = list(service.targets())
        old_versions = {
            fleet.instances[t.id][0].version for t in old_targets if t.id in fleet.instances
        }
        from_version = ",".join(sorted(old_versions))
        to_version = version or fleet.runtime.version()
        deploy_id = self._record_start(team, rollout, from_version, to_version)
        if version:
            # Checked before anything starts: a foreign or missing image is refused at once,
            # as a failed result (never an exception a streaming caller could lose).
            try:
                await fleet.runtime.check_version(version)
            except GatewayError as exc:
                return self._failed(deploy_id, team, from_version, to_version, str(exc), started)

        inst = store.add_instance(team, fleet.runtime.name, role="candidate", version=to_version)
        target = fleet.new_target(inst, service)
        try:
            await fleet.start_target(inst, target)
            await self._wait_healthy(target)
            # The record says what really runs, as the runtime reads it back.
            running = await fleet.runtime.running_version(inst)
        except (DeployFailed, Exception) as exc:
            await self._discard(inst.id, target)
            reason = str(exc) or exc.__class__.__name__
            return self._failed(deploy_id, team, from_version, to_version, reason, started)
        if running != to_version:
            to_version = running
            with store.transaction() as conn:
                conn.execute("UPDATE instances SET version = ? WHERE id = ?", [running, inst.id])
                conn.execute("UPDATE deploys SET to_version = ? WHERE id = ?", [running, deploy_id])

        # Cut over: one synchronous step, so no request sees a half-swapped service.
        service.swap([target])
        with store.transaction() as conn:
            conn.execute("UPDATE instances SET role = 'active' WHERE id = ?", [inst.id])
            conn.executemany(
                "UPDATE instances SET role = 'retired' WHERE id = ?", [[t.id] for t in old_targets]
            )
        results = await asyncio.gather(*(fleet.stop_target(t) for t in old_targets))
        fleet.drains.extend(results)
        for t in old_targets:
            store.remove_instance(t.id)
        drained = sum(r.completed for r in results)
        cancelled = sum(r.cancelled for r in results)
        self._record_end(deploy_id, "succeeded", "", drained, cancelled)
        self.outcomes["succeeded"] += 1
        log.info(
            "deployed %s %s -> %s (%d drained, %d cut)",
            team,
            from_version,
            to_version,
            drained,
            cancelled,
        )
        return DeployResult(
            team, True, from_version, to_version, "", drained, cancelled, time.monotonic() - started
        )

    async def _deploy_asleep(
        self, team: str, version: str | None, rollout: str | None, started: float
    ) -> DeployResult | None:
        """A sleeping team's deploy records the new version and starts nothing: the next
        request wakes it on that version. None when it woke meanwhile (deploy it awake)."""
        fleet, store = self.fleet, self.fleet.store
        to_version = version or fleet.runtime.version()
        error = ""
        if version:
            try:
                to_version = await fleet.runtime.check_version(version)
            except GatewayError as exc:
                error = str(exc)
        service = fleet.service(team)
        if service is None or not service.sleeping:
            return None
        active = [i for i in store.instances(team) if i.role == "active"]
        from_version = ",".join(sorted({i.version for i in active}))
        deploy_id = self._record_start(team, rollout, from_version, to_version)
        if error:
            return self._failed(deploy_id, team, from_version, to_version, error, started)
        with store.transaction() as conn:
            conn.executemany(
                "UPDATE instances SET version = ? WHERE id = ?",
                [[to_version, i.id] for i in active],
            )
        self._record_end(deploy_id, "succeeded", "asleep: starts on its next request")
        self.outcomes["succeeded"] += 1
        log.info("deployed sleeping %s %s -> %s (nothing started)", team, from_version, to_version)
        return DeployResult(
            team,
            True,
            from_version,
            to_version,
            "asleep: starts on its next request",
            seconds=time.monotonic() - started,
        )

    def _failed(
        self, deploy_id: int, team: str, src: str, dst: str, reason: str, started: float
    ) -> DeployResult:
        self._record_end(deploy_id, "failed", reason)
        self.outcomes["failed"] += 1
        log.warning("deploy of %s failed: %s", team, reason)
        return DeployResult(team, False, src, dst, reason, seconds=time.monotonic() - started)

    async def _wait_healthy(self, target: Target) -> None:
        deadline = time.monotonic() + self.deploy_timeout
        while target.state is not State.HEALTHY:
            if target.start_error:  # the runtime already knows it will never start
                raise DeployFailed(target.start_error)
            if time.monotonic() > deadline:
                detail = f": {target.last_error}" if target.last_error else ""
                raise DeployFailed(
                    f"the new instance did not become healthy within {self.deploy_timeout:.0f}s"
                    + detail
                )
            await asyncio.sleep(0.05)

    async def _discard(self, instance_id: str, target: Target) -> None:
        fleet = self.fleet
        fleet.health.unwatch(target)
        target.stop()
        inst, _ = fleet.instances.pop(instance_id, (None, None))
        if inst is not None:
            with contextlib.suppress(Exception):
                await fleet.runtime.stop(inst)
        fleet.store.remove_instance(instance_id)

    # -- rollback and rollouts -----------------------------------------------------------------
    def previous_version(self, team: str) -> str:
        rows = self.fleet.store.query(
            "SELECT from_version, to_version FROM deploys WHERE team = ? AND status = 'succeeded'"
            " ORDER BY id DESC LIMIT 1",
            [team],
        )
        if not rows or not rows[0]["from_version"]:
            raise DeployFailed(f"team {team!r} has no earlier version to roll back to")
        return str(rows[0]["from_version"]).split(",")[0]

    async def rollback(self, team: str) -> DeployResult:
        return await self.deploy(team, self.previous_version(team))

    async def deploy_all(
        self,
        version: str | None = None,
        *,
        parallel: int = 2,
        rollout: str | None = None,
        on_done: Callable[[DeployResult], None] | None = None,
    ) -> tuple[str, list[DeployResult]]:
        """Roll through every team, ``parallel`` at a time. Passing an earlier ``rollout`` id
        resumes it: teams that already succeeded in it are skipped."""
        rollout = rollout or new_rollout_id()
        teams = self.pending(rollout)
        gate = asyncio.Semaphore(max(1, parallel))
        results: list[DeployResult] = []

        async def one(team: str) -> None:
            async with gate:
                result = await self.deploy(team, version, rollout=rollout)
                results.append(result)
                if on_done is not None:
                    on_done(result)

        await asyncio.gather(*(one(t) for t in teams))
        return rollout, results

    def pending(self, rollout: str) -> list[str]:
        """The teams a rollout has still to deploy: all but those it already succeeded on."""
        done = {
            r["team"]
            for r in self.fleet.store.query(
                "SELECT team FROM deploys WHERE rollout = ? AND status = 'succeeded'", [rollout]
            )
        }
        return [t for t in sorted(self.fleet.services) if t not in done]

    # -- the deploys table ---------------------------------------------------------------------
    def _record_start(self, team: str, rollout: str | None, src: str, dst: str) -> int:
        with self.fleet.store.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO deploys (team, rollout, from_version, to_version, status, started_at)"
                " VALUES (?, ?, ?, ?, 'running', ?)",
                [team, rollout, src, dst, time.time()],
            )
            return int(cur.lastrowid or 0)

    def _record_end(
        self, deploy_id: int, status: str, reason: str, drained: int = 0, cancelled: int = 0
    ) -> None:
        with self.fleet.store.transaction() as conn:
            conn.execute(
                "UPDATE deploys SET status = ?, reason = ?, drained = ?, cancelled = ?,"
                " finished_at = ? WHERE id = ?",
                [status, reason, drained, cancelled, time.time(), deploy_id],
            )

    def history(self, team: str | None = None, limit: int = 50) -> list[dict[str, object]]:
        if team:
            rows = self.fleet.store.query(
                "SELECT * FROM deploys WHERE team = ? ORDER BY id DESC LIMIT ?", [team, limit]
            )
        else:
            rows = self.fleet.store.query("SELECT * FROM deploys ORDER BY id DESC LIMIT ?", [limit])
        return [dict(r) for r in rows]


def new_rollout_id() -> str:
    return f"r-{int(time.time())}-{secrets.token_hex(3)}"
