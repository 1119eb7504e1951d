"""Stopping a uvicorn server started by a test, without hiding how it stopped.

A gateway's lifespan shutdown is where instances stop and drains happen: uvicorn only logs a
failing shutdown ("Application shutdown failed") and returns normally, so a fixture that
suppressed errors around it let such a failure pass unseen. ``stop_server`` raises instead.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn


class ShutdownFailed(AssertionError):
    """A server the test started did not stop cleanly."""


async def stop_server(server: uvicorn.Server, task: asyncio.Future[Any], timeout: float) -> None:
    server.should_exit = True
    try:
        await asyncio.wait_for(task, timeout)
    except TimeoutError as exc:
        raise ShutdownFailed(f"the server did not stop within {timeout}s") from exc
    lifespan = getattr(server, "lifespan", None)
    # uvicorn's flags: the app's lifespan raised, at startup or shutdown (older uvicorn spelt
    # the second one "error_occured").
    flags = ("shutdown_failed", "error_occurred", "error_occured")
    if any(getattr(lifespan, flag, False) for flag in flags):
        raise ShutdownFailed("the app's lifespan shutdown failed (see the log above)")
