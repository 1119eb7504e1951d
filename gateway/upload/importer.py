"""The second pass: rows into a staging table, which becomes live in the same transaction.

* ``_gateway_staging_<job>`` is created, filled (``executemany`` over large batches) and
  published in one ``BEGIN IMMEDIATE`` transaction: renamed (new), swapped in for the old table
  (replace) or copied with ``INSERT INTO ... SELECT`` (append). Readers never see the staging
  table at all, half-filled or whole: a Datasette listing the database while a table
  appeared and vanished between two of its queries answered 500. A killed worker leaves
  nothing; the worker and the next start still drop a leftover staging table, to be safe.
* INTEGER and TEXT cells go in as the parsed strings: the column's affinity turns the ones
  the analysis proved exact into integers inside SQLite, and ``nullif(?, '')`` makes empty
  numeric cells NULL. REAL cells go through Python's ``float()`` (see below).
* WAL and a busy timeout let the team's Datasette keep reading throughout; imports into one
  database take turns (the worker's lock), so the long write transaction blocks no import.
* The same transaction writes the job's row in ``_gateway_imports`` (the publication marker):
  the job's own record lives in the control store, a second file that cannot commit together
  with this one, so a job whose record could not be written after the publication (a full disk,
  a killed gateway) is ended from the marker, as ``done``, at the next look (runner.settle).
  Only this table commits atomically with the data: a side file or an attached database would
  not (SQLite's multi-file commits are not atomic in WAL mode). Datasette hides it
  (instance/gateway_plugin.py) and the dashboard never lists it (jobs.SERVICE_TABLES).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.upload import convert
from gateway.upload.columns import INTEGER, REAL, TEXT, quote
from gateway.upload.errors import ImportFailed
from gateway.upload.jobs import IMPORTS_TABLE
from gateway.upload.source import Rows

NUMERIC_AFFINITY = ("INT", "REAL", "FLOA", "DOUB", "NUM", "DEC")
# Markers kept per database: one is needed only until its job's record says done, which a live
# gateway retries every few seconds; far more than the open jobs a team may have (views.py).
MARKERS_KEPT = 100


def connect(db_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -65536")  # 64 MiB of page cache for the bulk insert
    match_owner(db_path)
    return conn


def match_owner(db_path: Path) -> None:
    """As root, give SQLite's -wal/-shm files the database's owner.

    The docker runtime runs Datasette as a non-root user on a volume chowned to it; a -shm file
    created here by root would lock that Datasette out of its own database.
    """
    if os.geteuid() != 0 or not db_path.exists():
        return
    st = db_path.stat()
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.chown(f"{db_path}{suffix}", st.st_uid, st.st_gid)


def drop_staging(conn: sqlite3.Connection, staging: str) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {quote(staging)}")


def run_import(
    conn: sqlite3.Connection,
    path: Path,
    analysis: dict[str, Any],
    options: dict[str, Any],
    staging: str,
    progress: Callable[[int, int], None] | None = None,
    *,
    job_id: str,
    keep_as: str | None = None,
) -> dict[str, Any]:
    """``keep_as``: a replaced table is renamed to this (kept for restoring), not dropped."""
    rename: dict[str, str] = options.get("rename") or {}
    dropped = set(options.get("drop") or ())
    with Rows(path, analysis["encoding"], analysis["delimiter"]) as rows:
        names = rows.read_header(with_extra=analysis.get("long_rows", 0) > 0)
        if names != [c["name"] for c in analysis["columns"]]:
            raise ImportFailed("The file changed since it was analysed; upload it again.")
        # Columns the user dropped are left out; the rest go in under their chosen names.
        keep = [i for i, n in enumerate(names) if n not in dropped]
        types = {rename.get(n, n): options["types"][n] for n in names if n not in dropped}
        columns = [(rename.get(names[i], names[i]), options["types"][names[i]]) for i in keep]
        pk = options.get("pk")
        pk = rename.get(pk, pk) if pk else None
        if rows.extra:
            columns.append((rows.extra, TEXT))
        insert = _insert_sql(staging, columns, options.get("empty_null", False))
        width = len(columns)
        # SQLite's own text->REAL parsing is not always correctly rounded (3.40 misses about
        # 1 in 15,000 17-digit values by an ulp), so REAL cells go through Python's float().
        reals = [i for i, (_, kind) in enumerate(columns) if kind == REAL]
        # Conversions the user chose; each cell is converted again here (never trusting the
        # analysis alone), and one that does not convert stops the import with its row.
        chosen = options.get("convert") or {}
        converts = [
            (pos, convert.converter(chosen[names[i]], names[i]))
            for pos, i in enumerate(keep)
            if names[i] in chosen
        ]
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Created, filled and published inside one transaction: see the module's docstring.
            if options["mode"] == "append":
                _check_append(conn, options["table"], types)
            _create_staging(conn, staging, columns, pk)
            for batch in rows.batches(progress):
                if dropped:
                    tail = len(names)  # the extra cells (if any) follow the header's cells
                    batch = [[r[i] for i in keep] + r[tail:] for r in batch]
                if rows.extra:
                    batch = [r if len(r) == width else [*r, None] for r in batch]  # type: ignore[list-item]
                first_row = rows.rows - len(batch) + 1
                for pos, fn in converts:
                    for n, row in enumerate(batch):
                        row[pos] = fn(row[pos], first_row + n)
                for i in reals:
                    for row in batch:
                        row[i] = float(row[i]) if row[i] else None  # type: ignore[call-overload]
                conn.executemany(insert, batch)
            table, replaced = _publish(conn, staging, options, [c[0] for c in columns], keep_as)
            result = {
                "table": table,
                "mode": options["mode"],
                "replaced_rows": replaced,
                "rows": rows.rows,
                "ragged": {"count": rows.ragged, "lines": rows.ragged_lines},
                "extra_column": rows.extra,
                "converted": {rename.get(n, n): c for n, c in chosen.items()},
            }
            if keep_as is not None and replaced is not None:
                result["kept"] = job_id  # in the marker too: the trash names it by its job
            _mark_published(conn, job_id, result)
            conn.execute("COMMIT")
        except BaseException as exc:
            conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                raise ImportFailed(_integrity_message(exc, options)) from None
            raise
        return result


def _mark_published(conn: sqlite3.Connection, job_id: str, result: dict[str, Any]) -> None:
    """The publication marker, written inside the import's transaction (module docstring)."""
    # WITHOUT ROWID: the job id is the b-tree's key, with no autoindex beside the table.
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {IMPORTS_TABLE} (job_id TEXT PRIMARY KEY,"
        " table_name TEXT NOT NULL, mode TEXT NOT NULL, rows INTEGER NOT NULL,"
        " published_at REAL NOT NULL, result TEXT NOT NULL) WITHOUT ROWID"
    )
    if conn.execute(f"SELECT 1 FROM {IMPORTS_TABLE} WHERE job_id = ?", [job_id]).fetchone():
        raise ImportFailed("This upload was imported already; nothing was added.")  # no twice
    conn.execute(
        f"INSERT INTO {IMPORTS_TABLE} VALUES (?, ?, ?, ?, ?, ?)",
        [job_id, result["table"], result["mode"], result["rows"], time.time(),
         json.dumps(result)],
    )  # fmt: skip
    conn.execute(
        f"DELETE FROM {IMPORTS_TABLE} WHERE job_id NOT IN"
        f" (SELECT job_id FROM {IMPORTS_TABLE} ORDER BY published_at DESC LIMIT ?)",
        [MARKERS_KEPT],
    )


