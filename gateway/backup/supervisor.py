"""The Litestream daemon, supervised by the gateway.

One ``litestream replicate`` process per data directory replicates the control store and
every team's ``data.db``. The gateway:

- starts it (or adopts the one a previous gateway left running: ``gateway restart`` hands it
  over with no gap), and restarts it with backoff if it dies;
- keeps its databases in step with the store through the control socket: a new team is
  registered, a deleted team unregistered (its replica stays);
- polls its status every second: replication lag, last successful sync, errors;
- stops it at shutdown, unless a successor gateway took it over.

Its pid and which gateway owns it are in ``<data_dir>/litestream/daemon.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import json
import logging
import os
import secrets
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.backup.layout import Database, Layout
from gateway.backup.litestream import (
    BackupError,
    Control,
    Nudger,
    binary,
    config_text,
    parse_time,
)
from gateway.config import Config
from gateway.store.db import Store

log = logging.getLogger("gateway.backup")

POLL = 1.0  # seconds between status polls and membership checks
START_TIMEOUT = 15.0
STOP_TIMEOUT = 35.0  # Litestream's own shutdown sync is bounded at 30 s
BACKOFF_MAX = 30.0
STABLE_AFTER = 30.0


_HANDED_OVER: list[subprocess.Popen[bytes]] = []


class State(enum.StrEnum):
    OFF = "off"  # backup_replica = off
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"  # the daemon died; restarting after a delay
    STOPPED = "stopped"


@dataclass
class DbStatus:
    name: str
    path: str
    replica: str
    state: str  # replicating | stopped | not registered | held (a restore is under way)
    last_sync: float | None  # epoch seconds of Litestream's last successful sync

    def lag(self, now: float) -> float | None:
        """Seconds since the replica was last known up to date: the data a lost disk loses."""
        return None if self.last_sync is None else max(0.0, now - self.last_sync)

    def as_dict(self, now: float) -> dict[str, Any]:
        lag = self.lag(now)
        return {
            "name": self.name,
            "path": self.path,
            "replica": self.replica,
            "state": self.state,
            "last_sync": self.last_sync,
            "lag": None if lag is None else round(lag, 3),
        }


class Replication:
    def __init__(self, config: Config, store: Store) -> None:
        self.layout = Layout(config)
        self.store = store
        self.control = Control(self.layout.socket)
        self.state = State.STARTING if self.layout.enabled else State.OFF
        self.restarts = 0
        self.errors = 0
        self.last_error = ""
        self.statuses: dict[str, DbStatus] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._held: set[str] = set()
        # The replica each database path was registered with by this object: a team deleted
        # and made again under its name between two polls has the same path, a new replica.
        self._replicas: dict[str, str] = {}
        # Paths registered through the control socket since the daemon started, not from its
        # config file: Litestream ignores our intervals for them, so the Nudger syncs them.
        # Kept in daemon.json, so a successor gateway that adopts the daemon knows them.
        self._runtime: set[str] = set()
        self.nudger = Nudger(self.control)
        self._nudge_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        # Who owns the daemon: this object (a gateway restart runs two of them at once).
        self._me = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._owner_fd: int | None = None

    @property
    def enabled(self) -> bool:
        return self.layout.enabled

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        if not self.enabled:
            return
        self.layout.state_dir.mkdir(parents=True, exist_ok=True)
        # Held until close (or until this process dies): the daemon's watchdog ends it once
        # no gateway holds it.
        self._owner_fd = os.open(self.layout.owner_lock, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._owner_fd, fcntl.LOCK_SH)
        try:
            await asyncio.to_thread(self._ensure_daemon)
            await self._reconcile()
        except BackupError as exc:  # the gateway serves anyway; the status shows the trouble
            self._failed(str(exc))
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="backups")
        self._nudge_task = asyncio.get_running_loop().create_task(self._nudge(), name="nudge")

    async def close(self) -> None:
        for task in (self._task, self._nudge_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.enabled and self._owner() == self._me:
            await asyncio.to_thread(self._stop_daemon)
            self.state = State.STOPPED
        elif self._proc is not None:
            # A successor took it over: keep our handle (dropping a running child's handle
            # warns), but never stop or reap it from here.
            _HANDED_OVER.append(self._proc)
            self._proc = None
        if self._owner_fd is not None:
            os.close(self._owner_fd)
            self._owner_fd = None

    def known(self) -> list[Database]:
        """The control store and every team the store knows (deleting ones until they go)."""
        teams = self.store.teams()
        return [self.layout.control(), *(self.layout.team(t.slug, t.created_at) for t in teams)]

    def wanted(self) -> list[Database]:
        """The databases to replicate: the known ones whose file exists."""
        return [db for db in self.known() if db.path.exists()]

    # -- the daemon ----------------------------------------------------------------------------
    def _ensure_daemon(self) -> None:
        self.layout.state_dir.mkdir(parents=True, exist_ok=True)
        with self._daemon_lock():
            if self._adopt():
                return
            wanted = self.wanted()
            text = config_text(self.layout, wanted, watchdog=True)
            self.layout.config_file.write_text(text)
            self._replicas = {str(db.path): db.replica for db in wanted}
            self._runtime = set()  # every database is in the config file
            with open(self.layout.log_file, "ab") as logfile:
                self._proc = subprocess.Popen(
                    [binary(), "replicate", "-config", str(self.layout.config_file)],
                    stdin=subprocess.DEVNULL,
                    stdout=logfile,
                    stderr=logfile,
                    # Its own session: a signal to the gateway's process group (Ctrl-C, a
                    # restart) does not reach it; the gateway stops it itself.
                    start_new_session=True,
                )
            self._pid = self._proc.pid
            self._write_daemon_file()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.control.alive():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise BackupError(f"litestream did not start: {self._log_tail()}")
            time.sleep(0.05)
        self.state = State.RUNNING
        log.info("litestream pid %d replicates to %s", self._pid, self.layout.root)

    def _adopt(self) -> bool:
        """Take over a daemon a previous gateway left running (a restart): no gap."""
        info = self._read_daemon_file()
        pid = int(info.get("pid") or 0)
        if not pid or not process_alive(pid) or not self.control.alive():
            return False
        self._proc, self._pid = None, pid
        self._runtime = set(info.get("runtime") or [])
        self._write_daemon_file()
        self.state = State.RUNNING
        log.info("litestream pid %d adopted", pid)
        return True

    def daemon_alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self._pid is not None and process_alive(self._pid)

    def _stop_daemon(self) -> None:
        pid = self._pid
        if pid is None or not self.daemon_alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # Litestream syncs every database, then exits
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.daemon_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.daemon_alive():
            log.warning("litestream pid %d did not stop in %.0fs; killing it", pid, STOP_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if self._proc is not None:
                self._proc.wait()
        with contextlib.suppress(FileNotFoundError):
            self.layout.daemon_file.unlink()

    def _owner(self) -> str:
        return str(self._read_daemon_file().get("owner") or "")

    def _read_daemon_file(self) -> dict[str, Any]:
        try:
            data = json.loads(self.layout.daemon_file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_daemon_file(self) -> None:
        tmp = self.layout.daemon_file.with_suffix(".tmp")
        info = {"pid": self._pid, "owner": self._me, "runtime": sorted(self._runtime)}
        tmp.write_text(json.dumps(info))
        tmp.replace(self.layout.daemon_file)

    @contextlib.contextmanager
    def _daemon_lock(self) -> Iterator[None]:
        """Two gateways starting at once (a restart) must not both spawn a daemon."""
        fd = os.open(self.layout.state_dir / "daemon.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _log_tail(self, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            text = self.layout.log_file.read_text(errors="replace").strip().splitlines()
            return " | ".join(text[-lines:]) or "no output"
        return "no output"

    # -- supervision ---------------------------------------------------------------------------
    async def _watch(self) -> None:
        backoff = 0.5
        started = time.monotonic()
        while True:
            await asyncio.sleep(POLL)
            if self._owner() not in ("", self._me):
                continue  # a successor gateway took the daemon over; it supervises now
            try:
                if not self.daemon_alive():
                    code = self._proc.poll() if self._proc is not None else None
                    self._failed(f"litestream exited (code {code}); restarting in {backoff:.1f}s")
                    self.state = State.BACKOFF
                    await asyncio.sleep(backoff)
                    if time.monotonic() - started > STABLE_AFTER:
                        backoff = 0.5
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    started = time.monotonic()
                    self.restarts += 1
                    await asyncio.to_thread(self._ensure_daemon)
                await self._reconcile()
            except BackupError as exc:
                self._failed(str(exc))
            except Exception as exc:
                log.exception("backup supervision failed; retrying")
                self._failed(str(exc))

    async def _reconcile(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self._reconcile_now)

    async def _nudge(self) -> None:
        period = self.layout.config.backup_sync_interval
        while True:
            await asyncio.sleep(period)
            paths = [Path(p) for p in sorted(self._runtime.copy())]  # a thread may add
            if paths and self.state is State.RUNNING and self._owner() in ("", self._me):
                try:
                    await asyncio.to_thread(self.nudger.nudge, paths)
                except Exception:
                    log.exception("backup nudge failed; retrying")

    def _reconcile_now(self) -> None:
        known = self.known()  # one snapshot: statuses never name a team not yet unregistered
        registered = self.control.databases()
        wanted = {
            str(db.path): db for db in known if db.name not in self._held and db.path.exists()
        }
        for path, db in wanted.items():
            if path in registered and self._replicas.get(path, db.replica) != db.replica:
                self.control.unregister(db.path)  # a new team of a deleted one's name
                del registered[path]
            if path not in registered:
                self.control.register(db)
                self._replicas[path] = db.replica
                self._runtime.add(path)
                if self._owner() in ("", self._me):  # not a predecessor's, mid-restart
                    self._write_daemon_file()
                log.info("replicating %s to %s", db.path, db.replica)
        for path in set(registered) - set(wanted):
            if not any(str(self.layout.team_path(h)) == path for h in self._held):
                self.control.unregister(Path(path))  # a deleted team: its replica stays
                self._replicas.pop(path, None)
                self._runtime.discard(path)
                log.info("stopped replicating %s", path)
        registered = self.control.databases()
        statuses: dict[str, DbStatus] = {}
        for db in known:
            row = registered.get(str(db.path))
            state = "held" if db.name in self._held else "not registered"
            statuses[db.name] = DbStatus(
                db.name,
                str(db.path),
                db.replica,
                str(row.get("status") or "unknown") if row else state,
                _epoch(row.get("last_sync_at")) if row else None,
            )
        self.statuses = statuses
        self.state = State.RUNNING

    def _failed(self, message: str) -> None:
        self.errors += 1
        self.last_error = message
        log.warning("backups: %s", message)

    # -- for restores and `gateway backup now` -------------------------------------------------
    @contextlib.asynccontextmanager
    async def held(self, name: str, path: Path) -> AsyncIterator[None]:
        """Take one database out of replication (after a final sync) while a restore swaps
        its file; it is registered again, on its new contents, afterwards."""
        async with self._lock:
            self._held.add(name)
            if self.daemon_alive():
                registered = await asyncio.to_thread(self.control.databases)
                if str(path) in registered:
                    with contextlib.suppress(BackupError):  # best effort: the disk may be gone
                        await asyncio.to_thread(self.control.sync, path, 10.0)
                    try:
                        await asyncio.to_thread(self.control.unregister, path)
                    except BackupError:
                        # A lost file cannot be replicated anyway; else it must not be swapped.
                        if await asyncio.to_thread(path.exists):
                            self._held.discard(name)
                            raise
        try:
            yield
        finally:
            self._held.discard(name)
            with contextlib.suppress(BackupError):
                await self._reconcile()

    async def sync_now(self, names: list[str] | None = None) -> list[dict[str, Any]]:
        """Upload every pending change now and wait for the replica to have it."""
        if not self.enabled:
            raise BackupError("backups are off (backup_replica = off)")
        dbs = [db for db in self.wanted() if names is None or db.name in names]
        if names is not None and not dbs:
            raise BackupError(f"no replicated database named {', '.join(names)}")
        out = []
        for db in dbs:
            result = await asyncio.to_thread(self.control.sync, db.path, 60.0)
            out.append({"name": db.name, **result})
        await self._reconcile()
        return out

    def status(self) -> dict[str, Any]:
        now = time.time()
        lags = [s.lag(now) for s in self.statuses.values()]
        return {
            "state": str(self.state),
            "replica": self.layout.root,
            "pid": self._pid if self.daemon_alive() else None,
            "restarts": self.restarts,
            "errors": self.errors,
            "last_error": self.last_error,
            "max_lag": max((lag for lag in lags if lag is not None), default=None),
            "databases": [s.as_dict(now) for s in self.statuses.values()],
        }


def stop_orphan(layout: Layout) -> None:
    """Stop a daemon that outlived its gateway (one killed with -9), before an offline restore."""
    try:
        pid = int(json.loads(layout.daemon_file.read_text()).get("pid") or 0)
    except (OSError, ValueError, AttributeError):
        return
    if pid and process_alive(pid) and "litestream" in _cmdline(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    layout.daemon_file.unlink(missing_ok=True)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def process_alive(pid: int) -> bool:
    """Alive and not a zombie (a dead child its parent has not reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _epoch(raw: Any) -> float | None:
    if not raw:
        return None
    try:
        return parse_time(str(raw)).timestamp()
    except BackupError:
        return None
