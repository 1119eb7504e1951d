"""Tables replaced by an upload are kept aside for ``replaced_table_days``, restorable.

A replace renames the old table to ``_gateway_replaced_<id>`` inside the import's own
transaction (so no crash can lose it), then, right after, moves it out of the team's database
into ``<team dir>/.trash/<id>.sqlite3`` with ``<id>.json`` describing it. Out, because the
team's Datasette answers SQL over every table of ``data.db``: a table replaced to take wrong or
private rows off a public team must not stay readable there (only for the seconds of the copy,
hidden from the dashboard). ``.trash/`` is a subdirectory, which Datasette's directory mode does
not serve. Restoring copies the table back under its name in one transaction; the table holding
that name then goes to the trash in its place, so a restore can itself be undone. Expired
entries are purged when the dashboard lists them, at start and hourly. Every step runs
under the import lock (``tables._locked``) except the purge of expired entries.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from gateway.upload import importer
from gateway.upload.columns import quote
from gateway.upload.errors import ImportFailed

log = logging.getLogger("gateway.upload")
ASIDE_PREFIX = "_gateway_replaced_"
TRASH = ".trash"
DAY = 86400.0


def aside_name(entry: str) -> str:
    return ASIDE_PREFIX + entry


def _dir(team_dir: Path) -> Path:
    return team_dir / TRASH


def _valid(entry: str) -> bool:
    return len(entry) == 16 and all(ch in "0123456789abcdef" for ch in entry)


def note(team_dir: Path, entry: str, **info: Any) -> None:
    """Write (or update) what an entry is; before the import, so a crash keeps the name."""
    trash = _dir(team_dir)
    trash.mkdir(exist_ok=True)
    path = trash / f"{entry}.json"
    old: dict[str, Any] = {}
    with contextlib.suppress(FileNotFoundError, ValueError):
        old = json.loads(path.read_text())
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({**old, **info, "id": entry}))
    os.replace(tmp, path)


def forget(team_dir: Path, entry: str) -> None:
    for suffix in (".json", ".sqlite3", ".sqlite3.part", ".sqlite3.part-journal"):
        with contextlib.suppress(FileNotFoundError):
            (_dir(team_dir) / f"{entry}{suffix}").unlink()


def move_out(conn: sqlite3.Connection, team_dir: Path, entry: str) -> None:
    """Copy ``_gateway_replaced_<entry>`` into the trash, then drop it from the database."""
    aside = aside_name(entry)
    row = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", [aside]).fetchone()
    if row is None:
        return
    final = _dir(team_dir) / f"{entry}.sqlite3"
    if not final.exists():  # else a crash came after the copy: only the drop is left
        _dir(team_dir).mkdir(exist_ok=True)
        part = final.with_name(final.name + ".part")
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        out = sqlite3.connect(part)
        try:
            out.execute(row[0])  # the table's own CREATE statement: same columns and key
            out.commit()
        finally:
            out.close()
        conn.execute("ATTACH DATABASE ? AS trash", [str(part)])
        try:
            conn.execute("BEGIN")
            try:
                copy = f"INSERT INTO trash.{quote(aside)} SELECT * FROM main.{quote(aside)}"
                conn.execute(copy)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")  # a DETACH inside a transaction would fail
                raise
        finally:
            conn.execute("DETACH DATABASE trash")
        os.replace(part, final)
    rows = int(conn.execute(f"SELECT count(*) FROM {quote(aside)}").fetchone()[0])
    note(team_dir, entry, rows=rows, bytes=final.stat().st_size)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(f"DROP TABLE {quote(aside)}")
    conn.execute("COMMIT")


def entries(team_dir: Path, days: float) -> list[dict[str, Any]]:
    """The team's kept tables, newest first; expired ones are purged on the way."""
    trash = _dir(team_dir)
    if not trash.is_dir():
        return []
    found = []
    now = time.time()
    for info_path in trash.glob("*.json"):
        entry = info_path.stem
        try:
            info = json.loads(info_path.read_text())
        except (OSError, ValueError):
            continue
        if not (trash / f"{entry}.sqlite3").exists():
            continue  # not moved out yet (an import in progress) or half removed
        kept = float(info.get("replaced_at", 0))
        if now - kept > days * DAY:
            forget(team_dir, entry)
            continue
        found.append({**info, "until": kept + days * DAY})
    return sorted(found, key=lambda e: -float(e.get("replaced_at", 0)))