def publication(db_path: Path, job_id: str) -> dict[str, Any] | None:
    """The job's result if its rows were published into ``db_path``, else None (read only)."""
    if not db_path.exists():
        return None
    conn = connect(db_path)
    try:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [IMPORTS_TABLE]
        ).fetchone()
        if found is None:
            return None
        row = conn.execute(
            f"SELECT result FROM {IMPORTS_TABLE} WHERE job_id = ?", [job_id]
        ).fetchone()
        return dict(json.loads(row[0])) if row else None
    finally:
        conn.close()


def _create_staging(
    conn: sqlite3.Connection, staging: str, columns: list[tuple[str, str]], pk: str | None
) -> None:
    defs = []
    for name, kind in columns:
        # NOT NULL: an INTEGER PRIMARY KEY would otherwise invent ids for empty cells.
        suffix = " PRIMARY KEY NOT NULL" if name == pk else ""
        defs.append(f"{quote(name)} {kind}{suffix}")
    drop_staging(conn, staging)
    conn.execute(f"CREATE TABLE {quote(staging)} ({', '.join(defs)})")


def _insert_sql(staging: str, columns: list[tuple[str, str]], empty_null: bool) -> str:
    marks = [
        "nullif(?, '')" if kind in (INTEGER, REAL) or empty_null else "?" for _, kind in columns
    ]
    return f"INSERT INTO {quote(staging)} VALUES ({', '.join(marks)})"


