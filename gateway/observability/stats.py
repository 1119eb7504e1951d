"""Request statistics kept as plain Python counters on the hot path.

``record`` is called once per request from ``Gateway.handle``: a dict lookup, two integer
increments and a bisect. The Prometheus collector (``prom.py``) turns these into metric
families only when ``/metrics`` is scraped, so a request never pays for prometheus-client's
label lookup and locking (``benchmarks/observability.py`` measures both side by side).

Each team also keeps a ring of per-``SLOT`` request counts for the dashboard's sparklines,
advanced lazily from the request's own end time (no timer task).
"""

from __future__ import annotations

import bisect
from collections import deque

# Latency buckets (seconds): Datasette pages are mostly 5-100 ms; big exports and uploads run long.
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SLOT = 10.0  # seconds per sparkline point
HISTORY = 60  # points kept: ten minutes


class TeamStats:
    __slots__ = ("buckets", "current", "history", "slot", "statuses", "sum")

    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.slot = 0
        self.current = 0
        self.history: deque[int] = deque(maxlen=HISTORY)

    @property
    def count(self) -> int:
        return sum(self.buckets)

    def advance(self, slot: int) -> None:
        """Move the sparkline ring forward to ``slot``, filling idle slots with zeros."""
        if slot <= self.slot:
            return
        if self.slot:
            self.history.append(self.current)
            for _ in range(min(slot - self.slot - 1, HISTORY)):
                self.history.append(0)
        self.slot = slot
        self.current = 0


class Histogram:
    """Counts per ``BUCKETS`` bound (the last is +Inf) and their sum: ``prom.py`` exports it."""

    __slots__ = ("buckets", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds


class RequestStats:
    def __init__(self) -> None:
        self.teams: dict[str, TeamStats] = {}
        # Events other parts report (login failures, imports...): name -> count.
        self.events: dict[str, int] = {}

    def record(self, team: str, status: int, seconds: float, now: float) -> None:
        """Count one finished request. ``now`` is a monotonic time (the request's end)."""
        st = self.teams.get(team)
        if st is None:
            st = self.teams[team] = TeamStats()
        st.statuses[status] = st.statuses.get(status, 0) + 1
        st.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        st.sum += seconds
        slot = int(now // SLOT)
        if slot != st.slot:
            st.advance(slot)
        st.current += 1

    def event(self, name: str, n: int = 1) -> None:
        """Count something that is not a request, e.g. ``login_failures`` (auth reports it)."""
        self.events[name] = self.events.get(name, 0) + n

    def sparkline(self, team: str, now: float) -> list[float]:
        """Requests per second over the last ``HISTORY`` slots, oldest first."""
        st = self.teams.get(team)
        if st is None:
            return [0.0] * HISTORY
        st.advance(int(now // SLOT))
        points = [*st.history, st.current]
        points = [0] * (HISTORY - len(points)) + points[-HISTORY:]
        return [p / SLOT for p in points]
