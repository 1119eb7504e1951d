"""The admin API on its own listener: token auth, the live route table, pause/resume, drain,
the operator dashboard, and the CLI reading the live table from it."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import httpx
from click.testing import CliRunner

from gateway.cli import cli
from gateway.config import Config
from tests.edge import run_edge
from tests.servers import wait_for


async def test_token_is_required_and_health_is_open(config: Config) -> None:
    async with run_edge(config) as gw:
        token_file = config.data_dir / "admin.token"
        assert token_file.read_text().strip() == gw.token
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        async with gw.admin(token="wrong") as bad:
            r = await bad.get("/api/status", headers={"accept": "application/json"})
            assert r.status_code == 401
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert (await bad.post("/api/teams/alpha/resume")).status_code == 401
            assert (await bad.get("/metrics")).status_code == 401
            assert (await bad.get("/livez")).status_code == 200
            ready = await bad.get("/readyz")
            assert ready.status_code == 200 and ready.json()["ready"] is True
        async with gw.admin() as admin:
            r = await admin.get("/api/status")
            assert r.status_code == 200 and r.json()["ready"] is True
    # The token persists across restarts (kept in the control store).
    async with run_edge(config) as again:
        assert again.token == gw.token


async def test_routes_pause_resume_drain(config: Config) -> None:
    async with run_edge(config, teams=("alpha",)) as gw:
        await gw.wait_healthy("alpha")
        async with gw.admin() as admin, gw.client() as client:
            routes = (await admin.get("/api/routes")).json()["routes"]
            assert [(r["host"], r["team"], r["state"]) for r in routes] == [
                ("alpha.localhost", "alpha", "up")
            ]
            [target] = (await admin.get("/api/targets")).json()["targets"]
            assert target["team"] == "alpha" and target["state"] == "healthy"
            assert (await admin.post("/api/teams/nope/pause")).status_code == 404
            assert (await admin.post("/api/teams/alpha/pause?seconds=abc")).status_code == 400
            for bad in ("0", "-1", "nan", "inf"):
                r = await admin.post(f"/api/teams/alpha/pause?seconds={bad}")
                assert r.status_code == 400 and "positive number" in r.json()["detail"], bad

            paused = await admin.post("/api/teams/alpha/pause?seconds=60")
            assert paused.json()["state"] == "paused"
            assert paused.json()["seconds"] == config.max_pause  # clamped by the setting
            assert paused.json()["requested"] == 60  # and the answer says so
            (live,) = gw.app.fleet.service("alpha").targets()  # type: ignore[union-attr]
            seen, served = gw.app.counters.requests, live.served
            held = asyncio.ensure_future(client.get(gw.url("alpha", "/-/versions.json")))
            await wait_for(lambda: gw.app.counters.requests == seen + 1)  # at the proxy...
            assert not held.done() and live.served == served  # ...held, never sent
            resumed = await admin.post("/api/teams/alpha/resume")
            assert resumed.json()["state"] == "up"
            assert (await asyncio.wait_for(held, 30)).status_code == 200

            drained = await admin.post(f"/api/targets/{target['id']}/drain")
            assert drained.status_code == 200, drained.text
            assert drained.json()["cancelled"] == 0
            assert (await admin.get("/api/targets")).json()["targets"] == []
            teams = (await admin.get("/api/teams")).json()["teams"]
            assert teams[0]["slug"] == "alpha" and teams[0]["state"] == "down"
            status = (await admin.get("/api/status")).json()
            assert status["counters"]["drains"] == 1
            assert (await admin.get("/api/deploys")).json() == {"deploys": []}
            assert "imports" in (await admin.get("/api/imports")).json()


async def test_a_teams_own_idle_timeout_through_the_admin_api(config: Config) -> None:
    async with run_edge(config.replace(idle_timeout=0), teams=("alpha",)) as gw:
        await gw.wait_healthy("alpha")
        async with gw.admin() as admin:
            r = await admin.get("/api/teams/alpha/idle-timeout")
            assert r.status_code == 200
            assert r.json() == {
                "team": "alpha",
                "own": None,
                "default": 0,
                "seconds": 0,
                "state": "up",
            }
            assert (await admin.get("/api/teams/nope/idle-timeout")).status_code == 404
            path = "/api/teams/alpha/idle-timeout"
            for bad in ({"seconds": -1}, {"seconds": "soon"}, {"seconds": True}, {"seconds": []}):
                r = await admin.put(path, json=bad)
                assert r.status_code == 400 and "seconds" in r.json()["detail"], bad
            for raw in (b'{"seconds": NaN}', b'{"seconds": 1e999}', b"{}", b"[]", b"soon"):
                r = await admin.put(path, content=raw)
                assert r.status_code == 400, raw
            assert gw.app.fleet.idle_timeout("alpha") == 0  # nothing bad was applied
            r = await admin.put(path, json={"seconds": "600"})
            assert r.json()["own"] == 600 and r.json()["seconds"] == 600
            assert gw.app.store.query("SELECT idle_timeout FROM teams")[0][0] == 600
            r = await admin.put(path, json={"seconds": "default"})
            assert r.json()["own"] is None and r.json()["seconds"] == 0
            # Applied at once: a short one puts the idle team to sleep.
            r = await admin.put(path, json={"seconds": 0.5})
            assert r.status_code == 200
            await wait_for(lambda: gw.app.fleet.require("alpha").state() == "sleeping", 30)
            assert (await admin.get(path)).json()["state"] == "sleeping"


async def test_dashboard_login_and_cookie_is_read_only(config: Config) -> None:
    async with run_edge(config, teams=("alpha",)) as gw:
        await gw.wait_healthy("alpha")
        async with gw.client() as client:
            await client.get(gw.url("alpha", "/-/versions.json"))
        async with httpx.AsyncClient(base_url=gw.admin_url, timeout=30) as browser:
            r = await browser.get("/")
            assert r.status_code == 303 and r.headers["location"] == "/login"
            wrong = await browser.post("/login", data={"token": "nope"})
            assert wrong.status_code == 401 and "not right" in wrong.text
            ok = await browser.post("/login", data={"token": gw.token})
            assert ok.status_code == 303
            page = await browser.get("/")
            assert page.status_code == 200
            assert "alpha" in page.text and "<svg" in page.text and "healthy" in page.text
            assert "Recent deploys" in page.text
            # The cookie reads; it never acts (no cross-site pause/drain).
            assert (await browser.post("/api/teams/alpha/pause")).status_code == 401
            assert (await browser.get("/static/gateway.css")).status_code == 200


async def test_cli_status_and_routes_use_the_admin_api(config: Config) -> None:
    args = ["--data-dir", str(config.data_dir), "--domain", config.domain]
    runner = CliRunner()
    offline = runner.invoke(cli, ["routes", *args])  # no gateway has used this dir yet
    assert offline.exit_code == 1 and "no gateway data in" in offline.output
    assert not config.data_dir.exists()  # and asking created nothing
    async with run_edge(config, teams=("alpha",)) as gw:
        await gw.wait_healthy("alpha")
        # The CLI is synchronous: run it in a thread so this loop keeps serving the admin API.
        status = await asyncio.to_thread(runner.invoke, cli, ["status", *args])
        assert status.exit_code == 0, status.output
        assert "running, ready" in status.output and "healthy" in status.output
        assert "in-flight 0" in status.output
        routes = await asyncio.to_thread(runner.invoke, cli, ["routes", *args])
        assert routes.exit_code == 0, routes.output
        assert "live route table" in routes.output
        assert "alpha.localhost" in routes.output and "up" in routes.output
    after = runner.invoke(cli, ["status", *args])
    assert after.exit_code == 0 and "not running" in after.output


async def test_admin_on_a_unix_socket(config: Config, tmp_path: Path) -> None:
    path = tmp_path / "admin.sock"
    args = ["--data-dir", str(config.data_dir), "--admin-socket", str(path)]
    async with run_edge(config.replace(admin_socket=str(path)), teams=("alpha",)) as gw:
        assert gw.admin_url == "http://admin"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # only the gateway's user
        await gw.wait_healthy("alpha")
        transport = httpx.AsyncHTTPTransport(uds=str(path))
        async with httpx.AsyncClient(transport=transport, timeout=30) as client:
            bare = await client.get("http://admin/api/routes")
            assert bare.status_code == 401
            r = await client.get(
                "http://admin/api/routes", headers={"authorization": f"Bearer {gw.token}"}
            )
            assert r.json()["routes"][0]["team"] == "alpha"
        status = await asyncio.to_thread(CliRunner().invoke, cli, ["status", *args])
        assert status.exit_code == 0 and "running, ready" in status.output, status.output


async def test_operator_dashboard_on_the_apex(config: Config) -> None:
    from gateway.admin.discovery import admin_token
    from gateway.auth.accounts import create_user

    config = config.replace(operators="Ops@Example.org")
    async with run_edge(config, teams=("alpha",)) as gw:
        auth = gw.app.auth
        cookies = {}
        for email in ("ops@example.org", "someone@example.org"):
            # Verified, as an account made with `gateway users create` is: `operators` names
            # only verified addresses (gateway/auth/operators.py).
            user = create_user(gw.app.store, email, "not-a-real-hash", verified=True)
            cookies[email] = auth.sessions.create(user.id)[0]
        url = gw.url(None, "/-/gateway/ops")
        async with gw.client() as client:
            anonymous = await client.get(url)
            assert anonymous.status_code == 303 and "/login?next=" in anonymous.headers["location"]
            # One operator check for every apex operator page: the admin token opens it too.
            token = admin_token(gw.app.config, gw.app.store)
            opened = await client.get(url, headers={"authorization": f"Bearer {token}"})
            assert opened.status_code == 200 and "alpha" in opened.text
            client.cookies.set(auth.cookie_name, cookies["someone@example.org"])
            assert (await client.get(url)).status_code == 403
            client.cookies.set(auth.cookie_name, cookies["ops@example.org"])
            page = await client.get(url)
            assert page.status_code == 200
            assert "Operations" in page.text and "alpha" in page.text
            assert "/-/gateway/static/gateway.css" in page.text
