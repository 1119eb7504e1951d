"""A target: one running Datasette (process or container) that requests can be sent to.

States (kamal-proxy's model): a target starts STARTING and takes no traffic until its first
health check passes. Only two entry points change the state: ``report_health`` (active health
checks, or the runtime noticing the instance died) and ``drain``.

    STARTING --ok--> HEALTHY --fail x2--> UNHEALTHY --ok--> HEALTHY
        any --drain()--> DRAINING --in-flight 0 or timeout--> STOPPED
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.http.upstream import Pool

log = logging.getLogger("gateway.target")

# Consecutive failed checks before a healthy target stops taking traffic: one lost probe
# under load should not flap a team's only target.
UNHEALTHY_AFTER = 2


class State(enum.StrEnum):
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclass
class DrainResult:
    target: str
    completed: int  # in-flight requests that finished within the timeout
    cancelled: int  # stragglers answered 504 (or cut) when the timeout expired
    seconds: float


class Target:
    def __init__(
        self,
        id: str,
        host: str,
        port: int,
        *,
        health_path: str = "/-/health",
        idle_timeout: float = 2.0,
        write_timeout: float = 60.0,
        on_change: Callable[[Target], None] | None = None,
        sign: Callable[[], tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.id = id
        self.health_path = health_path
        self.sign = sign  # the gateway's signature header for health checks (signature.py)
        self.state = State.STARTING
        self.inflight = 0
        self.served = 0
        self.failures = 0
        self.last_check: float | None = None
        self.last_error = ""
        # Set when the runtime could not start the instance at all (no such image, no engine):
        # a deploy or `teams create` waiting for health stops at once with this reason.
        self.start_error = ""
        self.pool = Pool(host, port, idle_timeout=idle_timeout, write_timeout=write_timeout)
        self._on_change = on_change
        self._idle = asyncio.Event()
        self._idle.set()

    def __repr__(self) -> str:
        return f"<Target {self.id} {self.address} {self.state}>"

    @property
    def address(self) -> str:
        return self.pool.address

    @property
    def available(self) -> bool:
        return self.state is State.HEALTHY

    # -- requests -------------------------------------------------------------------------
    def start_request(self) -> bool:
        """Count a request in; refused once the target is draining or stopped."""
        if self.state is State.DRAINING or self.state is State.STOPPED:
            return False
        self.inflight += 1
        self._idle.clear()
        return True

    def end_request(self) -> None:
        self.inflight -= 1
        self.served += 1
        if self.inflight <= 0:
            self.inflight = 0
            self._idle.set()

    # -- state changes --------------------------------------------------------------------
    def report_health(self, ok: bool, error: str = "", *, fatal: bool = False) -> None:
        """A check result. ``fatal`` (or "exited"): the instance is surely gone, act at once."""
        self.last_check = time.time()
        if self.state in (State.DRAINING, State.STOPPED):
            return
        if ok:
            self.failures = 0
            self.last_error = ""
            self.start_error = ""
            self._set(State.HEALTHY)
            return
        self.failures += 1
        # A failed start stays the reason: "cannot connect to :0" would only hide it.
        self.last_error = self.start_error or error
        if (
            self.state is State.HEALTHY
            and self.failures < UNHEALTHY_AFTER
            and not fatal
            and error != "exited"
        ):
            return
        if self.state is not State.STARTING:
            self._set(State.UNHEALTHY)
        # Idle connections to a failing target are likely dead; drop them now.
        self.pool.close_idle()

    def fail_start(self, error: str) -> None:
        """The runtime could not start the instance; the reason is kept for every caller."""
        self.start_error = self.last_error = error
        self.last_check = time.time()
        if self._on_change is not None:
            self._on_change(self)

    async def drain(self, timeout: float) -> DrainResult:
        """Take no new requests, let in-flight ones finish, then cut stragglers (504)."""
        started = time.monotonic()
        before = self.inflight
        if self.state is not State.STOPPED:
            self._set(State.DRAINING)
        self.pool.close_idle()
        cancelled = 0
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            cancelled = self.pool.abort_active("drain timeout")
            log.warning("drain of %s timed out; %d request(s) cut", self.id, cancelled)
        self.stop()
        return DrainResult(
            self.id, max(before - cancelled, 0), cancelled, time.monotonic() - started
        )

    def stop(self) -> None:
        self.pool.close()
        self._set(State.STOPPED)

    def detach(self) -> None:
        """Stop routing to it at shutdown while its instance keeps running (a container that
        the next gateway adopts): logged as what it is, not as a stop."""
        self.pool.close()
        if self.state is not State.STOPPED:
            log.info("target %s %s -> detached (its instance keeps running)", self.id, self.state)
            self.state = State.STOPPED

    def _set(self, state: State) -> None:
        if state is self.state:
            return
        log.info("target %s %s -> %s", self.id, self.state, state)
        self.state = state
        if self._on_change is not None:
            self._on_change(self)

    def snapshot(self) -> dict[str, object]:
        return {
            "id": self.id,
            "address": self.address,
            "state": str(self.state),
            "inflight": self.inflight,
            "served": self.served,
            "connections": self.pool.connections(),
            "last_check": self.last_check,
            "last_error": self.last_error,
            "start_error": self.start_error,
        }
