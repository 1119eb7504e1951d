"""Issue 19: numbers and dates a journalist's files write their own way ("12,5 %", "1.234,56",
"1,234.56", "45%", "31.12.2024", "12/31/2024") become numbers and ISO dates only when the user
chooses a conversion, which is checked against every value: by default nothing changes, and a
value that does not convert is named instead of being lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Config
from gateway.upload import importer
from gateway.upload.analyze import analyze
from gateway.upload.errors import ImportFailed
from gateway.upload.options import resolve
from tests.upload_support import Member, sign_in

HTML = {"accept": "text/html"}
CSV = (
    b"share;amount;us;pct;when;usdate;code\n"
    b"12,5 %;1.234,56;1,234.56;45%;31.12.2024;12/31/2024;00601\n"
    b"3 %;42,4;5;1.8%;01.02.2024;1/2/2024;00602\n"
    b";-0,5;1,000,000;-3 %;29.02.2024;;\n"
)


@pytest.fixture
async def member(start_gateway, config: Config) -> Member:
    running = await start_gateway(config, teams=("alpha",))
    return await sign_in(running)


async def ready(member: Member, content: bytes, filename: str) -> dict:
    r = await member.post(content, filename)
    assert r.status_code == 202, r.text
    return await member.wait(r.json()["jobs"][0], ("ready",))


async def confirm(member: Member, job: dict, **form: str):
    async with member.browser() as c:
        return await c.post(job["page"], data={"action": "import", **form}, headers=HTML)


def offered(job: dict) -> dict[str, list[str]]:
    return {c["name"]: [o["name"] for o in c["conversions"]] for c in job["analysis"]["columns"]}


def typed(member: Member, table: str) -> list[tuple]:
    with member.db() as conn:
        cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        select = ", ".join(f'"{c}", typeof("{c}")' for c in cols)
        return conn.execute(f"SELECT {select} FROM {table} ORDER BY rowid").fetchall()


async def test_conversions_are_offered_and_the_default_changes_nothing(member: Member):
    job = await ready(member, CSV, "figures.csv")
    assert offered(job) == {
        "share": ["percent_comma"],
        "amount": ["decimal_comma"],
        "us": ["thousands_comma"],
        "pct": ["percent"],
        "when": ["date_dmy"],  # 31.12 cannot be month first
        "usdate": ["date_mdy"],
        "code": [],  # leading zeros are not a number written another way
    }
    async with member.browser() as c:
        page = (await c.get(job["page"])).text
    assert (
        '<option value="decimal_comma">REAL: number with a decimal comma, 1.234,56 → 1234.56'
        in page
    )
    assert '<option value="date_dmy">TEXT: date, day first → ISO, 31.12.2024 → 2024-12-31' in page
    assert "Kept as written unless you choose a conversion." in page
    r = await confirm(member, job, table="as_written")
    assert r.status_code == 303
    done = await member.wait(job, ("done", "failed"))
    assert done["state"] == "done", done
    rows = typed(member, "as_written")
    assert rows[0] == (
        "12,5 %", "text", "1.234,56", "text", "1,234.56", "text", "45%", "text",
        "31.12.2024", "text", "12/31/2024", "text", "00601", "text",
    )  # fmt: skip


async def test_chosen_conversions_store_numbers_and_iso_dates(member: Member):
    job = await ready(member, CSV, "figures.csv")
    choice = {
        "type.0": "percent_comma", "type.1": "decimal_comma", "type.2": "thousands_comma",
        "type.3": "percent", "type.4": "date_dmy", "type.5": "date_mdy",
    }  # fmt: skip
    r = await confirm(member, job, table="converted", **choice)
    assert r.status_code == 303, r.text
    done = await member.wait(job, ("done", "failed"))
    assert done["state"] == "done", done
    assert done["result"]["converted"]["amount"] == "decimal_comma"
    with member.db() as conn:
        declared = [(r[1], r[2]) for r in conn.execute("PRAGMA table_info(converted)")]
    assert declared == [
        ("share", "REAL"), ("amount", "REAL"), ("us", "REAL"), ("pct", "REAL"),
        ("when", "TEXT"), ("usdate", "TEXT"), ("code", "TEXT"),
    ]  # fmt: skip
    assert typed(member, "converted") == [
        (12.5, "real", 1234.56, "real", 1234.56, "real", 45.0, "real",
         "2024-12-31", "text", "2024-12-31", "text", "00601", "text"),
        (3.0, "real", 42.4, "real", 5.0, "real", 1.8, "real",
         "2024-02-01", "text", "2024-01-02", "text", "00602", "text"),
        (None, "null", -0.5, "real", 1000000.0, "real", -3.0, "real",
         "2024-02-29", "text", "", "text", "", "text"),
    ]  # fmt: skip
    rows = await member.rows(done["result"]["table_url"])
    assert [r["amount"] for r in rows] == [1234.56, 42.4, -0.5]
    assert [r["when"] for r in rows] == ["2024-12-31", "2024-02-01", "2024-02-29"]
    async with member.browser() as c:
        page = (await c.get(job["page"])).text
    assert "Converted as you chose: share (percent with a decimal comma → number)" in page


async def test_ambiguous_commas_are_offered_both_ways_and_the_choice_decides(member: Member):
    content = b"n;label\n1,234;a\n5;b\n"
    job = await ready(member, content, "amb.csv")
    column = job["analysis"]["columns"][0]
    assert [(o["name"], o["type"], o["example"]) for o in column["conversions"]] == [
        ("decimal_comma", "REAL", ["1,234", "1.234"]),
        ("thousands_comma", "INTEGER", ["1,234", "1234"]),
    ]
    r = await confirm(member, job, table="thousands", **{"type.0": "thousands_comma"})
    assert r.status_code == 303
    assert (await member.wait(job, ("done", "failed")))["state"] == "done"
    job = await ready(member, content, "amb.csv")
    r = await confirm(member, job, table="decimals", **{"type.0": "decimal_comma"})
    assert r.status_code == 303
    assert (await member.wait(job, ("done", "failed")))["state"] == "done"
    assert typed(member, "thousands") == [
        (1234, "integer", "a", "text"),
        (5, "integer", "b", "text"),
    ]
    assert typed(member, "decimals") == [(1.234, "real", "a", "text"), (5.0, "real", "b", "text")]


async def test_a_value_that_does_not_convert_is_named_and_nothing_is_lost(member: Member):
    content = "rate;day\n12,5;31.01.2024\n7,25;31.02.2024\nn/a;01.03.2024\n3,0;02.03.2024\n"
    job = await ready(member, content.encode(), "rates.csv")
    rate, day = job["analysis"]["columns"]
    assert rate["conversions"] == [] and day["conversions"] == []
    assert rate["not_converted"] == [{"name": "decimal_comma", "label": "number with a decimal "
                                      "comma", "fails": 1, "row": 3, "value": "n/a"}]  # fmt: skip
    assert day["not_converted"][0]["row"] == 2  # 31 February is no date
    async with member.browser() as c:
        page = (await c.get(job["page"])).text
    assert "Not offered as a number with a decimal comma: row 3 holds “n/a”." in page
    r = await confirm(member, job, table="rates", **{"type.0": "decimal_comma"})
    assert r.status_code == 400
    assert (
        "Column 'rate' cannot be converted (number with a decimal comma): row 3 holds 'n/a'."
        in r.text.replace("&#39;", "'")
    )
    assert (await member.wait(job, ("ready",)))["state"] == "ready"  # fix it and go on
    r = await confirm(member, job, table="rates")
    assert r.status_code == 303
    assert (await member.wait(job, ("done", "failed")))["state"] == "done"
    assert [r[0] for r in typed(member, "rates")] == ["12,5", "7,25", "n/a", "3,0"]
    # The API's one-step upload is refused the same way, naming the row and value.
    failed = await member.upload(
        content.encode(), "rates.csv", table="r2", **{"type.1": "date_dmy"}
    )
    assert failed["state"] == "failed"
    assert "row 2 holds '31.02.2024'" in failed["error"]
    with member.db() as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'r2'").fetchone() == (
            0,
        )


def test_the_import_converts_every_cell_again_and_refuses_with_the_row(tmp_path: Path):
    """The analysis is not trusted alone: a file that no longer fits its analysis (or an
    analysis that was wrong) stops the import at the first value that does not convert."""
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_bytes(b"v;w\n1,5;a\n2,5;b\n3,5;c\n")
    bad.write_bytes(b"v;w\n1,5;a\n2,5;b\nx,5;c\n")  # same size and header, another third value
    analysis = analyze(good)
    options = resolve({"table": "t", "type.0": "decimal_comma"}, analysis, "good.csv")
    conn = importer.connect(tmp_path / "data.db")
    try:
        with pytest.raises(ImportFailed) as refused:
            importer.run_import(conn, bad, analysis, options, "_gateway_staging_x", job_id="x")
        assert str(refused.value).startswith("Row 3, column 'v': 'x,5' is not a number with")
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)
        result = importer.run_import(
            conn, good, analysis, options, "_gateway_staging_y", job_id="y"
        )
        assert result["converted"] == {"v": "decimal_comma"}
        assert conn.execute("SELECT v FROM t").fetchall() == [(1.5,), (2.5,), (3.5,)]
    finally:
        conn.close()
