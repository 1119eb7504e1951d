"""Abuse limits on self-service sign-up: each success starts a Datasette (~48 MB).

* per client IP: at most ``signups_per_ip_hour`` successful registrations in an hour;
* for the whole gateway: at most ``signups_per_hour``;
* for the host: at most ``max_teams`` teams; beyond it sign-ups are closed (the CLI's
  ``teams create --force`` may still add one).

Counted in memory, like the sign-in throttle (throttle.py): a restart forgets an hour of
sign-ups at most. 0 turns a limit off.
"""

from __future__ import annotations

import time
from collections import deque

from gateway.errors import TooManyRequests

WINDOW = 3600.0


class Signups:
    def __init__(self, per_ip: int, per_hour: int) -> None:
        self.per_ip = per_ip
        self.per_hour = per_hour
        self._all: deque[float] = deque()
        self._by_ip: dict[str, deque[float]] = {}

    def check(self, ip: str) -> None:
        """Raise 429 when this IP, or the gateway as a whole, has had enough sign-ups."""
        now = time.monotonic()
        if self.per_ip:
            wait = _wait(self._by_ip.get(ip), self.per_ip, now)
            if wait:
                raise TooManyRequests(
                    f"Too many new accounts were made from your network in the last hour. "
                    f"Please try again in {_minutes(wait)}.",
                    retry_after=wait,
                )
        if self.per_hour:
            wait = _wait(self._all, self.per_hour, now)
            if wait:
                raise TooManyRequests(
                    f"We are taking many sign-ups right now. Please try again in {_minutes(wait)}.",
                    retry_after=wait,
                )

    def record(self, ip: str) -> None:
        now = time.monotonic()
        self._all.append(now)
        self._by_ip.setdefault(ip, deque()).append(now)
        if len(self._by_ip) > 100_000:  # bound memory against address sprays
            self._by_ip.clear()


def _wait(times: deque[float] | None, limit: int, now: float) -> int:
    if not times:
        return 0
    while times and now - times[0] > WINDOW:
        times.popleft()
    if len(times) < limit:
        return 0
    return int(times[-limit] + WINDOW - now) + 1


def _minutes(seconds: int) -> str:
    minutes = max(1, (seconds + 59) // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def sign_ups_closed(team_count: int, max_teams: int) -> bool:
    return bool(max_teams) and team_count >= max_teams
