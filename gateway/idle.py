"""Each team's idle timeout: the gateway's ``idle_timeout``, or the team's own from the
control store (set by `gateway teams idle-timeout` or the admin API). The fleet asks it how
long a team may go without a request before it sleeps (docs/sleeping.md)."""

from __future__ import annotations

import math

from gateway.errors import ConfigError
from gateway.store.db import Store


def idle_timeout_value(raw: object) -> float | None:
    """A team's own idle timeout as the CLI and the admin API take it: seconds (0: never
    sleeps), or "default" / None for the gateway's ``idle_timeout``. ConfigError says why not."""
    if raw is None or raw == "default":
        return None
    if isinstance(raw, str):
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{raw!r} is not seconds: give seconds or 'default'") from None
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    else:
        raise ConfigError(f"{raw!r} is not seconds: give seconds or 'default'")
    if not 0 <= value < math.inf:  # NaN fails too
        raise ConfigError(f"{raw!r}: give 0 (never sleeps) or more seconds")
    return value


class IdleTimeouts:
    """The teams' own idle timeouts, read from the store (``load``) when it changes."""

    def __init__(self, store: Store, default: float) -> None:
        self.store = store
        self.default = default
        self._own: dict[str, float] = {}

    def load(self) -> None:
        rows = self.store.query(
            "SELECT slug, idle_timeout FROM teams WHERE idle_timeout IS NOT NULL"
        )
        self._own = {r["slug"]: float(r["idle_timeout"]) for r in rows}

    def own(self, slug: str) -> float | None:
        """The team's own timeout, or None when it follows the gateway's."""
        return self._own.get(slug)

    def get(self, slug: str) -> float:
        """Seconds without a request before ``slug`` sleeps; 0: never."""
        return self._own.get(slug, self.default)

    def set(self, slug: str, seconds: float | None) -> None:
        """The team's own idle timeout (0 = never), or None for the gateway's."""
        self.store.set_idle_timeout(slug, idle_timeout_value(seconds))
        self.load()