def restore(team_dir: Path, entry: str) -> dict[str, Any]:
    """Put a kept table back under its name; what held that name is kept in its place.
    Runs under the import lock (the caller's)."""
    if not _valid(entry):
        raise ImportFailed("There is no such kept table.")
    trash = _dir(team_dir)
    path, info_path = trash / f"{entry}.sqlite3", trash / f"{entry}.json"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        info = None
    if info is None or not path.exists():
        raise ImportFailed("There is no such kept table (it may have expired).")
    original, aside = str(info["original"]), aside_name(entry)
    conn = importer.connect(team_dir / "data.db")
    swapped: str | None = None
    try:
        conn.execute("ATTACH DATABASE ? AS trash", [str(path)])
        try:
            row = conn.execute(
                "SELECT sql FROM trash.sqlite_master WHERE name = ?", [aside]
            ).fetchone()
            if row is None:
                raise ImportFailed("The kept table's file is damaged; it cannot be restored.")
            conn.execute("BEGIN IMMEDIATE")
            try:
                current = conn.execute(
                    "SELECT name FROM main.sqlite_master WHERE type = 'table' AND name = ?"
                    " COLLATE NOCASE",
                    [original],
                ).fetchone()
                if current is not None:
                    from gateway.upload.jobs import new_id

                    swapped = new_id()
                    held = int(
                        conn.execute(f"SELECT count(*) FROM {quote(current[0])}").fetchone()[0]
                    )
                    note(team_dir, swapped, original=current[0], replaced_at=time.time(),
                         rows=held, why=f"replaced by restoring {original}")  # fmt: skip
                    held_as = quote(aside_name(swapped))
                    conn.execute(f"ALTER TABLE main.{quote(current[0])} RENAME TO {held_as}")
                conn.execute(row[0])  # unqualified: creates the kept table in main
                conn.execute(f"INSERT INTO main.{quote(aside)} SELECT * FROM trash.{quote(aside)}")
                conn.execute(f"ALTER TABLE main.{quote(aside)} RENAME TO {quote(original)}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                if swapped:
                    forget(team_dir, swapped)
                raise
        finally:
            conn.execute("DETACH DATABASE trash")
        forget(team_dir, entry)
        if swapped:
            try:
                move_out(conn, team_dir, swapped)
            except (OSError, sqlite3.Error):
                # Restored already; the displaced table waits renamed aside, and the next
                # recovery round moves it to the trash.
                log.exception("keeping the displaced table %s for later", swapped)
    finally:
        conn.close()
    return {"table": original, "rows": info.get("rows"), "kept": swapped}


def recover(team_dir: Path, days: float) -> None:
    """At start and hourly (under the import lock): finish moves a crash interrupted, drop
    half-written copies, purge expired entries."""
    db = team_dir / "data.db"
    if db.exists():
        conn = importer.connect(db)
        try:
            names = conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE ? ESCAPE '\\'",
                [ASIDE_PREFIX.replace("_", "\\_") + "%"],
            ).fetchall()
            for (name,) in names:
                entry = name[len(ASIDE_PREFIX) :]
                if _valid(entry):
                    note(team_dir, entry, replaced_at=_info(team_dir, entry).get(
                        "replaced_at", time.time()))  # fmt: skip
                    move_out(conn, team_dir, entry)
        finally:
            conn.close()
    trash = _dir(team_dir)
    if trash.is_dir():
        for part in trash.glob("*.part*"):
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
        for info_path in trash.glob("*.json"):
            if not (trash / f"{info_path.stem}.sqlite3").exists():
                info_path.unlink(missing_ok=True)  # an import that never replaced anything
    entries(team_dir, days)


def _info(team_dir: Path, entry: str) -> dict[str, Any]:
    try:
        return dict(json.loads((_dir(team_dir) / f"{entry}.json").read_text()))
    except (OSError, ValueError):
        return {}
