"""The publication marker: every import commits a row in the team database's
``_gateway_imports`` in the same transaction as its rows, so a job whose own record could not be
written after the publication is ended from what the database really holds: ``done`` with its
row count when the marker is there, ``failed`` with nothing half-written when it is not.
Real SQLite, a real control store and real worker processes; Datasette hides the table.
(Killed gateways and a full disk: tests/test_upload_restart.py, tests/test_disk_full.py.)"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Config
from gateway.instance import gateway_plugin
from gateway.runtimes.base import prepare_team_dir
from gateway.store import open_store
from gateway.upload import importer
from gateway.upload.analyze import analyze
from gateway.upload.errors import ImportFailed
from gateway.upload.inventory import read
from gateway.upload.jobs import IMPORTS_TABLE, Jobs
from gateway.upload.options import resolve
from gateway.upload.runner import Runner
from tests.upload_support import sign_in, staging_tables


def csv_file(path: Path, rows: int, start: int = 0) -> Path:
    path.write_text("id,name\n" + "".join(f"{i},place {i}\n" for i in range(start, start + rows)))
    return path


def database(path: Path, *sql: str) -> Path:
    """A team database holding what the ``sql`` statements make, run in order."""
    conn = importer.connect(path)
    for statement in sql:
        conn.execute(statement)
    conn.close()
    return path


@dataclass
class Planned:
    """An import as the upload page plans it: the file, its analysis and checked options."""

    csv: Path
    analysis: dict[str, Any]
    options: dict[str, Any]

    @classmethod
    def of(cls, csv: Path, mode: str, table: str) -> Planned:
        analysis = analyze(csv)
        return cls(csv, analysis, resolve({"mode": mode, "table": table}, analysis, csv.name))

    def run(self, conn: sqlite3.Connection, job_id: str) -> dict[str, Any]:
        staging = f"_gateway_staging_{job_id}"
        return importer.run_import(
            conn, self.csv, self.analysis, self.options, staging, job_id=job_id
        )


def marker(db: Path, job_id: str) -> tuple[str, str, int] | None:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute(
            f"SELECT table_name, mode, rows FROM {IMPORTS_TABLE} WHERE job_id = ?", [job_id]
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2])
    finally:
        conn.close()


@pytest.mark.parametrize("mode", ["new", "replace", "append"])
def test_every_mode_commits_its_marker_with_its_rows(tmp_path: Path, mode: str) -> None:
    """After every statement the importer runs, a second connection sees the marker exactly
    when it sees the published rows: one transaction, never one without the other."""
    db = database(
        tmp_path / "data.db",
        "CREATE TABLE places (id INTEGER, name TEXT)",
        "INSERT INTO places VALUES (-1, 'old')",
    )
    plan = Planned.of(csv_file(tmp_path / "places.csv", 3000), mode, "places")
    reader = sqlite3.connect(db)
    seen: list[tuple[int, bool]] = []

    def look(_sql: str) -> None:
        names = {r[0] for r in reader.execute("SELECT name FROM sqlite_master")}
        target = "places_2" if mode == "new" else "places"
        rows = 0
        if target in names:
            rows = reader.execute(f'SELECT count(*) FROM "{target}"').fetchone()[0]
        seen.append((rows, IMPORTS_TABLE in names))

    conn = importer.connect(db)
    conn.set_trace_callback(look)
    result = plan.run(conn, "j1")
    conn.set_trace_callback(None)
    look("")
    conn.close()
    published = 3001 if mode == "append" else 3000
    before = 1 if mode != "new" else 0
    assert seen[0] == (before, False) and seen[-1] == (published, True), seen
    assert set(seen) == {(before, False), (published, True)}, seen
    assert marker(db, "j1") == (result["table"], mode, 3000)
    assert importer.publication(db, "j1") == result
    assert importer.publication(db, "other") is None
    reader.close()


def test_a_refused_import_leaves_no_marker(tmp_path: Path) -> None:
    db = database(tmp_path / "data.db", "CREATE TABLE places (id INTEGER, other TEXT)")
    plan = Planned.of(csv_file(tmp_path / "places.csv", 10), "append", "places")
    conn = importer.connect(db)
    with pytest.raises(ImportFailed, match="no column"):
        plan.run(conn, "j2")
    conn.close()
    assert importer.publication(db, "j2") is None
    with sqlite3.connect(db) as check:
        names = {r[0] for r in check.execute("SELECT name FROM sqlite_master")}
    assert names == {"places"}


def test_a_job_is_never_published_twice(tmp_path: Path) -> None:
    db = database(tmp_path / "data.db", "CREATE TABLE places (id INTEGER, name TEXT)")
    plan = Planned.of(csv_file(tmp_path / "places.csv", 10), "append", "places")
    conn = importer.connect(db)
    plan.run(conn, "j3")
    with pytest.raises(ImportFailed, match="imported already"):
        plan.run(conn, "j3")
    assert conn.execute("SELECT count(*) FROM places").fetchone()[0] == 10
    conn.close()


def test_markers_are_pruned_to_the_newest(tmp_path: Path) -> None:
    db = tmp_path / "data.db"
    plan = Planned.of(csv_file(tmp_path / "t.csv", 2), "replace", "t")
    conn = importer.connect(db)
    for i in range(importer.MARKERS_KEPT + 5):
        plan.run(conn, str(i))
    count = conn.execute(f"SELECT count(*) FROM {IMPORTS_TABLE}").fetchone()[0]
    conn.close()
    assert count == importer.MARKERS_KEPT
    assert importer.publication(db, "0") is None
    assert importer.publication(db, str(importer.MARKERS_KEPT + 4)) is not None


def dead_pid() -> int:
    """The pid of a process that has exited (a worker that died with its gateway)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(proc.stdout)


