"""Tell whether a gateway is running on a data directory: it holds a shared flock on a file.

Shared, so a second gateway taking over during a restart can hold it too; the CLI probes
with an exclusive non-blocking lock. The kernel drops the lock when a gateway dies.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _lock_path(data_dir: Path) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir / "gateway.lock"


@contextmanager
def hold_running_lock(data_dir: Path) -> Iterator[None]:
    fd = os.open(_lock_path(data_dir), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def gateway_running(data_dir: Path) -> bool:
    fd = os.open(_lock_path(data_dir), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
