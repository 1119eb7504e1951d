"""Issue 13: one customer never reaches another's data. Real gateway, real Datasette (local
runtime), the real web forms and the real CLI.

1. a removed member's API token ends at once (CLI and web page);
2. a deleted team's data never goes to the next owner of its name;
3. operator rights come from the store, never from a lookalike address;
4. secrets and data at rest are 0700/0600, and an older install is tightened on start;
5. an instance answers only requests the gateway signed;
7. registration answers the same for a taken email, a taken team, or both;
8. authenticated responses of a private team are ``Cache-Control: private``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from _pytest.logging import LogCaptureFixture
from click.testing import CliRunner
from itsdangerous import TimestampSigner

from gateway.admin.discovery import admin_token
from gateway.cli import cli
from gateway.config import Config
from gateway.lock import hold_running_lock
from gateway.routing.headers import private_value
from gateway.runtimes.base import prepare_team_dir
from gateway.store import open_store
from tests.auth_support import PASSWORD, Browser, browsers, make_user
from tests.conftest import Running, StartGateway

Make = Callable[[Running], Browser]
__all__ = ["browsers"]
TOKEN = re.compile(r'value="(gwt_[^"]+)"')


def run(gw: Running, *args: str, password: str | None = None) -> str:
    env = {"GATEWAY_NEW_PASSWORD": password} if password else None
    result = CliRunner().invoke(cli, [*args, "--data-dir", str(gw.config.data_dir)], env=env)
    assert result.exit_code == 0, result.output
    return result.output


async def new_token(b: Browser, slug: str) -> str:
    r = await b.post(f"/teams/{slug}/token", {"name": "ci"}, page=f"/teams/{slug}")
    match = TOKEN.search(r.text)
    assert r.status_code == 200 and match, r.text[:300]
    return match.group(1)


async def api_get(gw: Running, token: str, path: str = "/data.json") -> int:
    async with gw.client(headers={"authorization": f"Bearer {token}"}) as api:
        return (await api.get(gw.url("alpha", path))).status_code


async def api_upload(gw: Running, token: str) -> int:
    async with gw.client(headers={"authorization": f"Bearer {token}"}) as api:
        r = await api.post(
            gw.url("alpha", "/-/upload-csv"),
            files={"file": ("t.csv", b"a,b\n1,2\n", "text/csv")},
            headers={"accept": "application/json"},
        )
        return r.status_code


# -- 1 --------------------------------------------------------------------------------------
async def test_a_removed_members_token_stops_at_once(
    config: Config, start_gateway: StartGateway, browsers: Make
) -> None:
    gw = await start_gateway(config, teams=("alpha",))
    make_user(gw, "ann@example.org", {"alpha": "owner"})
    make_user(gw, "mia@example.org", {"alpha": "member"})
    make_user(gw, "max@example.org", {"alpha": "member"})
    await gw.wait_healthy("alpha")
    ann, mia, max_ = browsers(gw), browsers(gw), browsers(gw)
    for b, email in ((ann, "ann"), (mia, "mia"), (max_, "max")):
        assert (await b.login(f"{email}@example.org")).status_code == 303
    mia_token, max_token = await new_token(mia, "alpha"), await new_token(max_, "alpha")
    assert await api_get(gw, mia_token) == 200 and await api_get(gw, max_token) == 200
    assert await api_upload(gw, mia_token) == 202

    # Through the CLI (another process's write, seen through data_version).
    run(gw, "teams", "remove-member", "alpha", "mia@example.org")
    assert await api_get(gw, mia_token) == 401
    assert await api_upload(gw, mia_token) == 401
    # Through the owner's web page.
    max_id = gw.app.store.query("SELECT id FROM users WHERE email = 'max@example.org'")[0][0]
    r = await ann.post("/teams/alpha/remove-member", {"user_id": max_id}, page="/teams/alpha")
    assert r.status_code == 303
    assert await api_get(gw, max_token) == 401
    # For good: being invited back later does not revive the old token.
    run(gw, "teams", "add-member", "alpha", "mia@example.org")
    assert await api_get(gw, mia_token) == 401
    assert await api_get(gw, await new_token(mia, "alpha")) == 200


# -- 2 --------------------------------------------------------------------------------------
async def test_a_deleted_teams_data_never_reaches_the_next_owner_of_its_name(
    config: Config, start_gateway: StartGateway, browsers: Make
) -> None:
    gw = await start_gateway(config)
    owner, stranger = browsers(gw), browsers(gw)
    form = {"email": "gus@example.org", "password": PASSWORD, "team": "gamma"}
    assert (await owner.post("/register", form)).status_code == 303
    await gw.wait_healthy("gamma")
    db = sqlite3.connect(config.teams_dir / "gamma" / "data.db")
    db.execute("CREATE TABLE payroll (name TEXT, salary INTEGER)")
    db.execute("INSERT INTO payroll VALUES ('gus', 99000)")
    db.commit()
    db.close()
    tables = (await owner.get(gw.url("gamma", "/data.json"))).json()["tables"]
    # Hidden tables are the service's own (Litestream's, once it has started on the file).
    assert [t["name"] for t in tables if not t["hidden"]] == ["payroll"]

    # `gateway teams delete` against a running gateway (it holds the lock; its fleet deletes).
    with hold_running_lock(config.data_dir):
        out = await asyncio.to_thread(run, gw, "teams", "delete", "gamma", "--yes")
    form = {"email": "eve@example.org", "password": PASSWORD, "team": "gamma"}
    assert (await stranger.post("/register", form)).status_code == 303
    await gw.wait_healthy("gamma")
    r = await stranger.get(gw.url("gamma", "/data.json"))
    assert r.status_code == 200
    assert [t["name"] for t in r.json()["tables"] if not t["hidden"]] == []
    r = await stranger.get(gw.url("gamma", "/data/payroll.json"))
    assert r.status_code == 404
    # The old volume is archived, listed, and counted toward disk use.
    assert "archived in" in out
    listed = run(gw, "teams", "list", "--deleted")
    assert "gamma." in listed and "deleted" in listed and " MB " in listed

    # --purge: the new team's data goes for good, and no archive is left behind for it.
    with hold_running_lock(config.data_dir):
        out = await asyncio.to_thread(run, gw, "teams", "delete", "gamma", "--yes", "--purge")
    assert "and its data" in out
    archives = list((config.data_dir / "archive").iterdir())
    assert len(archives) == 1 and archives[0].name.startswith("gamma.")
    assert (archives[0] / "data.db").exists()  # the first deletion's archive, untouched


# -- 3 --------------------------------------------------------------------------------------
async def test_operator_rights_come_from_the_store_never_from_an_address(
    config: Config, start_gateway: StartGateway, browsers: Make
) -> None:
    gw = await start_gateway(config.replace(operators="desk@example.org"), teams=("alpha",))
    paths = ("/-/gateway/status", "/-/gateway/status.json", "/-/gateway/ops")
    # A self-registered DESK@: the same address, but nobody vouched for it.
    upper = browsers(gw)
    form = {"email": "DESK@example.org", "password": PASSWORD, "team": "deskco"}
    assert (await upper.post("/register", form)).status_code == 303
    for path in paths:
        r = await upper.get(gw.url(None, path), headers={"accept": "application/json"})
        assert r.status_code == 403, (path, r.status_code)
        assert "alpha" not in r.text
    # The Kelvin sign (U+212A) folds to "k": such an address is refused outright.
    kelvin = browsers(gw)
    form = {"email": "des\u212a@example.org", "password": PASSWORD, "team": "kelvinco"}
    r = await kelvin.post("/register", form)
    assert r.status_code == 400 and "lookalike" in r.text
    for path in paths:
        r = await kelvin.get(gw.url(None, path), headers={"accept": "application/json"})
        assert r.status_code in (401, 303) and "alpha" not in r.text, path  # anonymous

    # Rights granted in the store, through the CLI.
    run(gw, "users", "create", "ops@example.org", "--operator", password=PASSWORD)
    ops = browsers(gw)
    await ops.login("ops@example.org")
    for path in paths:
        assert (await ops.get(gw.url(None, path))).status_code == 200, path
    run(gw, "users", "revoke-operator", "ops@example.org")
    assert (await ops.get(gw.url(None, paths[1]))).status_code == 403
    run(gw, "users", "grant-operator", "DESK@example.org")
    assert (await upper.get(gw.url(None, paths[1]))).status_code == 200
    assert "OPERATOR" in run(gw, "users", "list")


async def test_lookalike_spellings_of_an_address_share_its_sign_in_throttle(
    config: Config, start_gateway: StartGateway, browsers: Make
) -> None:
    gw = await start_gateway(config)
    make_user(gw, "ann@example.org", {})
    b = browsers(gw)
    for spelling in ("ANN@example.org", "\uff41nn@example.org", "ann@EXAMPLE.org"):
        r = await b.login(spelling, password="wrong password here")
        assert r.status_code == 400, spelling
    r = await b.login("ann@example.org")  # even the right password waits out the ban
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0


# -- 7 --------------------------------------------------------------------------------------
async def test_register_answers_alike_for_taken_email_team_or_both(
    config: Config, start_gateway: StartGateway, browsers: Make
) -> None:
    gw = await start_gateway(config, teams=("alpha",))
    make_user(gw, "ann@example.org", {"alpha": "owner"})
    answers = []
    for email, team in (
        ("new@example.org", "alpha"),  # taken team
        ("ann@example.org", "fresh"),  # taken email
        ("ann@example.org", "alpha"),  # both
    ):
        b = browsers(gw)
        r = await b.post("/register", {"email": email, "password": PASSWORD, "team": team})
        body = re.sub(r'name="csrf_token" value="[^"]+"', "", r.text)
        body = body.replace(email, "EMAIL").replace(f'value="{team}"', 'value="TEAM"')
        answers.append((r.status_code, body))
    assert answers[0][0] == 400
    assert answers[0] == answers[1] == answers[2]
    assert "taken" not in answers[0][1].split("otherwise")[0]
    assert gw.app.store.query("SELECT count(*) FROM users")[0][0] == 1


# -- 4 --------------------------------------------------------------------------------------
def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The usual 022 while an "older install" is made; the umask is restored afterwards."""
    old = os.umask(0o022)
    yield
    os.umask(old)


