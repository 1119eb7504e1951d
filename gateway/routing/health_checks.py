"""Active HTTP health checks: one small loop per target.

A check is a GET of the target's health path on a fresh connection; any 2xx/3xx within the
timeout is a pass. While a target is STARTING it is probed every 20 ms for its first seconds
(a woken team's held requests wait on that first pass; a refused connect costs next to
nothing), then every 100 ms; once it has started, every ``interval`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.http.upstream import Pool, UpstreamError, build_head
from gateway.routing.target import State, Target

log = logging.getLogger("gateway.health")

STARTING_INTERVAL = 0.1
EARLY_INTERVAL = 0.02  # while a start is young, when most instances first answer
EARLY_FOR = 3.0  # seconds of a start probed at EARLY_INTERVAL


async def check(target: Target, timeout: float) -> tuple[bool, str]:
    pool = Pool(target.pool.host, target.pool.port)
    try:
        async with asyncio.timeout(timeout):
            conn = await pool.acquire(timeout)
            headers = [
                (b"host", b"localhost"),
                (b"user-agent", b"gateway-health"),
                (b"connection", b"close"),
            ]
            if target.sign is not None:  # instances answer only signed requests
                headers.append(target.sign())
            head = build_head("GET", target.health_path.encode(), headers)
            conn.begin(head, is_head=False)
            status, _ = await conn.response(timeout)
            while await conn.read(timeout):
                pass
            conn.close()
    except (UpstreamError, TimeoutError, OSError) as exc:
        return False, str(exc) or exc.__class__.__name__
    finally:
        pool.close()
    if 200 <= status < 400:
        return True, ""
    return False, f"health check answered {status}"


class HealthMonitor:
    def __init__(self, interval: float = 1.0, timeout: float = 5.0) -> None:
        self.interval = interval
        self.timeout = timeout
        self._tasks: dict[Target, asyncio.Task[None]] = {}
        # Failed checks by target id prefix (the team): gateway_health_check_failures_total.
        self.failures: dict[str, int] = {}

    def watch(self, target: Target) -> None:
        if target not in self._tasks:
            self._tasks[target] = asyncio.get_running_loop().create_task(
                self._loop(target), name=f"health-{target.id}"
            )

    def unwatch(self, target: Target) -> None:
        task = self._tasks.pop(target, None)
        if task is not None:
            task.cancel()

    async def _loop(self, target: Target) -> None:
        since = asyncio.get_running_loop().time()
        try:
            while target.state is not State.STOPPED:
                if target.state is not State.DRAINING:
                    ok, error = await check(target, self.timeout)
                    if not ok:
                        team = target.id.rsplit("-", 1)[0]
                        self.failures[team] = self.failures.get(team, 0) + 1
                    target.report_health(ok, error)
                target.pool.sweep()
                await asyncio.sleep(self._next_check(target, since))
        finally:
            self._tasks.pop(target, None)

    def _next_check(self, target: Target, since: float) -> float:
        if target.state is not State.STARTING:
            return self.interval
        young = asyncio.get_running_loop().time() - since < EARLY_FOR
        return EARLY_INTERVAL if young else STARTING_INTERVAL

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
