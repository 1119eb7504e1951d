"""The page without JavaScript: a plain form post, the preview, choices, then the table."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest

from gateway.config import Config
from tests.upload_support import Member, sign_in


@pytest.fixture
async def member(start_gateway, config: Config) -> Member:
    running = await start_gateway(config, teams=("alpha", "beta"))
    return await sign_in(running)


async def wait_state(member: Member, job_path: str, *states: str) -> dict:
    job = {"url": member.url(job_path + ".json")}
    return await member.wait(job, states)


async def test_form_preview_choices_and_result(member: Member):
    origin = member.url("").rstrip("/")
    async with member.browser() as c:
        page = await c.get(member.url("/-/upload-csv"))
        assert page.status_code == 200
        assert 'enctype="multipart/form-data"' in page.text
        assert (
            "upload.onprogress" in (await c.get(member.url("/-/upload-csv/static/upload.js"))).text
        )
        csv = b"code;amount;label\n00601;10;a\n00602;12;b\n00603;;c\n"
        r = await c.post(
            member.url("/-/upload-csv"),
            files={"file": ("Sales 2024.csv", csv, "text/csv")},
            headers={"origin": origin},
        )
        assert r.status_code == 303, r.text
        job_path = r.headers["location"]
        job = await wait_state(member, job_path, "ready", "failed")
        assert job["state"] == "ready", job
        page = await c.get(member.url(job_path))
        assert "Review" in page.text and "00601" in page.text
        assert 'value="Sales 2024"' in page.text
        columns = {col["name"]: col for col in job["analysis"]["columns"]}
        assert columns["code"]["type"] == "TEXT" and columns["code"]["allowed"] == ["TEXT"]
        assert columns["amount"]["allowed"] == ["INTEGER", "REAL", "TEXT"]
        # An override that would change values is refused, with the reason, on the page.
        r = await c.post(
            member.url(job_path),
            data={"table": "sales", "type.0": "INTEGER"},
            headers={"origin": origin},
        )
        assert r.status_code == 400
        assert "cannot be INTEGER" in r.text and "00601" in r.text
        r = await c.post(
            member.url(job_path),
            data={
                "table": "sales",
                "mode": "new",
                "pk": "code",
                "type.1": "REAL",
                "empty_null": "1",
            },
            headers={"origin": origin},
        )
        assert r.status_code == 303
        job = await wait_state(member, job_path, "done", "failed")
        assert job["state"] == "done", job
        page = await c.get(member.url(job_path))
        assert 'id="table-link"' in page.text and "/data/sales" in page.text
        listing = await c.get(member.url("/-/upload-csv"))
        assert job["id"] in listing.text
    rows = await member.rows(job["result"]["table_url"])
    assert rows == [
        {"code": "00601", "amount": 10.0, "label": "a"},
        {"code": "00602", "amount": 12.0, "label": "b"},
        {"code": "00603", "amount": None, "label": "c"},
    ]
    with member.db() as conn:
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'sales'").fetchone()[0]
    assert re.search(r'"code" TEXT PRIMARY KEY', sql), sql


async def test_reanalyse_with_another_delimiter(member: Member):
    r = await member.post(b"a,b|c\n1,2|3\n", "pipes.csv")
    assert r.status_code == 202
    job = await member.wait(r.json()["jobs"][0], ("ready",))
    assert job["analysis"]["delimiter"] == ","
    async with member.client() as c:
        r = await c.post(
            job["page"], data={"action": "reanalyze", "delimiter": "pipe", "encoding": "utf-8"}
        )
    assert r.status_code == 303
    job = await member.wait(job, ("ready",))
    assert [col["name"] for col in job["analysis"]["columns"]] == ["a,b", "c"]


async def test_a_sibling_team_page_cannot_post_here(member: Member):
    async with member.browser() as c:
        r = await c.post(
            member.url("/-/upload-csv"),
            files={"file": ("x.csv", b"a\n1\n")},
            headers={"origin": member.url("", "beta").rstrip("/"), "accept": "application/json"},
        )
        assert r.status_code == 403, r.text
        r = await c.post(
            member.url("/-/upload-csv"),
            files={"file": ("x.csv", b"a\n1\n")},
            headers={"sec-fetch-site": "same-site", "accept": "application/json"},
        )
        assert r.status_code == 403
    assert member.running.app.upload.jobs.for_team("alpha") == []


async def test_signed_out_browser_is_sent_to_sign_in(member: Member):
    async with member.running.client() as c:
        r = await c.get(member.url("/-/upload-csv"))
    assert r.status_code in (302, 303, 307)
    # To the apex's sign-in flow, coming back here afterwards.
    location = r.headers["location"]
    assert location.startswith(member.running.config.base_url + "/")
    assert quote(member.url("/-/upload-csv"), safe="") in location


async def test_unknown_job_and_page_are_404(member: Member):
    async with member.client() as c:
        assert (await c.get(member.url("/-/upload-csv/jobs/nope.json"))).status_code == 404
        assert (await c.get(member.url("/-/upload-csv/elsewhere"))).status_code == 404
        assert (await c.get(member.url("/-/upload-csv/static/../../app.py"))).status_code == 404
