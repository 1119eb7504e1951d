"""Issue 6, section 6: every bad input gets a clear message (JSON and page), nothing is
half-written, and the gateway stays responsive. One real gateway per test, real workers."""

from __future__ import annotations

import os

import pytest

from gateway.config import Config
from gateway.upload.jobs import SERVICE_TABLES
from tests.upload_support import Member, sign_in, staging_tables


def user_tables(member: Member) -> list[str]:
    with member.db() as conn:
        return [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            # Litestream's (backups) and the imports' publication markers: not the user's.
            if not r[0].startswith(SERVICE_TABLES)
        ]


async def assert_clean_and_responsive(member: Member) -> None:
    with member.db() as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert staging_tables(conn) == []
    spool = member.running.config.teams_dir / member.team / ".spool"
    assert [p for p in os.listdir(spool) if p.endswith((".upload", ".part"))] == []
    async with member.client() as c:
        assert (await c.get(member.url("/-/upload-csv"))).status_code == 200


async def failed_with(member: Member, content: bytes, *needles: str, **fields: str) -> dict:
    job = await member.upload(content, **fields)
    assert job["state"] == "failed", job
    for needle in needles:
        assert needle in job["error"], job["error"]
    # The same message on the job's page.
    async with member.client() as c:
        page = await c.get(job["page"])
    assert page.status_code == 200
    assert needles[0] in page.text.replace("&#39;", "'")
    return job


@pytest.fixture
async def member(start_gateway, config: Config) -> Member:
    running = await start_gateway(config, teams=("alpha", "beta"))
    return await sign_in(running)


async def test_binary_nul_and_encoding_errors(member: Member):
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 40
    await failed_with(member, png, "PNG image", "not a CSV file")
    noise = bytes((i * 7 + 1) % 31 + 1 for i in range(5000))  # control bytes, no NUL
    await failed_with(member, noise, "does not look like a text file")
    # A NUL far beyond the sniffing sample is still caught while streaming.
    late_nul = b"a,b\n" + b"1,2\n" * 100_000 + b"3,\x004\n"
    await failed_with(member, late_nul, "NUL byte at byte")
    # UTF-8 for 400 kB, then one cp1252 byte: a clear error, no mojibake import.
    bad_utf8 = b"name,city\n" + "Zoë,Köln\n".encode() * 40_000 + b"Ren\xe9,Paris\n"
    job = await failed_with(
        member, bad_utf8, "not valid utf-8", "Choose another encoding", encoding="utf-8"
    )
    assert "on line 40002 " in job["error"]
    # Undetected, the windows read through the file find it before the full pass.
    await failed_with(member, bad_utf8, "mixes encodings", "line 40002")
    # Mixed encodings inside the sample are refused up front.
    mixed = "a,b\nZoë,1\n".encode() + b"Ren\xe9,2\n"
    await failed_with(member, mixed, "mixes encodings")
    assert user_tables(member) == []
    await assert_clean_and_responsive(member)


async def test_cp1252_fallback_and_manual_override(member: Member):
    job = await member.upload("name,city\nRené,Zürich\n".encode("cp1252"), "latin.csv")
    assert job["state"] == "done", job
    assert job["analysis"]["encoding"] == "cp1252"
    assert (await member.rows(job["result"]["table_url"]))[0]["name"] == "René"
    bom = "\ufeffname;n\nÅsa;1\n".encode()
    job = await member.upload(bom, "bom.csv")
    assert job["analysis"]["encoding"] == "utf-8-sig"
    assert job["analysis"]["delimiter"] == ";"
    assert (await member.rows(job["result"]["table_url"]))[0] == {"rowid": 1, "name": "Åsa", "n": 1}
    # The manual override wins over detection.
    job = await member.upload("a|b\nZoë|1\n".encode(), "forced.csv", encoding="latin-1")
    assert job["state"] == "done"
    assert (await member.rows(job["result"]["table_url"]))[0]["a"] == "ZoÃ«"


