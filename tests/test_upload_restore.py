"""Issue 19: a table replaced by an upload stays restorable: it leaves the database Datasette
serves (a public team's readers cannot query it), is kept in the team's trash for
``replaced_table_days``, is listed on the dashboard with a Restore button, and restoring puts
its rows back (the table it displaces is kept in turn). Expired tables are purged."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from gateway.config import Config
from gateway.upload import importer, tables, trash
from gateway.upload.analyze import analyze
from gateway.upload.jobs import IMPORTS_TABLE
from gateway.upload.options import resolve
from tests.auth_support import Browser, make_user
from tests.conftest import Running
from tests.upload_support import Member, sign_in

HTML = {"accept": "text/html"}


@pytest.fixture
async def running(start_gateway, config: Config) -> Running:
    return await start_gateway(config, teams=("alpha",))


async def replace(member: Member, content: bytes, filename: str) -> dict:
    r = await member.post(content, filename)
    assert r.status_code == 202, r.text
    job = await member.wait(r.json()["jobs"][0], ("ready",))
    form = {"action": "import", "table": "figures", "mode": "replace"}
    async with member.browser() as c:
        asked = await c.post(job["page"], data=form, headers=HTML)
        assert asked.status_code == 200
        assert "The old table leaves Datasette and is kept for 7 days" in asked.text
        r = await c.post(job["page"], data={**form, "confirm_replace": "1"}, headers=HTML)
    assert r.status_code == 303
    return await member.wait(job, ("done", "failed"))


def figures(running: Running) -> tuple[int, int]:
    with sqlite3.connect(running.config.teams_dir / "alpha" / "data.db") as conn:
        return conn.execute("SELECT count(*), min(a) FROM figures").fetchone()


async def test_replace_then_restore_gets_the_old_rows_back(running: Running):
    uploader = await sign_in(running)
    old = await uploader.upload(b"a,b\n" + b"1,x\n" * 5400, "figures.csv")
    assert old["result"]["rows"] == 5400
    done = await replace(uploader, b"a,b\n" + b"2,y\n" * 1200, "figures.csv")
    assert done["state"] == "done" and done["result"]["replaced_rows"] == 5400
    entry = done["result"]["kept"]
    assert figures(running) == (1200, 2)
    team_dir = running.config.teams_dir / "alpha"
    assert (team_dir / ".trash" / f"{entry}.sqlite3").exists()
    # Out of the database Datasette serves: its SQL sees no trace of the old table.
    async with uploader.client() as c:
        r = await c.get(
            uploader.url("/data.json"),
            params={"sql": "select name from sqlite_master", "_shape": "array"},
        )
    assert r.status_code == 200, r.text
    service = ("_litestream", IMPORTS_TABLE)  # bookkeeping, hidden; never the replaced table
    assert [row["name"] for row in r.json() if not row["name"].startswith(service)] == ["figures"]
    async with uploader.browser() as c:
        page = (await c.get(done["page"])).text
    assert "The old table and its 5,400 rows are kept, out of Datasette, for 7 days" in page
    assert f'href="{running.config.base_url}/dashboard#kept-alpha"' in page

    make_user(running, "mem@example.org", {"alpha": "member"})
    member = Browser(running)
    try:
        await member.login("mem@example.org")
        dash = (await member.get(running.url(None, "/dashboard"))).text
        assert 'id="kept-alpha"' in dash and "Restore figures</button>" in dash
        assert "figures · 5,400 rows" in dash and "by figures.csv" in dash
        r = await member.post("/teams/alpha/restore-table", {"entry": entry}, page="/dashboard")
        assert r.status_code == 303, r.text
        assert figures(running) == (5400, 1)
        assert not (team_dir / ".trash" / f"{entry}.sqlite3").exists()
        # The displaced table is kept in turn, so the restore can be undone the same way.
        kept = trash.entries(team_dir, running.config.replaced_table_days)
        assert [(k["original"], k["rows"]) for k in kept] == [("figures", 1200)]
        r = await member.post(
            "/teams/alpha/restore-table", {"entry": kept[0]["id"]}, page="/dashboard"
        )
        assert r.status_code == 303
        assert figures(running) == (1200, 2)
        r = await member.post("/teams/alpha/restore-table", {"entry": entry}, page="/dashboard")
        assert r.status_code == 400 and "no such kept table" in r.text
        r = await member.post("/teams/alpha/restore-table", {"entry": "../x"}, page="/dashboard")
        assert r.status_code == 400
    finally:
        await member.close()


async def test_kept_tables_expire(running: Running):
    uploader = await sign_in(running)
    await uploader.upload(b"a\n1\n", "figures.csv")
    done = await replace(uploader, b"a\n2\n", "figures.csv")
    team_dir = running.config.teams_dir / "alpha"
    entry = done["result"]["kept"]
    info_path = team_dir / ".trash" / f"{entry}.json"
    info = json.loads(info_path.read_text())
    info["replaced_at"] -= running.config.replaced_table_days * 86400 + 60
    info_path.write_text(json.dumps(info))
    make_user(running, "own@example.org", {"alpha": "owner"})
    owner = Browser(running)
    try:
        await owner.login("own@example.org")
        dash = (await owner.get(running.url(None, "/dashboard"))).text
    finally:
        await owner.close()
    assert 'id="kept-alpha"' not in dash
    assert list((team_dir / ".trash").iterdir()) == []


def test_a_crash_after_the_replace_loses_nothing(tmp_path: Path):
    """The old table is renamed aside inside the import's transaction; if the worker dies
    before moving it to the trash, the next start (or hourly round) finishes the move."""
    team_dir = tmp_path / "alpha"
    team_dir.mkdir()
    with sqlite3.connect(team_dir / "data.db") as conn:
        conn.execute("CREATE TABLE figures (a INTEGER PRIMARY KEY NOT NULL, b TEXT)")
        conn.executemany("INSERT INTO figures VALUES (?, ?)", [(i, "old") for i in range(50)])
    csv = tmp_path / "new.csv"
    csv.write_bytes(b"a,b\n1,new\n")
    analysis = analyze(csv)
    options = resolve({"table": "figures", "mode": "replace"}, analysis, "new.csv")
    trash.note(team_dir, "0123456789abcdef", original="figures", replaced_at=1e10)
    conn = importer.connect(team_dir / "data.db")
    try:
        job = "0123456789abcdef"
        staging = f"_gateway_staging_{job}"
        importer.run_import(
            conn, csv, analysis, options, staging, job_id=job, keep_as=trash.aside_name(job)
        )
    finally:
        conn.close()  # the worker "dies" here, before move_out
    tables.recover_trash(team_dir, 7)
    with sqlite3.connect(team_dir / "data.db") as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert sorted(names) == [IMPORTS_TABLE, "figures"]
    (kept,) = trash.entries(team_dir, 1e9)
    assert kept["rows"] == 50 and kept["original"] == "figures"
    tables.restore_table(team_dir, "0123456789abcdef")
    with sqlite3.connect(team_dir / "data.db") as conn:
        assert conn.execute("SELECT count(*), max(a) FROM figures").fetchone() == (50, 49)
        schema = conn.execute("SELECT sql FROM sqlite_master WHERE name='figures'").fetchone()
    assert "PRIMARY KEY NOT NULL" in schema[0]  # the table's own schema came back
