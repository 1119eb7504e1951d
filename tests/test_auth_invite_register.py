"""Issue 19: a colleague with no account opens an invitation: the page names the team and the
inviter, and registering through it joins that team and creates no other."""

from __future__ import annotations

import html
import re

import pytest

from gateway.config import Config
from tests.auth_support import PASSWORD, browsers, make_user
from tests.conftest import Running, StartGateway

__all__ = ["browsers"]  # the fixture


@pytest.fixture
async def site(config: Config, start_gateway: StartGateway) -> Running:
    gw = await start_gateway(config, teams=("alpha",))
    make_user(gw, "ann@example.org", {"alpha": "owner"})
    return gw


async def invitation(site: Running, browsers) -> str:
    ann = browsers(site)
    await ann.login("ann@example.org")
    r = await ann.post("/teams/alpha/invite", {"role": "member"}, page="/teams/alpha")
    link = re.search(r'value="(http[^"]+/invite/[^"]+)"', r.text)
    assert link
    return link.group(1)[len(site.config.base_url) :]


async def test_registering_through_an_invitation_joins_that_team_only(site: Running, browsers):
    path = await invitation(site, browsers)
    teams_before = [t.slug for t in site.app.store.teams()]
    cleo = browsers(site)
    r = await cleo.get(site.url(None, path))
    assert r.status_code == 200
    text = html.unescape(r.text)
    text = re.sub(r"</?strong>", "", text)
    assert "ann@example.org invites you to join the team alpha as member" in text
    register = re.search(r'href="(/register\?invite=[^"]+)"', r.text)
    assert register and "Create an account and join alpha" in text
    register_url = html.unescape(register.group(1))
    page = await cleo.get(site.url(None, register_url))
    assert "Create an account to join alpha" in page.text and 'name="team"' not in page.text
    r = await cleo.post(
        register_url, {"email": "cleo@example.org", "password": PASSWORD}, page=register_url
    )
    assert r.status_code == 303 and r.headers["location"] == "/teams/alpha"
    assert [t.slug for t in site.app.store.teams()] == teams_before  # no team of her own
    rows = site.app.store.query(
        "SELECT team, role FROM memberships JOIN users ON users.id = user_id WHERE email = ?",
        ["cleo@example.org"],
    )
    assert [tuple(r) for r in rows] == [("alpha", "member")]
    # The link worked once: a second registration through it is refused, creating nothing.
    dan = browsers(site)
    r = await dan.post(
        register_url, {"email": "dan@example.org", "password": PASSWORD}, page=register_url
    )
    assert r.status_code == 400 and "expired or was already used" in r.text
    assert not site.app.store.query("SELECT 1 FROM users WHERE email = 'dan@example.org'")


async def test_a_taken_team_name_suggests_asking_for_an_invitation(site: Running, browsers):
    eve = browsers(site)
    r = await eve.post(
        "/register", {"email": "eve@example.org", "password": PASSWORD, "team": "alpha"}
    )
    assert r.status_code == 400
    assert "ask one of its owners for an invitation link" in html.unescape(r.text)


async def test_the_sign_in_page_of_an_invitation_keeps_it_for_a_new_account(
    site: Running, browsers
):
    path = await invitation(site, browsers)
    r = await browsers(site).get(site.url(None, f"/login?next={path}"))
    token = path.removeprefix("/invite/")
    assert f'href="/register?invite={token}"' in r.text


async def test_front_page_sign_out_everywhere_and_new_token_say_what_is_true(
    site: Running, browsers
):
    b = browsers(site)
    home = await b.get(site.url(None, "/"))
    assert f"<code>http://&lt;team&gt;.localhost:{site.port}/</code>" in home.text
    await b.login("ann@example.org")
    r = await b.post("/teams/alpha/token", {"name": "laptop"}, page="/teams/alpha")
    page = r.text
    # The new token comes first, above the fold, with a copy button.
    assert page.index('id="new-token"') < page.index('id="members"')
    assert "navigator.clipboard.writeText" in page
    # Removing someone or leaving asks first.
    assert 'onsubmit="return confirm(' in page and "lose access" in page
    r = await b.post("/logout-everywhere", {}, page="/password")
    assert r.status_code == 303 and r.headers["location"] == "/login?everywhere=1"
    r = await b.get(site.url(None, r.headers["location"]))
    assert "You are signed out on every device and browser" in r.text
