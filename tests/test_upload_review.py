"""Issue 19: a mistake on the review page is fixed there, from the spooled file, never by
uploading again; replace asks first, with row counts; a taken name is pointed out."""

from __future__ import annotations

import pytest

from gateway.config import Config
from tests.upload_support import Member, sign_in

HTML = {"accept": "text/html"}


@pytest.fixture
async def member(start_gateway, config: Config) -> Member:
    running = await start_gateway(config, teams=("alpha",))
    return await sign_in(running)


async def ready(member: Member, content: bytes, filename: str = "data.csv") -> dict:
    r = await member.post(content, filename)
    assert r.status_code == 202, r.text
    return await member.wait(r.json()["jobs"][0], ("ready",))


async def confirm(member: Member, job: dict, **form: str):
    async with member.browser() as c:
        return await c.post(job["page"], data={"action": "import", **form}, headers=HTML)


async def test_a_wrong_append_is_refused_on_the_review_page_and_can_be_fixed(member: Member):
    job = await ready(member, b"name,n\nZoe,1\n", "people.csv")
    r = await confirm(member, job, table="nosuch", mode="append")
    assert r.status_code == 400
    assert "There is no table 'nosuch' to append to." in r.text.replace("&#39;", "'")
    assert (await member.wait(job, ("ready",)))["state"] == "ready"
    done = await member.upload(b"name,n\nAli,2\n", "people.csv")  # the table to append to
    assert done["result"]["table"] == "people"
    r = await confirm(member, job, table="people", mode="append", **{"type.1": "TEXT"})
    assert r.status_code == 400 and "holds text" in r.text  # a numeric column stays numeric
    r = await confirm(member, job, table="people", mode="append")
    assert r.status_code == 303
    done = await member.wait(job, ("done", "failed"))
    assert done["state"] == "done" and done["result"]["mode"] == "append"
    rows = await member.rows(done["result"]["table_url"])
    assert [r["name"] for r in rows] == ["Ali", "Zoe"]


async def test_a_failure_during_the_import_returns_to_review_with_the_file_kept(member: Member):
    job = await ready(member, b"id,v\n1,a\n1,b\n", "dupes.csv")
    r = await confirm(member, job, table="dupes", mode="new", pk="id")
    assert r.status_code == 303
    back = await member.wait(job, ("ready", "failed", "done"))
    assert back["state"] == "ready", back
    assert "repeated values" in back["error"]
    async with member.browser() as c:
        page = (await c.get(job["page"])).text
    assert "The import was not done" in page and "the file is kept" in page
    r = await confirm(member, job, table="dupes", mode="new")
    done = await member.wait(job, ("done", "failed"))
    assert done["state"] == "done" and done["result"]["rows"] == 2


async def test_replace_asks_with_row_counts_and_says_what_it_removed(member: Member):
    old = await member.upload(b"a\n" + b"1\n" * 5400, "figures.csv")
    assert old["result"]["rows"] == 5400
    job = await ready(member, b"a\n" + b"2\n" * 1200, "figures.csv")
    async with member.browser() as c:
        page = (await c.get(job["page"])).text
    assert 'id="name-taken"' in page and "A table named figures already exists" in page
    assert '<option value="figures">' in page  # existing tables offered for append/replace
    r = await confirm(member, job, table="figures", mode="replace")
    assert r.status_code == 200
    assert "Replace the table figures?" in r.text
    assert "holds 5,400 rows" in r.text and "1,200 rows" in r.text
    assert (await member.wait(job, ("ready",)))["state"] == "ready"  # nothing happened yet
    r = await confirm(member, job, table="figures", mode="replace", confirm_replace="1")
    assert r.status_code == 303
    done = await member.wait(job, ("done", "failed"))
    assert done["result"]["mode"] == "replace" and done["result"]["replaced_rows"] == 5400
    async with member.browser() as c:
        page = (await c.get(job["page"])).text
    assert (
        "Replaced the 5,400 rows of" in page and "The old table and its 5,400 rows are kept" in page
    )
    with member.db() as conn:
        assert conn.execute("SELECT count(*), min(a) FROM figures").fetchone() == (1200, 2)


async def test_columns_can_be_renamed_and_dropped_on_the_review_page(member: Member):
    csv = b"Name,Internal id,Amount (EUR),junk\nZoe,x1,12,a\nAli,x2,7,b,overflow\n"
    job = await ready(member, csv, "money.csv")
    r = await confirm(member, job, table="money", **{"name.0": "name", "name.0x": ""})
    assert r.status_code == 303  # a case-only rename; unknown fields are ignored
    done = await member.wait(job, ("done", "failed"))
    assert done["state"] == "done"
    job = await ready(member, csv, "money.csv")
    bad = {"table": "money2", "name.0": "amount", "name.2": "Amount"}
    r = await confirm(member, job, **bad)
    assert r.status_code == 400 and "Two columns would be called 'Amount'" in r.text.replace(
        "&#39;", "'"
    )
    r = await confirm(member, job, table="money2", pk="Internal id", **{"drop.1": "1"})
    assert r.status_code == 400 and "a column you chose to drop" in r.text
    form = {"table": "money2", "name.2": "amount_eur", "drop.1": "1", "drop.3": "1"}
    r = await confirm(member, job, **form)
    assert r.status_code == 303
    done = await member.wait(job, ("done", "failed"))
    assert done["state"] == "done", done
    with member.db() as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(money2)")]
        rows = conn.execute("SELECT * FROM money2 ORDER BY rowid").fetchall()
    assert cols == ["Name", "amount_eur", "_extra"]
    assert rows == [("Zoe", 12, None), ("Ali", 7, '["overflow"]')]
