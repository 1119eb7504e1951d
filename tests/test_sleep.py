"""Idle teams sleep and wake on their first request (issue 17), with real Datasette processes
(the local runtime) behind a real gateway socket."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.admin.api import status_view
from gateway.app import create_app
from gateway.cli import cli
from gateway.config import Config
from gateway.errors import ConfigError
from gateway.observability.prom import exposition, make_registry
from gateway.routing.health_checks import (
    EARLY_FOR,
    EARLY_INTERVAL,
    STARTING_INTERVAL,
    HealthMonitor,
)
from gateway.routing.target import State, Target
from gateway.runtimes.local import LocalRuntime
from tests.conftest import Running, StartGateway
from tests.test_deploy import bearer


async def until(condition: Callable[[], bool], timeout: float = 60) -> None:
    """Wait on a state with a bound (the machine is shared: generous)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state  # a zombie has exited


def local(gw: Running) -> LocalRuntime:
    runtime = gw.app.runtime
    assert isinstance(runtime, LocalRuntime)
    return runtime


def pids(gw: Running, team: str) -> list[int]:
    """The team's running Datasette processes (ids of the runtime's supervised instances)."""
    runtime = local(gw)
    found = [runtime.pid(i) for i in list(runtime._running) if i.startswith(f"{team}-")]
    return [p for p in found if p is not None]


def asleep_in_store(gw: Running, team: str) -> bool:
    rows = gw.app.store.query("SELECT sleeping FROM teams WHERE slug = ?", [team])
    return bool(rows[0]["sleeping"])


async def put_to_sleep(gw: Running, team: str) -> None:
    task = gw.app.fleet.sleep(team)
    assert task is not None
    await task


@pytest.fixture
def sleepy(config: Config) -> Config:
    return config.replace(hold_timeout=60, idle_timeout=0)