@pytest.mark.parametrize("mode", ["new", "replace", "append"])
def test_the_next_start_ends_a_published_job_done_and_an_unpublished_one_failed(
    config: Config, mode: str
) -> None:
    """Two jobs left ``importing`` by a gateway that died: one whose rows a real import
    published (its record never written), one that never got that far."""
    store = open_store(config.control_db)
    store.create_team("alpha")
    team_dir = config.teams_dir / "alpha"
    prepare_team_dir(team_dir)
    spool_dir = team_dir / ".spool"
    spool_dir.mkdir()
    old_rows = ", ".join(f"({-i}, 'old')" for i in range(1, 8))
    db = database(
        team_dir / "data.db",
        "CREATE TABLE places (id INTEGER, name TEXT)",
        f"INSERT INTO places VALUES {old_rows}",
    )
    jobs = Jobs(store)
    left = {}
    for job_id, table in (("aaaa", "places"), ("bbbb", "never")):
        plan = Planned.of(csv_file(spool_dir / f"{job_id}.upload", 1234), mode, table)
        jobs.create(job_id=job_id, team="alpha", user_id=None, filename="places.csv",
                    spool_path=str(plan.csv), size=plan.csv.stat().st_size, auto=True,
                    options=plan.options)  # fmt: skip
        jobs.update(job_id, state="importing", analysis=plan.analysis, rows_done=20, pid=dead_pid())
        left[job_id] = plan
    conn = importer.connect(db)
    result = left["aaaa"].run(conn, "aaaa")
    conn.close()

    Runner(config, store).recover()

    done, failed = jobs.get("aaaa"), jobs.get("bbbb")
    assert (done.state, done.rows_done, done.result, done.error) == ("done", 1234, result, None)
    assert done.pid is None and done.bytes_done == done.size
    table = "places_2" if mode == "new" else "places"
    assert result["table"] == table
    expected = 1234 + 7 if mode == "append" else 1234
    with sqlite3.connect(db) as check:
        assert check.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] == expected
        assert staging_tables(check) == []
        names = {r[0] for r in check.execute("SELECT name FROM sqlite_master")}
    assert failed.state == "failed" and "restart" in str(failed.error), failed
    assert "never" not in names
    assert list(spool_dir.glob("*.upload")) == []
    store.close()


async def test_datasette_and_the_dashboard_hide_the_marker(start_gateway, config: Config) -> None:
    running = await start_gateway(config, teams=("alpha",))
    member = await sign_in(running)
    job = await member.upload(b"id,name\n1,a\n2,b\n", "people.csv")
    assert job["state"] == "done", job
    db = config.teams_dir / "alpha" / "data.db"
    assert marker(db, job["id"]) == ("people", "new", 2)
    async with member.client() as c:
        tables = (await c.get(member.url("/data.json"))).json()["tables"]
    shown = {t["name"]: t["hidden"] for t in tables}
    assert shown["people"] is False and shown[IMPORTS_TABLE] is True, tables
    assert gateway_plugin.IMPORTS_TABLE == IMPORTS_TABLE
    assert [t.name for t in read(db).tables] == ["people"]  # the dashboard's list
