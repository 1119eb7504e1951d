"""Owners delete or rename a table of their team's database from the dashboard.

Both run under the same lock the import worker holds (``import_lock.py``), so a
table is never dropped or renamed in the middle of an import into it, and in one short
``BEGIN IMMEDIATE`` transaction, so Datasette's readers see the table before or after, never
half. Names go through the upload's own checks and quoting.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.upload import importer, trash
from gateway.upload.columns import check_table_name, quote
from gateway.upload.errors import ImportFailed
from gateway.upload.import_lock import import_lock
from gateway.upload.jobs import SERVICE_TABLES


@contextlib.contextmanager
def _locked(team_dir: Path, wait: bool = True) -> Iterator[Path]:
    """The import lock (import_lock.py), yielding the database it guards."""
    with import_lock(team_dir, wait):
        yield team_dir / "data.db"


def restore_table(team_dir: Path, entry: str) -> dict[str, Any]:
    """Put a replaced table back (trash.py), under the import lock."""
    with _locked(team_dir):
        return trash.restore(team_dir, entry)


def recover_trash(team_dir: Path, days: float) -> None:
    """Finish interrupted moves and purge expired tables, unless an import holds the lock
    (it finishes its own move; the next round purges)."""
    try:
        with _locked(team_dir, wait=False):
            trash.recover(team_dir, days)
    except BlockingIOError:
        pass


def _existing(conn: sqlite3.Connection, table: str) -> str:
    row = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE", [table]
    ).fetchone()
    if row is None or row[0].lower().startswith(SERVICE_TABLES):
        raise ImportFailed(f"There is no table {table!r}.")
    return str(row[0])


def count_rows(team_dir: Path, table: str) -> int:
    conn = importer.connect(team_dir / "data.db")
    try:
        name = _existing(conn, table)
        return int(conn.execute(f"SELECT count(*) FROM {quote(name)}").fetchone()[0])
    finally:
        conn.close()


def delete_table(team_dir: Path, table: str) -> int:
    """Drop ``table``; returns how many rows it held."""
    with _locked(team_dir) as db:
        conn = importer.connect(db)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                name = _existing(conn, table)
                rows = int(conn.execute(f"SELECT count(*) FROM {quote(name)}").fetchone()[0])
                conn.execute(f"DROP TABLE {quote(name)}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return rows
        finally:
            conn.close()


def rename_table(team_dir: Path, table: str, new_name: str) -> str:
    new = check_table_name(new_name)
    with _locked(team_dir) as db:
        conn = importer.connect(db)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                name = _existing(conn, table)
                taken = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE name = ? COLLATE NOCASE", [new]
                ).fetchone()
                if taken and new.casefold() != name.casefold():
                    raise ImportFailed(f"The name {new!r} is taken; choose another.")
                conn.execute(f"ALTER TABLE {quote(name)} RENAME TO {quote(new)}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return new
        finally:
            conn.close()
