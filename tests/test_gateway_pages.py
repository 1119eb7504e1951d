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


def onward(r) -> list[tuple[str, str]]:
    """The links an error page offers, as (href, text)."""
    import html
    import re

    return [
        (html.unescape(h), html.unescape(t))
        for h, t in re.findall(r'<a href="([^"]*)">([^<]*)</a>', r.text)
    ]


@pytest.fixture
async def two_teams(start_gateway, config: Config) -> Running:
    return await start_gateway(config, teams=("alpha", "beta"))


async def test_team_host_error_pages_link_back(two_teams: Running):
    running = two_teams
    apex = running.config.base_url
    home = running.config.team_url("alpha")
    back = [(f"{apex}/dashboard", "Your dashboard"), (f"{apex}/", "Front page")]
    async with running.client() as c:
        # An unknown team host: the apex's way in.
        r = await c.get(running.url("nosuch", "/"), headers=HTML)
        assert r.status_code == 404 and onward(r) == back
    member = await sign_in(running, "alpha", "m@example.org")
    outsider = await sign_in(running, "beta", "o@example.org")
    async with outsider.browser() as c:  # signed in, not a member of alpha
        r = await c.get(running.url("alpha", "/data?x=1"), headers=HTML)
    assert r.status_code == 403
    next_url = f"{apex}/login?next={home.replace(':', '%3A').replace('/', '%2F')}%2Fdata%3Fx%3D1"
    assert onward(r) == [(next_url, "Sign in as someone else"), *back]
    async with member.browser() as c:  # a member: the team's pages
        r = await c.get(running.url("alpha", "/-/upload-csv/nosuch"), headers=HTML)
        assert r.status_code == 404
        mine = [(f"{home}/", "alpha's Datasette"), (f"{home}/-/upload-csv", "Upload a CSV")]
        assert onward(r) == [*mine, *back]
        running.app.fleet.set_maintenance("alpha", "Back at 5pm.")
        r = await c.get(running.url("alpha", "/"), headers=HTML)
        assert r.status_code == 503 and "Back at 5pm." in r.text
        assert onward(r) == [*mine, *back]
        r = await c.get(running.url("alpha", "/"), headers=JSON)  # API clients: no links
        assert r.status_code == 503 and set(r.json()) == {"ok", "status", "error", "detail"}
    # An anonymous reader of a public team: the team, and a way to sign in.
    from gateway.auth.accounts import set_public

    set_public(running.app.store, "alpha", True)
    running.app.auth.changed()
    async with running.client() as c:
        r = await c.get(running.url("alpha", "/"), headers=HTML)
    assert r.status_code == 503
    assert onward(r) == [
        (f"{home}/", "alpha's Datasette"),
        (f"{apex}/login?next={home.replace(':', '%3A').replace('/', '%2F')}%2F", "Sign in"),
        *back,
    ]
