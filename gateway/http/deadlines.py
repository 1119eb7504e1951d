"""Coarse deadlines for the hot path: one periodic tick instead of one timer per wait.

A uvloop ``call_later`` plus its ``cancel`` is costly on the hot path, and a proxied request
would arm three of them (the client's keep-alive, the disconnect watcher, the wait for the
target's answer), nearly all cancelled long before they fired. Here a wait is one dict entry;
a single timer, armed only while entries exist, fires every ``RESOLUTION`` seconds and runs
the callbacks whose deadline has passed. A deadline therefore fires up to ``RESOLUTION`` late,
which is noise against the timeouts it serves (seconds).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any

RESOLUTION = 0.05  # seconds


class Deadlines:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.entries: dict[Hashable, tuple[float, Callable[[Any], None], Any]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, key: Hashable, delay: float, callback: Callable[[Any], None], arg: Any) -> None:
        """Call ``callback(arg)`` once ``delay`` seconds have passed, unless ``discard(key)``."""
        self.entries[key] = (self.loop.time() + delay, callback, arg)
        if self._timer is None:
            self._timer = self.loop.call_later(RESOLUTION, self._tick)

    def discard(self, key: Hashable) -> None:
        self.entries.pop(key, None)

    def _tick(self) -> None:
        self._timer = None
        now = self.loop.time()
        due = [key for key, (deadline, _, _) in self.entries.items() if deadline <= now]
        for key in due:
            entry = self.entries.pop(key, None)
            if entry is not None:
                entry[1](entry[2])
        if self.entries and self._timer is None:
            self._timer = self.loop.call_later(RESOLUTION, self._tick)


_last: tuple[asyncio.AbstractEventLoop, Deadlines] | None = None


def deadlines(loop: asyncio.AbstractEventLoop) -> Deadlines:
    """The ``Deadlines`` of ``loop`` (one per loop; a process normally runs one loop)."""
    global _last
    last = _last
    if last is not None and last[0] is loop:
        return last[1]
    made = Deadlines(loop)
    _last = (loop, made)
    return made
