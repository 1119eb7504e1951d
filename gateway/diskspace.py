"""A full disk is a state, not a crash: recognise out-of-space errors, answer them 507 with a
page that says so, and watch the data directory's free space (/metrics, /readyz)."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from pathlib import Path

from gateway.errors import InsufficientStorage

SPACE_ERRNOS = frozenset((errno.ENOSPC, errno.EDQUOT))
log = logging.getLogger("gateway.disk")


def out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is the disk or quota being full."""
    seen: BaseException | None = exc
    for _ in range(4):  # the error itself and a few causes: wrapped errors say the same
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in SPACE_ERRNOS:
            return True
        if isinstance(seen, sqlite3.OperationalError) and "disk is full" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def no_space() -> InsufficientStorage:
    return InsufficientStorage(
        "The service is out of storage space right now, so this change could not be saved. "
        "Nothing was lost; reading still works. Please try again later.",
        retry_after=60,
    )


def free_bytes(path: Path) -> int | None:
    """Bytes available to this process on ``path``'s file system (None if it cannot tell)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


class SpaceWatch:
    """The data directory's free space against ``min_free_mb``; warns once per low spell."""

    def __init__(self, path: Path, min_free_mb: int) -> None:
        self.path = path
        self.min_free = min_free_mb * 1024 * 1024
        self.low = False

    def problem(self) -> str:
        """ "" while there is room; else one line for /readyz, the log and the dashboard."""
        free = free_bytes(self.path)
        if free is None or free >= self.min_free:
            if self.low:
                log.info("storage space is back: %d MiB free in %s", (free or 0) >> 20, self.path)
            self.low = False
            return ""
        message = (
            f"only {free >> 20} MiB free in {self.path} (below --min-free-mb "
            f"{self.min_free >> 20}): writes will soon fail; free some space"
        )
        if not self.low:
            log.warning("%s", message)
        self.low = True
        return message
