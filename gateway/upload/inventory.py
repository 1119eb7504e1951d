"""What a team's database holds, for its dashboard: each table's rows and bytes on disk.

Read by the gateway from the team's own ``data.db`` (read-only, never Datasette's HTML), in a
thread. The answer is cached by the size and modification time of the database and its WAL,
so a dashboard reload after nothing changed costs two ``stat`` calls. Counting rows is bounded
by ``COUNT_BUDGET`` seconds in all: a table not counted in time shows no count rather than
holding the page (benchmarks/dashboard.py measures 1,000 tables).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.upload.columns import quote
from gateway.upload.jobs import SERVICE_TABLES

COUNT_BUDGET = 1.0  # seconds for all of a database's row counts together
CACHE_MAX = 1024  # databases remembered (one entry per team)


@dataclass(frozen=True)
class TableInfo:
    name: str
    rows: int | None  # None: not counted within the budget
    bytes: int


@dataclass(frozen=True)
class Inventory:
    tables: tuple[TableInfo, ...]
    disk_bytes: int  # the database file and its WAL
    error: str | None = None

    def largest(self, n: int) -> list[TableInfo]:
        return sorted(self.tables, key=lambda t: (-t.bytes, t.name))[:n]


def _key(db: Path) -> tuple[int, ...]:
    out: list[int] = []
    for path in (db, db.with_name(db.name + "-wal")):
        try:
            st = path.stat()
            out += [st.st_size, st.st_mtime_ns]
        except FileNotFoundError:
            out += [-1, -1]
    return tuple(out)


class Inventories:
    def __init__(self) -> None:
        self._cache: dict[Path, tuple[tuple[int, ...], Inventory]] = {}
        self._lock = threading.Lock()

    def get(self, db: Path) -> Inventory:
        """Call from a thread (``asyncio.to_thread``): a cold read runs SQL."""
        key = _key(db)
        with self._lock:
            cached = self._cache.get(db)
        if cached is not None and cached[0] == key:
            return cached[1]
        inventory = read(db)
        with self._lock:
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[db] = (key, inventory)
        return inventory


def read(db: Path) -> Inventory:
    if not db.exists():
        return Inventory((), 0)
    disk = sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.exists())
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error as exc:
        return Inventory((), disk, f"The database could not be read: {exc}.")
    try:
        return Inventory(_tables(conn), disk)
    except sqlite3.Error as exc:
        return Inventory((), disk, f"The database could not be read: {exc}.")
    finally:
        conn.close()


def _tables(conn: sqlite3.Connection) -> tuple[TableInfo, ...]:
    names = [
        r[0]
        for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        if not r[0].lower().startswith(SERVICE_TABLES)
    ]
    # Bytes per table: its own b-tree and its indexes' (dbstat's per-b-tree totals).
    owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE rootpage > 0"))
    sizes: dict[str, int] = {}
    for btree, size in conn.execute("SELECT name, pgsize FROM dbstat WHERE aggregate = TRUE"):
        table = owner.get(btree, btree)
        sizes[table] = sizes.get(table, 0) + size
    deadline = time.monotonic() + COUNT_BUDGET
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    out = []
    for name in names:
        rows: int | None = None
        if time.monotonic() <= deadline:
            try:
                rows = int(conn.execute(f"SELECT count(*) FROM {quote(name)}").fetchone()[0])
            except sqlite3.OperationalError:  # interrupted: out of budget
                rows = None
        out.append(TableInfo(name, rows, sizes.get(name, 0)))
    return tuple(out)
