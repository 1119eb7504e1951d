"""A runtime whose instances already run somewhere: each team maps to fixed addresses.

For appliances that start Datasette themselves, and for tests that put real misbehaving
servers behind the gateway. It starts and stops nothing. A team may list several addresses:
its instances take them in the order they are started (one target each).
"""

from __future__ import annotations

from gateway.errors import RuntimeUnavailable
from gateway.routing.target import Target
from gateway.runtimes.base import InstanceLost
from gateway.store.db import Instance

Address = tuple[str, int]


class StaticRuntime:
    name = "static"
    detaches = True

    def __init__(self, addresses: dict[str, Address] | dict[str, list[Address]]) -> None:
        self.addresses: dict[str, list[Address]] = {
            team: list(value) if isinstance(value, list) else [value]
            for team, value in addresses.items()
        }
        self._given: dict[str, Address] = {}  # instance id -> address, stable across restarts
        self._count: dict[str, int] = {}  # team -> instances started so far
        self.crashes = 0  # it runs nothing, so nothing of its own crashes

    def watch(self, on_instance_lost: InstanceLost) -> None:
        return None  # what runs at an address is someone else's to restart

    def version(self) -> str:
        return "static"

    async def start(self, instance: Instance, target: Target) -> None:
        address = self._given.get(instance.id)
        if address is None:
            choices = self.addresses[instance.team]
            taken = self._count.get(instance.team, 0)
            self._count[instance.team] = taken + 1
            address = self._given[instance.id] = choices[taken % len(choices)]
        target.pool.host, target.pool.port = address

    async def check_version(self, version: str) -> str:
        if version != self.version():
            raise RuntimeUnavailable(
                f"the static runtime runs what is already there; cannot deploy {version!r}"
            )
        return version

    async def running_version(self, instance: Instance) -> str:
        return self.version()

    def problem(self) -> str:
        return ""

    async def stop(self, instance: Instance) -> None:
        return None

    async def close(self) -> None:
        return None
