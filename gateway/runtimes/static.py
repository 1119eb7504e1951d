"""A runtime whose instances already run somewhere: each team maps to fixed addresses.

For appliances that start Datasette themselves, and for tests that put real misbehaving
servers behind the gateway. It starts and stops nothing.
"""

from __future__ import annotations

from gateway.routing.target import Target
from gateway.store.db import Instance


class StaticRuntime:
    name = "static"

    def __init__(self, addresses: dict[str, tuple[str, int]]) -> None:
        self.addresses = dict(addresses)

    def version(self) -> str:
        return "static"

    async def start(self, instance: Instance, target: Target) -> None:
        host, port = self.addresses[instance.team]
        target.pool.host, target.pool.port = host, port

    async def stop(self, instance: Instance) -> None:
        return None

    async def close(self) -> None:
        return None
