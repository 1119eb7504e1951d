"""Open the control store and read or write teams, instances and targets.

The CLI and the gateway open the same file concurrently: WAL mode plus a busy timeout keep
both working, and ``data_version`` lets a running gateway notice another process's writes.
"""

from __future__ import annotations

import fcntl
import functools
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite_utils

from gateway.errors import TeamExists, TeamNotFound
from gateway.store.migrations import migrate


@dataclass(frozen=True)
class Team:
    slug: str
    state: str
    public: bool
    created_at: float


@dataclass(frozen=True)
class Instance:
    id: str
    team: str
    runtime: str
    version: str
    port: int | None
    ref: str
    role: str
    created_at: float


class Store:
    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._lock = threading.RLock()

    @functools.cached_property
    def db(self) -> sqlite_utils.Database:
        """sqlite-utils over the same connection, for schema work; imported on first use
        because its import is slow, and every CLI command would otherwise pay for it."""
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

    # -- plumbing -------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def query(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self.conn.execute(sql, params).fetchall()

    def data_version(self) -> int:
        """Changes whenever *another* connection commits: a cheap change detector."""
        with self._lock:
            return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    # -- settings -------------------------------------------------------------------------
    def setting(self, key: str, default: str | None = None) -> str | None:
        rows = self.query("SELECT value FROM settings WHERE key = ?", [key])
        return rows[0]["value"] if rows else default

    def ensure_setting(self, key: str, make: Any = None) -> str:
        """Return a persisted value, generating it once (first start) if it is missing."""
        with self.transaction() as conn:
            row = conn.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
            if row:
                return str(row["value"])
            value = make() if make else secrets.token_urlsafe(32)
            conn.execute("INSERT INTO settings (key, value) VALUES (?, ?)", [key, value])
            return str(value)

    # -- teams ----------------------------------------------------------------------------
    def create_team(self, slug: str) -> Team:
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM teams WHERE slug = ?", [slug]).fetchone():
                raise TeamExists(f"team {slug!r} already exists")
            now = time.time()
            conn.execute("INSERT INTO teams (slug, created_at) VALUES (?, ?)", [slug, now])
        return Team(slug, "active", False, now)

    def team(self, slug: str) -> Team:
        rows = self.query("SELECT * FROM teams WHERE slug = ?", [slug])
        if not rows:
            raise TeamNotFound(f"no team {slug!r}")
        return _team(rows[0])

    def teams(self) -> list[Team]:
        return [_team(r) for r in self.query("SELECT * FROM teams ORDER BY slug")]

    def set_idle_timeout(self, slug: str, seconds: float | None) -> None:
        """The team's own idle timeout in seconds (0: never sleeps); None: the gateway's."""
        with self.transaction() as conn:
            if not conn.execute(
                "UPDATE teams SET idle_timeout = ? WHERE slug = ?", [seconds, slug]
            ).rowcount:
                raise TeamNotFound(f"no team {slug!r}")

    def set_team_state(self, slug: str, state: str) -> None:
        with self.transaction() as conn:
            if not conn.execute(
                "UPDATE teams SET state = ? WHERE slug = ?", [state, slug]
            ).rowcount:
                raise TeamNotFound(f"no team {slug!r}")

    def delete_team(
        self, slug: str, retire: Callable[[sqlite3.Connection], None] | None = None
    ) -> None:
        """Delete the team's rows; ``retire`` runs inside the same write transaction, so the
        slug cannot be taken again before it is done (gateway/archive.py moves the volume)."""
        with self.transaction() as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM instances WHERE team = ?", [slug])]
            conn.executemany("DELETE FROM targets WHERE instance_id = ?", [[i] for i in ids])
            conn.execute("DELETE FROM instances WHERE team = ?", [slug])
            self._delete_team_rows(conn, slug)
            conn.execute("DELETE FROM teams WHERE slug = ?", [slug])
            if retire is not None:
                retire(conn)

    def _delete_team_rows(self, conn: sqlite3.Connection, slug: str) -> None:
        # Tables added by later migrations that reference a team declare it here.
        for table in ("memberships", "api_tokens", "invites", "import_jobs"):
            if conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", [table]
            ).fetchone():
                conn.execute(f"DELETE FROM [{table}] WHERE team = ?", [slug])

    # -- instances ------------------------------------------------------------------------
    def add_instance(
        self,
        team: str,
        runtime: str,
        *,
        role: str = "active",
        version: str = "",
        port: int | None = None,
        ref: str = "",
    ) -> Instance:
        inst = Instance(
            f"{team}-{secrets.token_hex(4)}", team, runtime, version, port, ref, role, time.time()
        )
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO instances (id, team, runtime, version, port, ref, role, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [inst.id, team, runtime, version, port, ref, role, inst.created_at],
            )
        return inst

    def update_instance(self, instance_id: str, **fields: Any) -> None:
        allowed = {"version", "port", "ref", "role"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"cannot update {sorted(set(fields) - allowed)}")
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.transaction() as conn:
            conn.execute(
                f"UPDATE instances SET {cols} WHERE id = ?", [*fields.values(), instance_id]
            )

    def remove_instance(self, instance_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM targets WHERE instance_id = ?", [instance_id])
            conn.execute("DELETE FROM instances WHERE id = ?", [instance_id])

    def instances(self, team: str | None = None) -> list[Instance]:
        if team is None:
            rows = self.query("SELECT * FROM instances ORDER BY team, created_at")
        else:
            rows = self.query("SELECT * FROM instances WHERE team = ? ORDER BY created_at", [team])
        return [Instance(**dict(r)) for r in rows]

    # -- targets (the gateway's view, for status pages and other processes) ----------------
    def record_target(self, instance_id: str, address: str, state: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO targets (instance_id, address, state, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(instance_id) DO UPDATE SET address = excluded.address,"
                " state = excluded.state, updated_at = excluded.updated_at",
                [instance_id, address, state, time.time()],
            )

    def targets(self) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM targets")


def _team(row: sqlite3.Row) -> Team:
    return Team(row["slug"], row["state"], bool(row["public"]), row["created_at"])


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE), never implicitly.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def open_store(path: Path) -> Store:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Two first opens of a fresh file race on the switch to WAL and the first migration, and
    # SQLite answers the loser "database is locked" without waiting (its deadlock rule for
    # rollback-journal lock upgrades). Opens are rare, so they simply take turns. The lock is a
    # file of its own: opening and closing control.db itself would drop SQLite's POSIX locks.
    fd = os.open(path.with_name(path.name + ".open-lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        conn = connect(path)
        try:
            migrate(conn)
        except BaseException:
            conn.close()
            raise
    finally:
        os.close(fd)
    return Store(conn, path)
