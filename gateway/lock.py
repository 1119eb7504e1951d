"""One gateway per data directory: an exclusive flock on ``<data_dir>/gateway.lock``.

The serving gateway holds the lock for its whole life and writes its PID into the file. A
second ``gateway serve`` on the same directory is refused at once, naming that PID. During
``gateway restart`` the successor inherits the very same open file (``GATEWAY_LOCK_FD``), so
the lock is handed over, never released in between; the kernel drops it when the last holder
dies. The CLI only probes: it never creates the directory or the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from gateway.errors import ConfigError, GatewayError

LOCK_FILE = "gateway.lock"
LOCK_FD_ENV = "GATEWAY_LOCK_FD"  # set by a restarting gateway: the lock's fd, inherited
# A CLI probe holds a shared lock for a few microseconds; a starting gateway retries that long.
_CONTENDED_FOR = 0.5


class AlreadyServing(GatewayError):
    pass


def _lock_path(data_dir: Path) -> Path:
    return data_dir / LOCK_FILE


def prepare_data_dir(data_dir: Path) -> None:
    """Create the data directory, or say in one line why it cannot be used."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise ConfigError(
            f"--data-dir {data_dir}: {exc.filename} is a file, not a directory; "
            "choose another --data-dir"
        ) from exc
    except NotADirectoryError as exc:
        raise ConfigError(
            f"--data-dir {data_dir}: a parent is a file, not a directory; choose another --data-dir"
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"--data-dir {data_dir}: cannot create it ({exc.strerror}); "
            "create it or choose another --data-dir"
        ) from exc
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise ConfigError(
            f"--data-dir {data_dir} is not writable by this user; fix its permissions "
            "or choose another --data-dir"
        )


class DataDirLock:
    """The exclusive lock of one data directory, held by the serving gateway."""

    def __init__(self, data_dir: Path, fd: int) -> None:
        self.data_dir = data_dir
        self.fd = fd

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        inherited = os.environ.pop(LOCK_FD_ENV, "")
        if inherited:
            return cls._take_over(data_dir, int(inherited))
        prepare_data_dir(data_dir)
        try:
            fd = os.open(_lock_path(data_dir), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(
                f"--data-dir {data_dir}: cannot open {LOCK_FILE} ({exc.strerror}); "
                "fix its permissions or choose another --data-dir"
            ) from exc
        deadline = time.monotonic() + _CONTENDED_FOR
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    pid = _read_pid(fd)
                    os.close(fd)
                    who = f"gateway PID {pid}" if pid else "another gateway"
                    raise AlreadyServing(
                        f"{who} already serves {data_dir}; stop it, use `gateway restart`, "
                        "or give another --data-dir"
                    ) from None
                time.sleep(0.02)
        lock = cls(data_dir, fd)
        lock.claim()
        return lock

    @classmethod
    def _take_over(cls, data_dir: Path, fd: int) -> DataDirLock:
        # The same open file as the parent's: flock on it succeeds at once (we share the lock).
        same = os.fstat(fd)
        try:
            on_disk = os.stat(_lock_path(data_dir))
        except OSError:
            on_disk = None
        if on_disk is None or (on_disk.st_dev, on_disk.st_ino) != (same.st_dev, same.st_ino):
            raise ConfigError(
                f"the restarting gateway handed over the lock of another data dir than {data_dir}"
            )
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.set_inheritable(fd, False)
        lock = cls(data_dir, fd)
        lock.claim()
        return lock

    def claim(self) -> None:
        """Record this process as the one that serves (a successor, or us again if it failed)."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or "0") or None
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def hold_running_lock(data_dir: Path) -> Iterator[DataDirLock]:
    lock = DataDirLock.acquire(data_dir)
    try:
        yield lock
    finally:
        lock.release()


def gateway_running(data_dir: Path) -> bool:
    """Whether a gateway holds the data dir's lock; creates nothing."""
    try:
        fd = os.open(_lock_path(data_dir), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def serving_pid(data_dir: Path) -> int | None:
    """The PID of the gateway that serves ``data_dir``, or None when none does."""
    if not gateway_running(data_dir):
        return None
    try:
        fd = os.open(_lock_path(data_dir), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _read_pid(fd)
    finally:
        os.close(fd)
