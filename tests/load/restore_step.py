"""The load scenario's last step (issue 15): restore one team to "now" under load.

The restore pauses and drains the team, restores its database from the Litestream replica,
swaps it in and resumes. The scenario's exactly-once check then reads the *restored* file:
every POST that succeeded before or during the restore must be in it exactly once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

Op = Callable[..., Awaitable[None]]


async def restore_step(op: Op, team: str) -> None:
    await op(f"restore {team} to now", "restore", "--team", team)