async def test_secrets_and_data_at_rest_are_private(
    config: Config, start_gateway: StartGateway, usual_umask: None, caplog: LogCaptureFixture
) -> None:
    # An install made before: world-readable directories and files.
    log_path = config.data_dir / "logs" / "access.log"
    old = open_store(config.control_db)
    old.create_team("alpha")
    old.query("INSERT INTO settings (key, value) VALUES ('admin_token', 'plain-old-token')")
    old.close()
    prepare_team_dir(config.teams_dir / "alpha")
    log_path.parent.mkdir()
    log_path.write_text("")
    assert mode(config.data_dir) == 0o755 and mode(config.control_db) == 0o644

    with caplog.at_level(logging.WARNING, logger="gateway.filemodes"):
        gw = await start_gateway(config.replace(access_log=str(log_path)))
    await gw.wait_healthy("alpha")
    run(gw, "teams", "create", "beta", "--no-wait")
    await gw.wait_healthy("beta")
    teams = config.teams_dir
    for path in (config.data_dir, teams, teams / "alpha", teams / "beta"):
        assert mode(path) == 0o700, path
    db = config.control_db
    for path in (db, db.with_name("control.db-wal"), db.with_name("control.db-shm"), log_path):
        assert path.exists() and mode(path) == 0o600, path
    for team in ("alpha", "beta"):
        assert mode(config.teams_dir / team / "data.db") == 0o600
    assert "tightened" in caplog.text  # the log says what start made private

    # The admin token: its hash in the store, the token itself only in the 0600 file.
    token = admin_token(gw.config, gw.app.store)
    assert token == "plain-old-token"
    values = [r[0] for r in gw.app.store.query("SELECT value FROM settings")]
    assert token not in values and hashlib.sha256(token.encode()).hexdigest() in values
    assert mode(config.data_dir / "admin.token") == 0o600
    async with gw.client() as client:
        ok = await client.get(
            gw.url(None, "/-/gateway/status.json"), headers={"authorization": f"Bearer {token}"}
        )
        assert ok.status_code == 200


