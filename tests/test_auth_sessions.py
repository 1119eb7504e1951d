"""Sessions: every way a session ends takes effect on the very next request; bad cookies of
every kind mean "anonymous", never a 500. Real gateway, real Datasette, real CLI commands."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

import pytest
from click.testing import CliRunner
from itsdangerous import URLSafeTimedSerializer

from gateway.auth import keys
from gateway.cli import cli
from gateway.config import Config
from tests.auth_support import PASSWORD, Browser, browsers, make_user
from tests.conftest import Running, StartGateway

Make = Callable[[Running], Browser]
__all__ = ["browsers"]


@pytest.fixture
async def site(config: Config, start_gateway: StartGateway) -> Running:
    gw = await start_gateway(config, teams=("alpha",))
    make_user(gw, "ann@example.org", {"alpha": "owner"})
    await gw.wait_healthy("alpha")
    return gw


async def signed_in(b: Browser) -> bool:
    """Is this browser's session alive? Checked on a team host and on the dashboard."""
    team = await b.get(b.gw.url("alpha", "/-/actor.json"))
    page = await b.get(b.gw.url(None, "/dashboard"))
    assert team.status_code in (200, 401), team.text
    assert page.status_code in (200, 303)
    assert (team.status_code == 200) == (page.status_code == 200)
    return team.status_code == 200


def run_cli(config: Config, *args: str, password: str | None = None) -> str:
    env = {"GATEWAY_NEW_PASSWORD": password} if password else {}
    result = CliRunner().invoke(cli, [*args, "--data-dir", str(config.data_dir)], env=env)
    assert result.exit_code == 0, result.output
    return result.output


async def test_session_id_changes_at_login(site: Running, browsers: Make) -> None:
    b = browsers(site)
    r = await b.login("ann@example.org")
    first = b.cookie("gateway_session")
    assert first and "Max-Age" not in r.headers["set-cookie"]  # dies with the browser
    stale = browsers(site)
    stale.cookies = dict(b.cookies)
    r = await b.login("ann@example.org", remember=True)
    second = b.cookie("gateway_session")
    assert second and second != first
    assert "Max-Age=2592000" in r.headers["set-cookie"]  # remember me: 30 days
    assert await signed_in(b)
    assert not await signed_in(stale)  # the pre-login session was revoked, not reused


async def test_logout_kills_the_session(site: Running, browsers: Make) -> None:
    b = browsers(site)
    await b.login("ann@example.org")
    copy = browsers(site)
    copy.cookies = dict(b.cookies)
    assert await signed_in(copy)
    r = await b.post("/logout", {}, page="/dashboard")
    assert r.status_code == 303 and "Max-Age=0" in r.headers["set-cookie"]
    assert not await signed_in(copy)  # replaying the old cookie does not work


async def test_logout_everywhere_and_password_change(site: Running, browsers: Make) -> None:
    laptop, phone = browsers(site), browsers(site)
    await laptop.login("ann@example.org")
    await phone.login("ann@example.org")
    new = "a different long passphrase"
    r = await laptop.post("/password", {"password": PASSWORD, "new_password": new})
    assert r.status_code == 303
    assert await signed_in(laptop)  # this browser got a fresh session
    assert not await signed_in(phone)  # every other session was revoked
    r = await phone.login("ann@example.org", password=new)
    assert await signed_in(phone)
    r = await phone.post("/logout-everywhere", {}, page="/password")
    assert r.status_code == 303
    assert not await signed_in(phone)
    assert not await signed_in(laptop)


async def test_expiry_kills_the_session(site: Running, browsers: Make) -> None:
    b, idle = browsers(site), browsers(site)
    await b.login("ann@example.org")
    await idle.login("ann@example.org")
    assert await signed_in(b) and await signed_in(idle)
    # Another connection moves the clocks of the stored sessions (as time passing would):
    # one past its absolute expiry, one idle for longer than its idle timeout.
    db = sqlite3.connect(site.config.control_db)
    hashes = [r[0] for r in db.execute("SELECT id_hash FROM sessions ORDER BY created_at")]
    with db:
        db.execute(
            "UPDATE sessions SET expires_at = ? WHERE id_hash = ?", [time.time() - 1, hashes[0]]
        )
        db.execute(
            "UPDATE sessions SET last_seen = ? - idle - 1 WHERE id_hash = ?",
            [time.time(), hashes[1]],
        )
    db.close()
    assert not await signed_in(b)
    assert not await signed_in(idle)
    assert site.app.store.query("SELECT count(*) FROM sessions")[0][0] == 0


async def test_cli_disable_and_passwd_kill_sessions_on_the_next_request(
    site: Running, browsers: Make
) -> None:
    b = browsers(site)
    await b.login("ann@example.org")
    assert await signed_in(b)
    run_cli(site.config, "users", "disable", "ann@example.org")
    assert not await signed_in(b)
    r = await b.login("ann@example.org")
    assert r.status_code == 400 and "incorrect" in r.text  # same answer as a wrong password
    run_cli(site.config, "users", "disable", "--enable", "ann@example.org")
    await b.login("ann@example.org")
    assert await signed_in(b)
    run_cli(site.config, "users", "passwd", "ann@example.org", password="brand new passphrase")
    assert not await signed_in(b)
    assert "ann@example.org" in run_cli(site.config, "users", "list")


async def test_bad_cookies_are_anonymous_never_500(site: Running, browsers: Make) -> None:
    b = browsers(site)
    await b.login("ann@example.org")
    good = b.cookie("gateway_session")
    assert good
    session_id = URLSafeTimedSerializer(
        keys.load_keys(site.app.store), salt=keys.SALTS["session"]
    ).loads(good)
    current = keys.load_keys(site.app.store)
    wrong_purpose = URLSafeTimedSerializer(current, salt=keys.SALTS["reset"]).dumps(session_id)
    retired = URLSafeTimedSerializer("an old key nobody has", salt=keys.SALTS["session"])
    variants = [
        good[:-2] + ("AA" if not good.endswith("AA") else "BB"),  # tampered signature
        "x" + good,
        retired.dumps(session_id),
        wrong_purpose,  # e.g. a reset token presented as a session
        "",
        "%ff%00..",
        "e30.AAAA.BBBB",
        "a" * 5000,
    ]
    for value in variants:
        other = browsers(site)
        other.cookies[("gateway_session", ".localhost")] = value
        team = await other.get(site.url("alpha", "/"))
        assert team.status_code == 302, value
        page = await other.get(site.url(None, "/dashboard"))
        assert page.status_code == 303, value


async def test_key_rotation_keeps_then_retires_old_cookies(site: Running, browsers: Make) -> None:
    b = browsers(site)
    await b.login("ann@example.org")
    run_cli(site.config, "users", "rotate-secret", "--keep", "1")
    assert await signed_in(b)  # signed with what is now a fallback key: still accepted
    fresh = browsers(site)
    await fresh.login("ann@example.org")
    run_cli(site.config, "users", "rotate-secret", "--keep", "1")
    assert not await signed_in(b)  # its key is retired now
    assert await signed_in(fresh)
