"""Issue 19: every gateway error is the product's own answer (a page for people, JSON for API
clients), including Starlette's own 404, 405 and form-size errors, and empty table names are
refused as docs/upload.md says."""

from __future__ import annotations

import pytest

from gateway.config import Config
from tests.conftest import Running
from tests.upload_support import Member, sign_in

HTML = {"accept": "text/html,application/xhtml+xml"}
JSON = {"accept": "application/json"}


@pytest.fixture
async def running(start_gateway, config: Config) -> Running:
    return await start_gateway(config, teams=("alpha",))


def product_page(r, status: int, *needles: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-store"
    assert '<html lang="en">' in r.text and f"<title>{status} " in r.text
    assert '<a href="/">Front page</a>' in r.text
    for needle in needles:
        assert needle in r.text.replace("&#39;", "'"), r.text


async def test_apex_unknown_path_and_wrong_method(running: Running):
    async with running.client() as c:
        r = await c.get(running.url(None, "/no/such/page"), headers=HTML)
        product_page(r, 404, "There is no page at /no/such/page.")
        r = await c.get(running.url(None, "/no/such/page"), headers=JSON)
        assert r.status_code == 404
        assert r.json() == {
            "ok": False, "status": 404, "error": "Not found",
            "detail": "There is no page at /no/such/page.",
        }  # fmt: skip
        r = await c.delete(running.url(None, "/dashboard"), headers=HTML)
        product_page(r, 405, "This page does not take DELETE requests.")
        assert "GET" in r.headers["allow"]


async def test_an_oversized_form_field_gets_the_product_page(running: Running):
    async with running.client() as c:
        login = running.url(None, "/login")
        r = await c.post(
            login, data={"email": "a@b.org", "password": "x" * 1_000_000}, headers=HTML
        )
        product_page(r, 400, "A form field was far larger", "64KB at most")
        r = await c.post(
            login, data={"email": "a@b.org", "password": "x" * 1_000_000}, headers=JSON
        )
        assert r.status_code == 400 and "far larger" in r.json()["detail"]


@pytest.fixture
async def member(running: Running) -> Member:
    return await sign_in(running)


async def test_an_oversized_review_form_is_a_400_not_a_500(member: Member):
    r = await member.post(b"a,b\n1,2\n", "x.csv")
    job = await member.wait(r.json()["jobs"][0], ("ready",))
    async with member.client() as c:
        r = await c.post(job["page"], data={"table": "t", "pk": "x" * 2_000_000}, headers=JSON)
    assert r.status_code == 400, r.text
    assert "could not be read" in r.json()["detail"]
    assert (await member.wait(job, ("ready",)))["state"] == "ready"  # nothing was lost


async def test_an_empty_table_name_is_refused_not_replaced(member: Member):
    r = await member.post(b"a,b\n1,2\n", "x.csv", auto="1", table="  ")
    assert r.status_code == 400 and r.json()["detail"] == "Give the table a name."
    r = await member.post(b"a,b\n1,2\n", "x.csv")
    job = await member.wait(r.json()["jobs"][0], ("ready",))
    async with member.browser() as c:
        r = await c.post(job["page"], data={"table": "", "mode": "new"}, headers=HTML)
    assert r.status_code == 400
    assert "Give the table a name." in r.text
    assert (await member.wait(job, ("ready",)))["state"] == "ready"  # fix it and import
    # No table field at all (the API's default) still names the table after the file.
    job = await member.upload(b"a,b\n1,2\n", "named.csv")
    assert job["state"] == "done" and job["result"]["table"] == "named"
