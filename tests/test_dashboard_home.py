"""Issue 19: the dashboard is each team's home: its tables with row counts and sizes (read from
the team's database by the gateway), its last imports, and who can see it. Two teams, and a
team with 1,000 tables (the page stays bounded and every table is counted)."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from gateway.config import Config
from gateway.upload.inventory import Inventories, read
from tests.auth_support import Browser, make_user
from tests.conftest import Running
from tests.upload_support import sign_in


def many_tables(db: Path, n: int, rows: int = 3) -> None:
    with sqlite3.connect(db) as conn:
        for i in range(n):
            conn.execute(f"CREATE TABLE t{i:04d} (id INTEGER PRIMARY KEY, v TEXT)")
            conn.executemany(f"INSERT INTO t{i:04d} (v) VALUES (?)", [("x" * i * 5,)] * rows)


def test_inventory_counts_sizes_and_hides_staging_tables(tmp_path: Path):
    db = tmp_path / "data.db"
    many_tables(db, 3, rows=5)
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE _gateway_staging_abc (x)")
        conn.execute("CREATE INDEX t0002_v ON t0002 (v)")
        conn.execute("CREATE TABLE big (v TEXT)")
        conn.executemany("INSERT INTO big VALUES (?)", [("y" * 1000,)] * 200)
    inv = read(db)
    assert [t.name for t in inv.tables] == ["big", "t0000", "t0001", "t0002"]
    assert [t.rows for t in inv.tables] == [200, 5, 5, 5]
    sizes = {t.name: t.bytes for t in inv.tables}
    assert sizes["big"] > 200_000 and sizes["t0002"] > sizes["t0001"]  # its index counts
    assert inv.largest(1)[0].name == "big"
    assert inv.disk_bytes == db.stat().st_size


def test_inventory_is_cached_until_the_database_changes(tmp_path: Path):
    db = tmp_path / "data.db"
    many_tables(db, 2)
    cache = Inventories()
    first = cache.get(db)
    assert cache.get(db) is first
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO t0000 (v) VALUES ('new')")
    again = cache.get(db)
    assert again is not first and again.tables[0].rows == 4


@pytest.fixture
async def running(start_gateway, config: Config) -> Running:
    return await start_gateway(config, teams=("alpha", "beta"))


async def test_dashboard_shows_each_teams_tables_imports_and_members(running: Running):
    member = await sign_in(running, "alpha", "ann@example.org")
    job = await member.upload(b"name,n\nZoe,1\nAli,2\n", "people.csv")
    assert job["state"] == "done"
    failed = await member.upload(b"", "empty.csv")
    assert failed["state"] == "failed"
    with sqlite3.connect(running.config.teams_dir / "beta" / "data.db") as conn:
        conn.execute("CREATE TABLE budget (line TEXT, amount REAL)")
        conn.executemany("INSERT INTO budget VALUES (?, ?)", [("a", 1.5)] * 1234)
    user = make_user(running, "bob@example.org", {"beta": "owner"})
    from gateway.auth.accounts import add_member

    add_member(running.app.store, "alpha", user, "member")
    running.app.auth.changed()
    browser = Browser(running)
    await browser.login("bob@example.org")
    r = await browser.get(running.url(None, "/dashboard"))
    await browser.close()
    assert r.status_code == 200
    page = r.text
    alpha = page[page.index('id="team-alpha"') : page.index('id="team-beta"')]
    beta = page[page.index('id="team-beta"') :]
    assert ">people</a>" in alpha and '<td class="num">2</td>' in alpha
    assert "people.csv" in alpha and "empty.csv" in alpha and "failed" in alpha
    assert "ann@example.org (member)" in alpha and "bob@example.org (member)" in alpha
    assert ">budget</a>" in beta and "1,234" in beta and "No imports yet." in beta
    assert "bob@example.org (owner)" in beta and "ann@example.org" not in beta
    assert re.search(r"1 table, [\d.]+ KB on disk", beta)


async def test_dashboard_with_1000_tables_lists_the_largest_and_counts_all(running: Running):
    db = running.config.teams_dir / "alpha" / "data.db"
    many_tables(db, 1000)
    make_user(running, "c@example.org", {"alpha": "owner"})
    browser = Browser(running)
    await browser.login("c@example.org")
    r = await browser.get(running.url(None, "/dashboard"))
    await browser.close()
    assert r.status_code == 200
    assert "1000 tables" in r.text and "the 100 largest are listed here" in r.text
    assert r.text.count("<tr><td><a href=") == 100
    assert all(f">{t.name}</a>" in r.text for t in read(db).largest(100))
    assert ">t0000</a>" not in r.text and "not counted" not in r.text


async def test_owners_rename_and_delete_a_table_after_a_confirmation(running: Running):
    db = running.config.teams_dir / "alpha" / "data.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE people (name TEXT)")
        conn.executemany("INSERT INTO people VALUES (?)", [("x",)] * 5400)
        conn.execute("CREATE TABLE other (v)")
    make_user(running, "own@example.org", {"alpha": "owner"})
    make_user(running, "mem@example.org", {"alpha": "member"})
    owner, member = Browser(running), Browser(running)
    try:
        await owner.login("own@example.org")
        await member.login("mem@example.org")
        dash = await owner.get(running.url(None, "/dashboard"))
        assert 'href="/teams/alpha/table?name=people">Rename or delete' in dash.text
        assert "Rename or delete" not in (await member.get(running.url(None, "/dashboard"))).text
        page = await owner.get(running.url(None, "/teams/alpha/table?name=people"))
        assert "Delete people and its 5,400 rows" in page.text  # the page is the confirmation
        r = await member.post("/teams/alpha/delete-table", {"table": "people"}, page="/dashboard")
        assert r.status_code == 403
        form = {"table": "people", "new_name": "other"}
        r = await owner.post("/teams/alpha/rename-table", form, page="/dashboard")
        assert r.status_code == 400 and "is taken" in r.text
        form["new_name"] = "sqlite_x"
        r = await owner.post("/teams/alpha/rename-table", form, page="/dashboard")
        assert r.status_code == 400 and "reserved" in r.text
        form["new_name"] = "staff"
        r = await owner.post("/teams/alpha/rename-table", form, page="/dashboard")
        assert r.status_code == 303
        r = await owner.post("/teams/alpha/delete-table", {"table": "staff"}, page="/dashboard")
        assert r.status_code == 303
        # Litestream's bookkeeping (backups) is not the journalist's to drop.
        r = await owner.post(
            "/teams/alpha/delete-table", {"table": "_litestream_seq"}, page="/dashboard"
        )
        assert r.status_code == 400, r.text
        with sqlite3.connect(db) as conn:
            names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
        # Only the journalist's tables matter here; Litestream keeps its own beside them.
        assert [n for n in names if not n.startswith("_litestream_")] == ["other"]
    finally:
        await owner.close()
        await member.close()