async def test_huge_field_and_too_many_columns(member: Member):
    huge = b"a,b\n1," + b"x" * (100 * 1024 * 1024) + b"\n"
    await failed_with(member, huge, "line 2", "16 MiB")
    wide = (",".join(f"c{i}" for i in range(5000)) + "\n" + ",".join("1" * 5000) + "\n").encode()
    await failed_with(member, wide, "5000 columns", "at most 2000")
    assert user_tables(member) == []
    await assert_clean_and_responsive(member)


async def test_empty_and_header_only(member: Member):
    await failed_with(member, b"", "empty")
    await failed_with(member, b"a,b,c\n", "no data rows")
    await failed_with(member, b"\n\n", "no header row")
    assert user_tables(member) == []
    await assert_clean_and_responsive(member)


async def test_duplicate_blank_and_case_colliding_headers(member: Member):
    job = await member.upload(b"a,A,,a,b\n1,2,3,4,5\n")
    assert job["state"] == "done", job
    names = [c["name"] for c in job["analysis"]["columns"]]
    assert names == ["a", "A_2", "column_3", "a_3", "b"]
    assert any("repeats" in n for n in job["analysis"]["notes"])
    rows = await member.rows(job["result"]["table_url"])
    assert rows == [{"rowid": 1, "a": 1, "A_2": 2, "column_3": 3, "a_3": 4, "b": 5}]


@pytest.mark.parametrize(
    "name",
    [
        "sqlite_master",
        "SQLITE_x",
        "two\nlines",
        "tab\there",
        "x" * 10_000,
        "_gateway_staging_1",
        "a]b",
    ],
)
async def test_hostile_table_names_are_refused(member: Member, name: str):
    r = await member.post(b"a\n1\n", auto="1", table=name)
    assert r.status_code == 400, r.text
    assert r.json()["detail"]
    assert user_tables(member) == []
    await assert_clean_and_responsive(member)


async def test_hostile_names_are_quoted_never_executed(member: Member):
    with member.db() as conn:
        conn.execute("CREATE TABLE victim (x)")
    name = 'x"; DROP TABLE victim;--[y'
    header = '"a""b",[c],;--,"line\nbreak",sqlite_x,' + "L" * 10_000 + "\n"
    job = await member.upload((header + "1,2,3,4,5,6\n").encode(), table=name)
    assert job["state"] == "done", job
    assert job["result"]["table"] == name
    assert sorted(user_tables(member)) == sorted(["victim", name])
    rows = await member.rows(job["result"]["table_url"])
    assert list(rows[0]) == ["rowid", 'a"b', "[c)", ";--", "line break", "sqlite_x", "L" * 100]
    assert list(rows[0].values()) == [1, 1, 2, 3, 4, 5, 6]


async def test_path_traversal_in_filename(member: Member):
    job = await member.upload(b"a\n1\n", filename="../../../../etc/passwd.csv")
    assert job["state"] == "done"
    assert job["filename"] == "passwd.csv"
    assert job["result"]["table"] == "passwd"
    data_dir = member.running.config.data_dir
    assert not (data_dir.parent / "etc").exists()
    assert not list(data_dir.parent.glob("**/passwd*"))
    job = await member.upload(b"a\n1\n", filename="..\\..\\win.csv")
    assert job["filename"] == "win.csv"


async def test_upload_to_a_team_the_user_is_not_in(member: Member):
    r = await member.post(b"a\n1\n", team="beta", auto="1")
    assert r.status_code == 401  # the token is for alpha: refused before any byte is spooled
    async with member.browser() as c:
        r = await c.post(
            member.url("/-/upload-csv", "beta"),
            files={"file": ("x.csv", b"a\n1\n")},
            headers={"accept": "application/json"},
        )
    assert r.status_code == 403, r.text
    assert "not a member" in r.json()["detail"]
    assert not (member.running.config.teams_dir / "beta" / ".spool").exists()
    assert member.running.app.upload.jobs.for_team("beta") == []
