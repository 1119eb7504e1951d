"""Single sign-on across team subdomains, against a real gateway and real Datasette processes.

Each test starts the gateway with teams alpha and beta; ann owns alpha, bob owns beta.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest

from gateway.config import Config
from tests.auth_support import Browser, browsers, make_user
from tests.conftest import Running, StartGateway

Make = Callable[[Running], Browser]
__all__ = ["browsers"]


@pytest.fixture
async def site(config: Config, start_gateway: StartGateway) -> Running:
    gw = await start_gateway(config, teams=("alpha", "beta"))
    make_user(gw, "ann@example.org", {"alpha": "owner"})
    make_user(gw, "bob@example.org", {"beta": "owner"})
    await gw.wait_healthy("alpha")
    await gw.wait_healthy("beta")
    return gw


async def test_register_provisions_a_team_and_lands_on_the_dashboard(
    site: Running, browsers: Make
) -> None:
    b = browsers(site)
    r = await b.post(
        "/register",
        {"email": "cat@example.org", "password": "a long enough passphrase", "team": "gamma"},
    )
    assert r.status_code == 303 and r.headers["location"] == "/dashboard"
    cookie = r.headers["set-cookie"]
    assert "Domain=localhost" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Path=/" in cookie and "Secure" not in cookie  # http base URL
    await site.wait_healthy("gamma")
    page = await b.get(site.url(None, "/dashboard"))
    assert page.status_code == 200
    assert "gamma" in page.text and site.url("gamma", "/-/upload-csv") in page.text
    assert 'badge s-up">up<' in page.text
    actor = await b.get(site.url("gamma", "/-/actor.json"))
    assert actor.status_code == 200, actor.text
    assert actor.json()["actor"]["email"] == "cat@example.org"
    # A taken slug or a bad one is a clear 400 on the form, nothing half-written.
    for team in ("gamma", "Bad Slug!", "admin"):
        r = await b.post(
            "/register",
            {"email": "dan@example.org", "password": "another passphrase", "team": team},
        )
        assert r.status_code == 400 and 'role="alert"' in r.text
    assert (
        site.app.store.query("SELECT count(*) FROM users WHERE email = 'dan@example.org'")[0][0]
        == 0
    )


async def test_member_reaches_team_with_actor_and_forged_identity_is_ignored(
    site: Running, browsers: Make
) -> None:
    b = browsers(site)
    r = await b.login("ann@example.org")
    assert r.status_code == 303
    r = await b.get(site.url("alpha", "/-/actor.json"))
    assert r.status_code == 200
    actor = r.json()["actor"]
    assert actor["email"] == "ann@example.org" and actor["id"].startswith("u_")
    # A client-sent identity header never reaches Datasette (stripped; unsigned would fail).
    forged = {"x-gateway-actor": json.dumps({"id": "root"}), "x-gateway-user": "root"}
    r = await b.get(site.url("alpha", "/-/actor.json"), headers=forged)
    assert r.json()["actor"]["email"] == "ann@example.org"
    # Anonymous with a forged header: still nobody, and redirected to sign in.
    anon = browsers(site)
    r = await anon.get(site.url("alpha", "/"), headers=forged)
    assert r.status_code == 302


async def test_team_a_cookie_on_team_b_is_403(site: Running, browsers: Make) -> None:
    b = browsers(site)
    await b.login("ann@example.org")
    r = await b.get(site.url("beta", "/"))
    assert r.status_code == 403
    r = await b.get(site.url("beta", "/data.json"), headers={"accept": "application/json"})
    assert r.status_code == 403 and r.json()["status"] == 403


async def test_anonymous_browsers_redirect_and_api_clients_get_401(
    site: Running, browsers: Make
) -> None:
    b = browsers(site)
    r = await b.get(site.url("alpha", "/data/t?x=1"))
    assert r.status_code == 302
    location = urlsplit(r.headers["location"])
    assert f"{location.scheme}://{location.netloc}" == site.config.base_url
    assert location.path == "/-/sso"  # the apex hands over a session, or asks to sign in
    assert parse_qs(location.query)["next"] == [site.url("alpha", "/data/t?x=1")]
    r = await b.get(r.headers["location"])
    assert r.status_code == 303
    location = urlsplit(r.headers["location"])
    assert location.path == "/login"
    assert parse_qs(location.query)["next"] == [site.url("alpha", "/data/t?x=1")]
    for headers in (
        {"accept": "application/json"},
        {"authorization": "Basic Zm9vOmJhcg=="},
        {"x-requested-with": "XMLHttpRequest"},
    ):
        r = await b.get(site.url("alpha", "/data"), headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["ok"] is False
    # The login page carries the next along; signing in lands there.
    r = await b.login("ann@example.org", next_url=site.url("alpha", "/data/t?x=1"))
    assert r.headers["location"] == site.url("alpha", "/data/t?x=1")


async def test_public_team_is_read_only_for_anyone(site: Running, browsers: Make) -> None:
    owner = browsers(site)
    await owner.login("ann@example.org")
    r = await owner.post("/teams/alpha/public", {"public": "1"}, page="/teams/alpha")
    assert r.status_code == 303
    anon = browsers(site)
    r = await anon.get(site.url("alpha", "/-/actor.json"))
    assert r.status_code == 200 and r.json() == {"actor": None}
    r = await anon.request("POST", site.url("alpha", "/data/-/query"), data={"sql": "select 1"})
    assert r.status_code in (302, 303)
    bob = browsers(site)
    await bob.login("bob@example.org")
    r = await bob.get(site.url("alpha", "/-/actor.json"))
    assert r.status_code == 200 and r.json() == {"actor": None}  # read-only, no identity
    r = await owner.post("/teams/alpha/public", {"public": "0"}, page="/teams/alpha")
    r = await anon.get(site.url("alpha", "/"))
    assert r.status_code == 302
    r = await anon.get(site.url("alpha", "/-/actor.json"))  # a .json path is an API call
    assert r.status_code == 401


async def test_session_cookie_is_stripped_and_other_cookies_kept(
    site: Running, browsers: Make
) -> None:
    # Datasette's own ds_actor cookie passes through; the SSO cookie never does. With the SSO
    # cookie stripped, a ds_actor signed with a *wrong* secret leaves Datasette with our actor.
    b = browsers(site)
    await b.login("ann@example.org")
    session = b.cookie("gateway_session")
    r = await b.get(
        site.url("alpha", "/-/actor.json"),
        headers={"cookie": f"ds_actor=forged; gateway_session={session}"},
    )
    assert r.status_code == 200 and r.json()["actor"]["email"] == "ann@example.org"


async def test_handoff_when_the_domain_cookie_does_not_reach_the_team(
    site: Running, browsers: Make
) -> None:
    # Like Chromium with Domain=localhost: the session cookie stays on the apex host.
    b = browsers(site)
    b.domain_cookies = False
    await b.login("ann@example.org")
    r = await b.get(site.url("alpha", "/-/actor.json"), headers={"sec-fetch-mode": "navigate"})
    assert r.status_code == 302 and urlsplit(r.headers["location"]).path == "/-/sso"
    r = await b.get(r.headers["location"])
    assert r.status_code == 303
    ticket_url = r.headers["location"]
    assert ticket_url.startswith(site.url("alpha", "/-/gateway/sso?ticket="))
    r = await b.get(ticket_url)
    assert r.status_code == 302 and r.headers["location"] == "/-/actor.json"
    assert "Domain" not in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
    r = await b.get(site.url("alpha", "/-/actor.json"))
    assert r.status_code == 200 and r.json()["actor"]["email"] == "ann@example.org"
    # A ticket works once, and only on the team it was issued for.
    again = browsers(site)
    r = await again.get(ticket_url)
    assert r.status_code == 302 and urlsplit(r.headers["location"]).path == "/login"
    r = await b.get(site.url(None, "/-/sso?next=" + site.url("beta", "/")))
    assert r.status_code == 403 and "not a member of the team beta" in r.text
    # Signing out on the apex revokes the session the team host was handed.
    await b.post("/logout", {}, page="/dashboard")
    r = await b.get(site.url("alpha", "/"))
    assert r.status_code == 302 and urlsplit(r.headers["location"]).path == "/-/sso"
