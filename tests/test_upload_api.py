"""The upload API end to end: a real gateway, real worker processes, real Datasette reads."""

from __future__ import annotations

from gateway.config import Config
from tests.upload_support import sign_in, staging_tables


async def test_csv_becomes_typed_table_readable_through_datasette(start_gateway, config: Config):
    running = await start_gateway(config, teams=("alpha",))
    member = await sign_in(running)
    csv = (
        b"id,zip,price,name,note\n1,00601,1.50,Ana,nan\n2,12345,2,Bo,Infinity\n3,02139,,Cy,1_000\n"
    )
    job = await member.upload(csv, "places.csv")
    assert job["state"] == "done", job
    assert job["result"]["table"] == "places"
    rows = await member.rows(job["result"]["table_url"])
    assert rows == [
        {"rowid": 1, "id": 1, "zip": "00601", "price": 1.5, "name": "Ana", "note": "nan"},
        {"rowid": 2, "id": 2, "zip": "12345", "price": 2.0, "name": "Bo", "note": "Infinity"},
        {"rowid": 3, "id": 3, "zip": "02139", "price": None, "name": "Cy", "note": "1_000"},
    ]
    with member.db() as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert staging_tables(conn) == []


async def test_several_files_in_one_post_and_tsv(start_gateway, config: Config):
    running = await start_gateway(config, teams=("alpha",))
    member = await sign_in(running)
    async with member.client() as c:
        r = await c.post(
            member.url("/-/upload-csv"),
            files=[
                ("file", ("one.tsv", b"name\tcount\nx\t1\ny\t2\n", "text/tab-separated-values")),
                ("file", ("two.csv", b"a|b\n1|2\n", "text/plain")),
            ],
            data={"auto": "1"},
            headers={"accept": "application/json"},
        )
    assert r.status_code == 202, r.text
    jobs = [await member.wait(j, ("done", "failed")) for j in r.json()["jobs"]]
    assert [(j["state"], j["result"]["table"]) for j in jobs] == [("done", "one"), ("done", "two")]
    assert [j["analysis"]["delimiter_name"] for j in jobs] == ["tab", "pipe"]
    assert await member.rows(jobs[0]["result"]["table_url"]) == [
        {"rowid": 1, "name": "x", "count": 1},
        {"rowid": 2, "name": "y", "count": 2},
    ]
    async with member.client() as c:
        listing = (await c.get(member.url("/-/upload-csv/jobs.json"))).json()
    assert {j["id"] for j in listing["jobs"]} == {j["id"] for j in jobs}
