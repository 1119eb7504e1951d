"""What the public listener allows one client: sizes, deadlines and connection caps.

``gateway/http/protocol.py`` enforces these while it parses (docs/reliability.md, "hostile
clients"). They reach it on the uvicorn config (``ListenerConfig``); a plain
``uvicorn.Config`` gets the defaults, which are ``Config``'s.

The connection counts live here, shared by every connection of one listener: the protocol
asks ``admit`` when a connection opens and calls ``release`` when it is lost.
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn

log = logging.getLogger("gateway.limits")

REFUSAL_LOG_INTERVAL = 10.0  # seconds: one warning per interval under a flood, with the count


@dataclass
class ListenerLimits:
    max_request_line: int = 8192
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    body_idle_timeout: float = 30.0
    max_connections: int = 10_000
    max_connections_per_ip: int = 256
    # Peers whose connections carry many clients (Traefik): never capped per IP.
    trusted_proxies: frozenset[str] = frozenset()
    # -- the counts (state, not settings) --
    open: int = 0
    per_ip: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    _refused_logged: int = 0
    _last_log: float = 0.0

    @classmethod
    def from_config(cls, config: Any) -> ListenerLimits:
        """From a ``gateway.config.Config`` (typed loosely: config imports nothing from here)."""
        return cls(
            max_request_line=config.max_request_line,
            max_header_bytes=config.max_header_bytes,
            max_headers=config.max_headers,
            header_timeout=config.header_timeout,
            body_idle_timeout=config.body_idle_timeout,
            max_connections=config.max_connections,
            max_connections_per_ip=config.max_connections_per_ip,
            trusted_proxies=config.trusted_proxy_set,
        )

    def admit(self, ip: str) -> bool:
        """Count a new connection from ``ip``; False (and nothing counted) over a cap."""
        if self.open >= self.max_connections:
            self._refuse("max_connections", ip)
            return False
        if ip not in self.trusted_proxies:
            held = self.per_ip.get(ip, 0)
            if held >= self.max_connections_per_ip:
                self._refuse("max_connections_per_ip", ip)
                return False
            self.per_ip[ip] = held + 1
        self.open += 1
        return True

    def release(self, ip: str) -> None:
        self.open -= 1
        held = self.per_ip.get(ip)
        if held is not None:
            if held <= 1:
                del self.per_ip[ip]
            else:
                self.per_ip[ip] = held - 1

    def _refuse(self, cap: str, ip: str) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self._last_log >= REFUSAL_LOG_INTERVAL:
            log.warning(
                "refused connections over %s (%d since the last warning; latest from %s)",
                cap,
                self.refused - self._refused_logged,
                ip,
            )
            self._last_log = now
            self._refused_logged = self.refused


class ListenerConfig(uvicorn.Config):
    """uvicorn's config with the public listener's limits attached."""

    def __init__(self, app: Any, limits: ListenerLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits


def limits_of(config: uvicorn.Config) -> ListenerLimits:
    """The limits for connections served under ``config``: one object per listener."""
    if isinstance(config, ListenerConfig):
        return config.limits
    made = getattr(config, "_gateway_limits", None)
    if made is None:
        made = ListenerLimits()
        config._gateway_limits = made  # type: ignore[attr-defined]  # one per plain config
    return made


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft open-files limit to the hard one (each client and upstream is an fd)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard and hard != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, hard, exc)
            return soft, hard
    new, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    log.info("open-files limit: soft %d (was %d), hard %d", new, soft, hard)
    return new, hard