async def test_an_idle_team_sleeps_and_its_first_request_wakes_it(
    sleepy: Config, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(sleepy, teams=("alpha",))
    await gw.wait_healthy("alpha", 60)
    (first,) = pids(gw, "alpha")
    service = gw.app.fleet.require("alpha")
    gw.app.fleet.set_idle_timeout("alpha", 1.5)  # the team's own: the gateway's is 0 (never)
    await until(lambda: service.state() == "sleeping")
    await until(lambda: not alive(first))  # the process is gone, the volume stays
    assert pids(gw, "alpha") == []
    assert asleep_in_store(gw, "alpha")
    assert (gw.config.teams_dir / "alpha" / "data.db").exists()
    assert gw.app.table.lookup("alpha.localhost") is service  # still routed
    (team,) = [t for t in status_view(gw.app)["teams"] if t["slug"] == "alpha"]
    assert team["state"] == "sleeping"
    metrics = exposition(make_registry(gw.app)).decode()
    assert 'gateway_team_sleeping{team="alpha"} 1.0' in metrics
    auth = bearer(gw, "alpha")
    async with gw.client(headers=auth, timeout=90) as client:
        r = await client.get(gw.url("alpha", "/data.json?_shape=objects"))  # a JSON client
        assert r.status_code == 200, r.text
        assert gw.app.fleet.wakes == 1
        # Idle again: asleep again; a browser's page wakes it the same way.
        await until(lambda: service.state() == "sleeping")
        await until(lambda: pids(gw, "alpha") == [])
        r = await client.get(gw.url("alpha", "/"), headers={"accept": "text/html"})
        assert r.status_code == 200
        assert "<html" in r.text.lower()
        assert gw.app.fleet.wakes == 2


async def test_twenty_concurrent_first_requests_start_exactly_one_instance(
    sleepy: Config, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(sleepy, teams=("alpha",))
    await gw.wait_healthy("alpha", 60)
    await put_to_sleep(gw, "alpha")
    assert pids(gw, "alpha") == []
    auth = bearer(gw, "alpha")
    async with gw.client(headers=auth, timeout=90) as client:
        answers = await asyncio.gather(
            *(client.get(gw.url("alpha", "/data.json")) for _ in range(20))
        )
    assert [r.status_code for r in answers] == [200] * 20
    assert gw.app.fleet.wakes == 1
    assert len(pids(gw, "alpha")) == 1
    instances = [i for i in gw.app.store.instances("alpha") if i.role == "active"]
    assert len(instances) == 1
    assert len(gw.app.fleet.require("alpha").targets()) == 1


async def test_a_deploy_of_a_sleeping_team_starts_nothing_and_it_wakes_on_the_new_version(
    sleepy: Config, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(sleepy, teams=("alpha",))
    await gw.wait_healthy("alpha", 60)
    await put_to_sleep(gw, "alpha")
    result = await gw.app.deployer.deploy("alpha")
    assert result.ok, result.reason
    assert "asleep" in result.reason
    assert pids(gw, "alpha") == []
    assert gw.app.fleet.require("alpha").state() == "sleeping"
    (row,) = gw.app.deployer.history("alpha", 1)
    assert row["status"] == "succeeded"
    async with gw.client(headers=bearer(gw, "alpha"), timeout=90) as client:
        r = await client.get(gw.url("alpha", "/data.json"))
    assert r.status_code == 200
    (inst,) = [i for i in gw.app.store.instances("alpha") if i.role == "active"]
    assert inst.version == result.to_version


async def test_a_restart_keeps_sleepers_asleep(sleepy: Config) -> None:
    config = sleepy.replace(port=1)  # never listens: the gateway object is started directly
    first = create_app(config)
    first.store.create_team("alpha")
    first.store.create_team("beta")
    await first.startup()
    try:
        beta = first.fleet.require("beta")
        await until(lambda: first.fleet.require("alpha").state() == "up")
        await until(lambda: beta.state() == "up")
        task = first.fleet.sleep("alpha")
        assert task is not None
        await task
    finally:
        await first.shutdown()
    second = create_app(config)
    await second.startup()
    try:
        alpha = second.fleet.require("alpha")
        assert alpha.state() == "sleeping"
        assert alpha.targets() == []
        await until(lambda: second.fleet.require("beta").state() == "up")
        runtime = second.runtime
        assert isinstance(runtime, LocalRuntime)
        assert [i for i in runtime._running if i.startswith("alpha-")] == []
    finally:
        await second.shutdown()


async def test_the_capacity_guard_sleeps_the_least_recently_used_idle_team(
    sleepy: Config, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(sleepy.replace(max_awake=2), teams=("a1", "b2", "c3"))
    for team in ("a1", "b2"):
        await gw.wait_healthy(team, 60)
    assert gw.app.fleet.require("c3").state() == "sleeping"  # beyond max_awake: routed asleep
    auth = {t: bearer(gw, t) for t in ("a1", "b2", "c3")}
    async with gw.client(timeout=90) as client:
        # b2 was used after a1: a1 is the least recently used.
        for team in ("a1", "b2", "c3"):
            r = await client.get(gw.url(team, "/data.json"), headers=auth[team])
            assert r.status_code == 200, (team, r.text)
    states = {t: gw.app.fleet.require(t).state() for t in ("a1", "b2", "c3")}
    assert states == {"a1": "sleeping", "b2": "up", "c3": "up"}
    assert pids(gw, "a1") == []


async def test_a_wake_that_fails_within_hold_timeout_gets_503_with_retry_after(
    sleepy: Config, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(sleepy.replace(hold_timeout=2), teams=("alpha",))
    await gw.wait_healthy("alpha", 60)
    auth = bearer(gw, "alpha")
    await put_to_sleep(gw, "alpha")
    db = gw.config.teams_dir / "alpha" / "data.db"
    for extra in ("data.db-wal", "data.db-shm"):
        (db.parent / extra).unlink(missing_ok=True)
    db.write_bytes(os.urandom(8192))  # Datasette cannot open it: the instance never gets healthy
    async with gw.client(headers=auth, timeout=90) as client:
        r = await client.get(gw.url("alpha", "/data.json"))
    assert r.status_code == 503
    assert int(r.headers["retry-after"]) >= 1
    assert "retry" in r.json()["detail"]
    assert gw.app.fleet.wakes == 1


async def test_maintenance_answers_without_waking_a_sleeper(
    sleepy: Config, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(sleepy, teams=("alpha",))
    await gw.wait_healthy("alpha", 60)
    await put_to_sleep(gw, "alpha")
    gw.app.fleet.set_maintenance("alpha", "Back soon")
    async with gw.client(headers=bearer(gw, "alpha")) as client:
        r = await client.get(gw.url("alpha", "/data.json"))
    assert r.status_code == 503
    assert gw.app.fleet.wakes == 0
    assert pids(gw, "alpha") == []


def test_idle_settings_refuse_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="idle-timeout"):
        Config(data_dir=tmp_path, idle_timeout=-1)
    with pytest.raises(ConfigError, match="idle-timeout"):
        Config(data_dir=tmp_path, idle_timeout=float("nan"))
    with pytest.raises(ConfigError, match="max-awake"):
        Config(data_dir=tmp_path, max_awake=-1)


def test_a_teams_own_idle_timeout_is_stored_and_read_by_the_fleet(tmp_path: Path) -> None:
    runner = CliRunner()
    data = str(tmp_path / "data")
    assert runner.invoke(cli, ["teams", "create", "alpha", "--data-dir", data]).exit_code == 0
    out = runner.invoke(cli, ["teams", "idle-timeout", "alpha", "0", "--data-dir", data])
    assert out.exit_code == 0, out.output
    assert "never sleeps" in out.output
    bad = runner.invoke(cli, ["teams", "idle-timeout", "alpha", "soon", "--data-dir", data])
    assert bad.exit_code != 0 and "seconds" in bad.output
    gw = create_app(Config(data_dir=tmp_path / "data", idle_timeout=5))
    try:
        gw.fleet.idle.load()
        assert gw.fleet.idle_timeout("alpha") == 0
        gw.store.set_idle_timeout("alpha", None)
        gw.fleet.idle.load()
        assert gw.fleet.idle_timeout("alpha") == 5
    finally:
        gw.store.close()


async def test_an_upload_request_wakes_a_sleeper(
    sleepy: Config, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(sleepy, teams=("alpha",))
    await gw.wait_healthy("alpha", 60)
    await put_to_sleep(gw, "alpha")
    async with gw.client(headers=bearer(gw, "alpha")) as client:
        # The upload pages are the gateway's own (no instance needed to answer them), but
        # the user is about to look at the data: the instance starts now.
        await client.get(gw.url("alpha", "/-/upload-csv"))
    assert gw.app.fleet.wakes == 1
    await until(lambda: gw.app.fleet.require("alpha").state() == "up")
    assert len(pids(gw, "alpha")) == 1


async def test_teams_beyond_max_awake_are_routed_asleep_and_wake_on_their_first_request(
    sleepy: Config, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(sleepy.replace(max_awake=1), teams=("a1", "b2", "c3"))
    await gw.wait_healthy("a1", 60)
    fleet = gw.app.fleet
    assert {t: fleet.require(t).state() for t in ("a1", "b2", "c3")} == {
        "a1": "up",
        "b2": "sleeping",
        "c3": "sleeping",
    }
    assert pids(gw, "b2") == [] and pids(gw, "c3") == []
    assert asleep_in_store(gw, "b2")
    gw.app.store.create_team("d4")  # registered while the gateway runs: asleep too
    await until(lambda: "d4" in fleet.services)
    assert fleet.require("d4").state() == "sleeping" and pids(gw, "d4") == []
    async with gw.client(headers=bearer(gw, "c3"), timeout=90) as client:
        r = await client.get(gw.url("c3", "/data.json"))
    assert r.status_code == 200
    assert fleet.require("c3").state() == "up"
    assert fleet.require("a1").state() == "sleeping"  # the guard made room
    await until(lambda: pids(gw, "a1") == [])


async def test_a_starting_target_is_checked_every_20_ms_at_first_then_every_100_ms() -> None:
    """A woken team's held requests wait on the first passing check: while a start is young
    it is checked often; a slow start falls back to 100 ms; a started target to the interval."""
    monitor = HealthMonitor(interval=1.0)
    target = Target("alpha-1", "127.0.0.1", 1)
    assert target.state is State.STARTING
    now = asyncio.get_running_loop().time()
    assert monitor._next_check(target, now) == EARLY_INTERVAL == 0.02
    assert monitor._next_check(target, now - EARLY_FOR - 0.1) == STARTING_INTERVAL == 0.1
    target.report_health(True)
    assert target.state is State.HEALTHY
    assert monitor._next_check(target, now) == 1.0