def _integrity_message(exc: sqlite3.IntegrityError, options: dict[str, Any]) -> str:
    if options["mode"] == "append":
        return f"The rows clash with the existing table's constraints ({exc}); nothing was added."
    if "NOT NULL" in str(exc):
        return f"The primary key {options['pk']!r} has empty cells; choose another column."
    return f"The primary key {options['pk']!r} has repeated values; choose another column."


def _table_columns(conn: sqlite3.Connection, table: str) -> dict[str, str] | None:
    row = conn.execute(
        "SELECT type FROM sqlite_master WHERE name = ? COLLATE NOCASE", [table]
    ).fetchone()
    if row is None:
        return None
    if row[0] != "table":
        raise ImportFailed(f"{table!r} is a {row[0]}, not a table.")
    info = conn.execute("SELECT name, type FROM pragma_table_info(?)", [table]).fetchall()
    return {name.casefold(): declared.upper() for name, declared in info}


def check_target(conn: sqlite3.Connection, options: dict[str, Any]) -> int | None:
    """Before any work: refuse a choice the import would refuse (the review page asks again).
    Returns the rows the named table holds now, or None when there is no such table."""
    table = options["table"]
    if options["mode"] == "append":
        _check_append(conn, table, options["types"])
    elif _table_columns(conn, table) is None:
        return None
    return int(conn.execute(f"SELECT count(*) FROM {quote(table)}").fetchone()[0])


def _check_append(conn: sqlite3.Connection, table: str, types: dict[str, str]) -> None:
    existing = _table_columns(conn, table)
    if existing is None:
        raise ImportFailed(f"There is no table {table!r} to append to.")
    missing = [n for n in types if n.casefold() not in existing]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:10])
        raise ImportFailed(f"The table {table!r} has no column {shown}; nothing was added.")
    for name, kind in types.items():
        declared = existing[name.casefold()]
        # A numeric column would turn text like '00601' into 601: refuse instead.
        if kind == TEXT and any(a in declared for a in NUMERIC_AFFINITY):
            raise ImportFailed(
                f"Column {name!r} holds text (such as leading-zero codes) but {table!r} "
                f"declares it {declared}; appending would change values. Use a new table."
            )


def _publish(
    conn: sqlite3.Connection,
    staging: str,
    options: dict[str, Any],
    names: list[str],
    keep_as: str | None = None,
) -> tuple[str, int | None]:
    """Make the filled staging table live; runs inside the import's transaction.
    Returns the table's name and, for a replace, how many rows the old table held."""
    table, mode = options["table"], options["mode"]
    replaced: int | None = None
    if mode == "append":
        cols = ", ".join(quote(n) for n in names)
        conn.execute(f"INSERT INTO {quote(table)} ({cols}) SELECT {cols} FROM {quote(staging)}")
        drop_staging(conn, staging)
        return table, None
    if mode == "replace":
        if _table_columns(conn, table) is not None:
            replaced = int(conn.execute(f"SELECT count(*) FROM {quote(table)}").fetchone()[0])
            if keep_as:  # in this transaction: the old rows are never lost, even by a crash
                conn.execute(f"ALTER TABLE {quote(table)} RENAME TO {quote(keep_as)}")
            else:
                conn.execute(f"DROP TABLE {quote(table)}")
    else:
        table = _free_name(conn, table)
    conn.execute(f"ALTER TABLE {quote(staging)} RENAME TO {quote(table)}")
    return table, replaced


def _free_name(conn: sqlite3.Connection, table: str) -> str:
    candidate, n = table, 2
    while conn.execute(
        "SELECT 1 FROM sqlite_master WHERE name = ? COLLATE NOCASE", [candidate]
    ).fetchone():
        candidate = f"{table}_{n}"
        n += 1
    return candidate
