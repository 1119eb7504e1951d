"""The team's import lock: one writer of a team's ``data.db`` outside Datasette at a time.

The import worker holds it for a whole import (the next import into that database waits,
"queued"); the dashboard's table edits and the trash's recovery take it for their short
transaction; a restore takes it without waiting and refuses while an import runs. It is an
``flock`` on ``.spool/data.db.import-lock``, so it holds across the worker processes and is
released by the kernel when a holder dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = "data.db.import-lock"


@contextlib.contextmanager
def import_lock(team_dir: Path, wait: bool = True) -> Iterator[None]:
    """Hold the lock of ``team_dir``'s database; ``wait=False`` raises BlockingIOError at
    once when another holder has it."""
    spool = team_dir / ".spool"
    spool.mkdir(parents=True, exist_ok=True)  # a restored team's volume may be new
    fd = os.open(spool / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)
