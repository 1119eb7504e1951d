"""What every runtime offers the gateway: provision a team's volume, start and stop instances."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from gateway.routing.target import Target
from gateway.store.db import Instance

# (instance, its target, why): the fleet drains the target and relaunches the instance.
InstanceLost = Callable[[Instance, Target, str], Awaitable[None]]


class Runtime(Protocol):
    name: str
    # True when instances outlive the gateway (containers, or addresses it never started):
    # at shutdown their targets are detached, not stopped.
    detaches: bool
    # Instances that died and that the runtime restarted itself (local processes); those it
    # reports through ``watch`` are counted by the fleet.
    crashes: int

    def watch(self, on_instance_lost: InstanceLost) -> None:
        """Once the fleet runs: report each started instance lost behind the gateway's back
        (a killed container). Runtimes that restart their own, or never lose one, ignore it."""
        ...

    def version(self) -> str:
        """What a new instance runs (an image tag or a Datasette version)."""
        ...

    async def start(self, instance: Instance, target: Target) -> None:
        """Launch the instance and keep it running; ``target`` gets its address and health."""
        ...

    async def check_version(self, version: str) -> str:
        """Before a deploy starts anything: what ``version`` would run, or RuntimeUnavailable
        saying why it cannot (a missing or foreign image, another runtime's version)."""
        ...

    async def running_version(self, instance: Instance) -> str:
        """What the instance really runs, read back from where it runs (the deploy record)."""
        ...

    def problem(self) -> str:
        """Why the runtime cannot start instances now (no engine, no image), or ""."""
        ...

    async def stop(self, instance: Instance) -> None:
        """Stop the instance gracefully (after the gateway drained its target)."""
        ...

    async def close(self) -> None:
        """Stop every instance this runtime started (gateway shutdown)."""
        ...


def prepare_team_dir(team_dir: Path) -> Path:
    """Create the team's volume with a mutable ``data.db`` in WAL mode; idempotent."""
    team_dir.mkdir(parents=True, exist_ok=True)
    db_path = team_dir / "data.db"
    conn = sqlite3.connect(db_path)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
    return db_path
