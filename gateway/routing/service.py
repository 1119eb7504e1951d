"""A service: one team's routing unit. It owns the active load balancer and the hold logic.

Requests to a known team with no healthy target are *held* (Traefik answers 404/502 there;
users hate it) until a target becomes healthy or the hold timeout passes. ``pause`` holds
requests deliberately; ``maintenance`` answers 503 with a message. Which of the three a
service is in is its ``admission`` (an explicit state, set only by ``pause``, ``resume`` and
``set_maintenance``): maintenance wins over a pause, and a pause still running when
maintenance ends holds again.

    OPEN --pause()--> PAUSED --resume() or its timer--> OPEN
    any --set_maintenance(message)--> MAINTENANCE --set_maintenance(None)--> PAUSED or OPEN
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Callable
from typing import Final

from gateway.observability.stats import Histogram
from gateway.routing.balancer import LoadBalancer
from gateway.routing.target import State, Target


class Admission(enum.StrEnum):
    OPEN = "open"  # requests go to a target (or are held until one is healthy)
    PAUSED = "paused"  # requests are held until resume() or the pause's timer
    MAINTENANCE = "maintenance"  # requests are answered 503 with the message


_OPEN: Final = Admission.OPEN  # a constant: pick() compares with it on every request


class Service:
    def __init__(self, name: str, hosts: list[str] | None = None) -> None:
        self.name = name
        self.hosts = hosts or []
        self.balancer = LoadBalancer()
        self.admission = Admission.OPEN
        self.paused_until: float | None = None  # while a pause runs (even under maintenance)
        self.maintenance: str | None = None  # the message, while in maintenance
        # Request sent to an instance -> its response head arrived (the proxy observes it).
        self.upstream_latency = Histogram()
        self._changed = asyncio.Event()
        self._pause_timer: asyncio.TimerHandle | None = None
        # Idle teams sleep (no targets; the fleet stopped its instance) and the first request
        # wakes them through ``waker`` (the fleet's, set when it routes the service).
        self.sleeping = False
        self.waker: Callable[[str], object] | None = None
        self.last_used = time.monotonic()
        self.holding = 0  # requests held for a target: the team is in use, never idle

    def touch(self) -> None:
        """A request arrived: the team is in use, and a sleeping one wakes (a team in
        maintenance answers its message without an instance, so it stays asleep)."""
        self.last_used = time.monotonic()
        waker = self.waker
        if self.sleeping and self.admission is not Admission.MAINTENANCE and waker is not None:
            waker(self.name)

    def targets(self) -> list[Target]:
        return self.balancer.targets

    def pick(self, exclude: Target | None = None) -> Target | None:
        if self.admission is not _OPEN:  # paused or in maintenance: no target
            return None
        return self.balancer.pick(exclude)

    async def wait_for_target(self, deadline: float) -> Target | None:
        """Hold until a healthy target appears, or the deadline passes.

        While the service is paused, requests are held for the whole pause instead, and no
        longer: the pause's end wakes them (``pause``), in the order they arrived, before a
        request that comes later can be picked.
        """
        self.holding += 1
        try:
            while True:
                target = self.pick()
                if target is not None or self.admission is Admission.MAINTENANCE:
                    return target
                now = time.monotonic()
                limit = max(deadline, self.paused_until or 0.0)
                if now >= limit:
                    return None
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), limit - now)
        finally:
            self.holding -= 1

    def notify(self) -> None:
        """Wake held requests: a target changed state, or the service was resumed."""
        self._changed.set()

    def add_target(self, target: Target) -> None:
        self.balancer.add(target)
        self.notify()

    def remove_target(self, target: Target) -> None:
        self.balancer.remove(target)
        self.notify()

    def swap(self, new: list[Target]) -> list[Target]:
        """Cut over atomically: new requests go to ``new``; returns the old targets."""
        old = self.balancer.targets
        self.balancer = LoadBalancer(new)
        self.notify()
        return old

    def pause(self, seconds: float) -> None:
        """Hold new requests for ``seconds`` (already clamped by the fleet); a timer ends it."""
        self.paused_until = time.monotonic() + seconds
        self._admit()
        if self._pause_timer is not None:
            self._pause_timer.cancel()
        self._pause_timer = asyncio.get_running_loop().call_later(seconds, self._pause_over)

    def _pause_over(self) -> None:
        self._pause_timer = None
        self.resume()

    def resume(self) -> None:
        if self._pause_timer is not None:
            self._pause_timer.cancel()
            self._pause_timer = None
        self.paused_until = None
        self._admit()
        self.notify()

    def set_maintenance(self, message: str | None) -> None:
        """Answer every request 503 with ``message`` (None ends it); held requests get it."""
        self.maintenance = message
        self._admit()
        self.notify()

    def _admit(self) -> None:
        if self.maintenance is not None:
            self.admission = Admission.MAINTENANCE
        elif self.paused_until is not None:
            self.admission = Admission.PAUSED
        else:
            self.admission = Admission.OPEN

    def state(self) -> str:
        if self.admission is Admission.MAINTENANCE:
            return "maintenance"
        if self.admission is Admission.PAUSED and time.monotonic() < (self.paused_until or 0):
            return "paused"
        if self.sleeping:
            return "sleeping"
        states = {t.state for t in self.balancer.targets}
        if State.HEALTHY in states:
            return "up"
        if State.STARTING in states:
            return "starting"
        return "down"
