"""The route table: host -> service, replaced as a whole snapshot (never patched in place)."""

from __future__ import annotations

from gateway.routing.service import Service


def normalize_host(raw: bytes) -> str | None:
    """Lower-case host without port or trailing dot; None when the header is malformed."""
    if not raw or len(raw) > 255:
        return None
    try:
        host = raw.decode("ascii").lower()
    except UnicodeDecodeError:
        return None
    if host.startswith("["):  # IPv6 literal: [::1]:8000
        end = host.find("]")
        if end < 0:
            return None
        rest = host[end + 1 :]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        return host[: end + 1]
    name, sep, port = host.partition(":")
    if sep and (not port.isdigit() or len(port) > 5):
        return None
    if name.endswith("."):
        name = name[:-1]
    if not name or not all(c.isalnum() or c in "-." for c in name) or ".." in name:
        return None
    return name


class RouteTable:
    def __init__(self, services: dict[str, Service] | None = None) -> None:
        self._by_host: dict[str, Service] = {}
        self.services: dict[str, Service] = {}
        if services:
            self.replace(services)

    def replace(self, services: dict[str, Service]) -> None:
        """Swap in a full snapshot of services (name -> service)."""
        by_host: dict[str, Service] = {}
        for service in services.values():
            for host in service.hosts:
                by_host[host.lower().rstrip(".")] = service
        self.services = dict(services)
        self._by_host = by_host

    def lookup(self, host: str) -> Service | None:
        return self._by_host.get(host)

    def routes(self) -> list[tuple[str, str]]:
        return sorted((h, s.name) for h, s in self._by_host.items())
