"""The gateway's one log format: every line has a timestamp and the PID (two processes write
to the same log while ``gateway restart`` hands over), uvicorn's lines included, each once.

uvicorn runs one ``Server`` per listener (``gateway/listeners.py``); each would announce the
process's start and stop, so those lifecycle lines are let through once per process.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
# uvicorn's per-Server lifecycle messages (their format strings), logged once per process.
ONCE = frozenset(
    (
        "Started server process [%d]",
        "Waiting for application startup.",
        "Application startup complete.",
        "Shutting down",
        "Waiting for application shutdown.",
        "Application shutdown complete.",
        "Finished server process [%d]",
    )
)


class OncePerProcess(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("uvicorn") and record.msg in ONCE:
            key = str(record.msg)
            if key in self.seen:
                return False
            self.seen.add(key)
        return True


def configure(level: str) -> None:
    """Root logging for ``gateway serve``; uvicorn's loggers propagate to it (its own
    handlers, without timestamps, are not installed: ``log_config=None``)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(OncePerProcess())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
