"""The deploy admin API and CLI: clear answers for every mistake, never a silent success."""

from __future__ import annotations

import asyncio
import json

import httpx
from click.testing import CliRunner

from gateway.admin import build_admin_app
from gateway.cli import cli
from gateway.config import Config
from gateway.routing.target import State
from tests.conftest import Running, StartGateway
from tests.edge import Edge, run_edge
from tests.servers import wait_for

TOKEN = "test-admin-token"


def admin(gw: Running) -> httpx.AsyncClient:
    app = build_admin_app(gw.app, TOKEN)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://admin",
        headers={"authorization": f"Bearer {TOKEN}"},
        timeout=120,
    )


def ndjson(r: httpx.Response) -> list[dict[str, object]]:
    return [json.loads(line) for line in r.text.splitlines() if line]


async def test_deploy_api_mistakes_get_clear_4xx(
    config: Config, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(config, teams=("alpha",))
    await gw.wait_healthy("alpha")
    async with admin(gw) as client:
        r = await client.post("/api/deploy", json={})
        assert r.status_code == 400 and "all" in r.json()["detail"]
        r = await client.post("/api/deploy", content=b"not json")
        assert r.status_code == 400
        r = await client.post("/api/deploy", json={"team": "nope"})
        assert r.status_code == 404 and "nope" in r.json()["detail"]
        r = await client.post("/api/teams/alpha/rollback")
        assert r.status_code == 400 and "no earlier version" in r.json()["detail"]
        r = await client.post("/api/teams/alpha/maintenance", json={"message": "  "})
        assert r.status_code == 400
        r = await client.post("/api/teams/nope/maintenance", json={"message": "x"})
        assert r.status_code == 404


async def test_a_refused_image_is_a_failed_deploy_not_a_silent_success(
    config: Config, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(config, teams=("alpha",))
    await gw.wait_healthy("alpha")
    before = gw.app.fleet.service("alpha").targets()  # type: ignore[union-attr]
    async with admin(gw) as client:
        r = await client.post("/api/deploy", json={"team": "alpha", "image": "other:1"})
    events = ndjson(r)
    assert [e["event"] for e in events] == ["start", "done", "summary"]
    summary = events[-1]
    assert summary["ok"] is False
    assert "docker runtime" in str(summary["results"][0]["reason"])  # type: ignore[index]
    assert gw.app.fleet.service("alpha").targets() == before  # type: ignore[union-attr]


async def test_deploy_api_streams_a_rollout_and_maintenance_round_trips(config: Config) -> None:
    """Over the real admin listener (not an in-process transport, which would buffer the
    stream): the start line arrives while the rollout is still running."""
    async with run_edge(config.replace(deploy_timeout=60), teams=("alpha", "beta")) as edge:
        await edge.wait_healthy("alpha")
        await edge.wait_healthy("beta")
        async with edge.admin() as client:
            async with client.stream("POST", "/api/deploy", json={"all": True}) as r:
                assert r.status_code == 200
                lines = r.aiter_lines()
                start = json.loads(await anext(lines))
                running = [d["status"] for d in edge.app.deployer.history()]
                assert "running" in running or running == [], running  # not finished yet
                events = [start] + [json.loads(line) async for line in lines if line]
            rollout = start["rollout"]
            # The rollout is named at the start, so a client cut off mid-rollout can resume it.
            assert start == {"event": "start", "teams": ["alpha", "beta"], "rollout": rollout}
            done = sorted(str(e["team"]) for e in events if e["event"] == "done")
            assert done == ["alpha", "beta"]
            assert events[-1]["ok"] is True and str(rollout).startswith("r-")
            assert events[-1]["rollout"] == rollout
            r = await client.post("/api/teams/alpha/maintenance", json={"message": "Back soon"})
            assert r.status_code == 200
            assert edge.app.fleet.service("alpha").maintenance == "Back soon"  # type: ignore[union-attr]
            r = await client.post("/api/teams/alpha/maintenance", json={"message": None})
            assert edge.app.fleet.service("alpha").maintenance is None  # type: ignore[union-attr]


def test_deploy_cli_without_a_gateway_or_with_bad_flags_says_what_to_do(config: Config) -> None:
    runner = CliRunner()
    data = ["--data-dir", str(config.data_dir)]
    r = runner.invoke(cli, ["deploy", "--team", "alpha", *data])
    assert r.exit_code == 1 and "no gateway is running" in r.output
    r = runner.invoke(cli, ["deploy", *data])
    assert r.exit_code == 2 and "exactly one of --team SLUG or --all" in r.output
    r = runner.invoke(cli, ["maintenance", "--team", "alpha", *data])
    assert r.exit_code == 2 and "--message TEXT or --off" in r.output
    for command in ("deploy", "rollback", "pause", "resume", "maintenance", "restart"):
        assert runner.invoke(cli, [command, "--help"]).exit_code == 0


async def test_the_cli_exits_non_zero_when_a_deploy_never_gets_healthy(config: Config) -> None:
    """README: a new target that never gets healthy is removed, and the command exits non-zero
    with the reason (the real CLI against the real admin listener)."""
    async with run_edge(config.replace(deploy_timeout=3), teams=("alpha",)) as edge:
        await edge.wait_healthy("alpha")
        # Datasette refuses an unknown setting: the candidate keeps exiting, never healthy.
        edge.app.config.extra["datasette_args"] = ["--setting", "no_such_setting", "1"]
        args = ["deploy", "--team", "alpha", "--data-dir", str(edge.config.data_dir)]
        r = await asyncio.to_thread(CliRunner().invoke, cli, args)
        edge.app.config.extra.pop("datasette_args")
        assert r.exit_code == 1, r.output
        assert "FAILED alpha" in r.output and "did not become healthy" in r.output, r.output
        assert "some deploys failed; the old instances keep serving" in r.output
        assert edge.app.fleet.service("alpha").state() == "up"  # type: ignore[union-attr]


async def test_the_maintenance_page_survives_a_gateway_restart(config: Config) -> None:
    """README: `gateway maintenance` is kept across restarts (persisted in the control store)."""
    async with run_edge(config, teams=("alpha",)) as edge:
        await edge.wait_healthy("alpha")
        async with edge.admin() as client:
            r = await client.post("/api/teams/alpha/maintenance", json={"message": "Back at 5"})
            assert r.status_code == 200
    async with run_edge(config) as edge:  # a new gateway process's worth, on the same data
        # Its target is up, so the 503 is the maintenance page, not "no healthy instance".
        await wait_for(lambda: healthy(edge, "alpha"), timeout=60)
        assert edge.app.fleet.service("alpha").maintenance == "Back at 5"  # type: ignore[union-attr]
        async with edge.client() as client:
            page = await client.get(edge.url("alpha", "/"))
        assert page.status_code == 503 and "Back at 5" in page.text
        assert page.headers["retry-after"]


def healthy(edge: Edge, team: str) -> bool:
    service = edge.app.fleet.service(team)
    return service is not None and any(t.state is State.HEALTHY for t in service.targets())