# -- 5 --------------------------------------------------------------------------------------
async def test_an_instance_answers_only_the_gateway(
    config: Config, start_gateway: StartGateway, browsers: Make
) -> None:
    gw = await start_gateway(config, teams=("alpha",))
    make_user(gw, "ann@example.org", {"alpha": "owner"})
    await gw.wait_healthy("alpha")  # the gateway's own health checks are signed: they pass
    (inst,) = gw.app.store.instances("alpha")
    direct = f"http://127.0.0.1:{inst.port}"
    forged = TimestampSigner("not-the-secret", salt="gateway-request").sign(b"alpha").decode()
    async with httpx.AsyncClient(timeout=10) as local_process:
        for path in ("/data.json", "/-/health", "/-/actor.json", "/data/sqlite_master.json"):
            for headers in ({}, {"x-gateway-signature": forged}):
                r = await local_process.get(direct + path, headers=headers)
                assert r.status_code == 403, (path, headers, r.status_code)
                assert "through the gateway" in r.text
    ann = browsers(gw)
    await ann.login("ann@example.org")
    r = await ann.get(gw.url("alpha", "/-/actor.json"))
    assert r.status_code == 200 and r.json()["actor"]["email"] == "ann@example.org"


# -- 8 --------------------------------------------------------------------------------------
async def test_private_teams_answer_members_cache_control_private(
    config: Config, start_gateway: StartGateway, browsers: Make
) -> None:
    gw = await start_gateway(config, teams=("alpha", "beta"))
    make_user(gw, "ann@example.org", {"alpha": "owner", "beta": "owner"})
    gw.app.store.query("UPDATE teams SET public = 1 WHERE slug = 'beta'")
    gw.app.auth.changed()
    await gw.wait_healthy("alpha")
    await gw.wait_healthy("beta")
    ann = browsers(gw)
    await ann.login("ann@example.org")
    token = await new_token(ann, "alpha")
    # Datasette's pages, its static files, and the gateway's own upload page.
    for path in ("/data.json", "/data.json?_ttl=600", "/", "/-/static/app.css", "/-/upload-csv"):
        r = await ann.get(gw.url("alpha", path))
        assert r.status_code == 200
        assert r.headers.get("cache-control", "").startswith("private"), path
        assert "public" not in r.headers["cache-control"]
        status = await api_get(gw, token, path)
        assert status == 200
    async with gw.client(headers={"authorization": f"Bearer {token}"}) as api:
        r = await api.get(gw.url("alpha", "/data.json?_ttl=600"))
        (value,) = r.headers.get_list("cache-control")  # one header, the upstream's merged
        assert value.startswith("private") and "public" not in value, value
    # A public team keeps Datasette's own caching for everyone.
    async with gw.client() as anonymous:
        r = await anonymous.get(gw.url("beta", "/data.json"))
        assert r.status_code == 200 and r.headers["cache-control"] == "max-age=5"


@pytest.mark.parametrize(
    ("upstream", "sent"),
    [
        ([], b"private"),
        ([b"max-age=5"], b"private, max-age=5"),
        ([b"public, max-age=600", b"s-maxage=60, Proxy-Revalidate"], b"private, max-age=600"),
        ([b"private, no-store"], b"private, no-store"),
        ([b"no-cache, PUBLIC"], b"private, no-cache"),
    ],
)
def test_private_value_keeps_browser_directives_only(upstream: list[bytes], sent: bytes) -> None:
    assert private_value(upstream) == sent
