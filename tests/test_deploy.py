"""Zero-downtime deploys against real Datasette processes (the local runtime)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import httpx
import pytest

from gateway.config import Config
from gateway.routing.target import State
from tests.conftest import Running, StartGateway

SLOW_SQL = (
    "with recursive c(x) as (select 1 union all select x + 1 from c where x < cast(:n as integer)) "
    "select count(*) as n from c"
)


async def load(
    gw: Running,
    team: str,
    stop: asyncio.Event,
    out: dict[str, list[object]],
    max_requests: int = 2000,
) -> None:
    """GET loop, bounded in count; records every non-200 and every exception."""
    async with gw.client(headers=bearer(gw, team)) as client:
        for _ in range(max_requests):
            if stop.is_set():
                return
            try:
                r = await client.get(gw.url(team, "/data.json?_shape=objects"))
                out["ok" if r.status_code == 200 else "bad"].append(r.status_code)
            except httpx.HTTPError as exc:
                out["bad"].append(repr(exc))


def bearer(gw: Running, *teams: str) -> dict[str, str]:
    """An API token for a member of ``teams`` (the deploy tests are not about auth)."""
    from gateway.auth import accounts

    user = accounts.create_user(gw.app.store, f"deployer-{os.urandom(3).hex()}@example.org", "-")
    for team in teams:
        accounts.add_member(gw.app.store, team, user.id, "owner")
    token = gw.app.auth.tokens.create(teams[0], user.id, "deploy-tests")
    gw.app.auth.changed()
    return {"authorization": f"Bearer {token}"}


async def slow_query(gw: Running, auth: dict[str, str], n: int, **params: str) -> httpx.Response:
    """The calibrated long query on alpha, through the gateway."""
    async with gw.client(timeout=120, headers=auth) as client:
        return await client.get(
            gw.url("alpha", "/data.json"), params={"sql": SLOW_SQL, "n": n, **params}
        )


async def until(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def calibrated_rows(gw: Running, team: str, seconds: float) -> int:
    """How many CTE rows take about ``seconds`` on this machine right now (bounded)."""
    n = 300_000
    async with gw.client(headers=bearer(gw, team)) as client:
        t0 = time.perf_counter()
        r = await client.get(gw.url(team, "/data.json"), params={"sql": SLOW_SQL, "n": n})
        assert r.status_code == 200, r.text
        took = max(time.perf_counter() - t0, 0.01)
    return min(int(n * seconds / took), 400_000_000)


@pytest.fixture
def deploy_config(config: Config) -> Config:
    return config.replace(deploy_timeout=60, drain_timeout=30, extra={"sql_time_limit_ms": 120_000})


async def test_deploy_cuts_over_with_no_failed_request(
    deploy_config: Config, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(deploy_config, teams=("alpha",))
    await gw.wait_healthy("alpha")
    fleet = gw.app.fleet
    (old,) = fleet.service("alpha").targets()
    old_pid = gw.app.runtime.pid(old.id)  # type: ignore[attr-defined]
    # Longer than a candidate takes to get healthy here, so it spans the cut-over.
    n = await calibrated_rows(gw, "alpha", 8.0)
    stop = asyncio.Event()
    seen: dict[str, list[object]] = {"ok": [], "bad": []}
    loaders = [asyncio.create_task(load(gw, "alpha", stop, seen)) for _ in range(4)]
    served_before = old.served
    await until(lambda: old.served >= served_before + 20)  # the load flows to the old target
    # And one request certainly in flight on the old target across the cut-over and the drain.
    query = asyncio.create_task(slow_query(gw, bearer(gw, "alpha"), n))
    await until(lambda: old.inflight > 0)
    result = await gw.app.deployer.deploy("alpha")
    assert query.done(), "the deploy returned before the old target drained"
    (new,) = fleet.service("alpha").targets()
    await until(lambda: new.served >= 20)  # the load goes on, to the new target
    stop.set()
    await asyncio.gather(*loaders)

    assert result.ok, result.reason
    assert seen["bad"] == []
    assert result.drained >= 1  # the drain waited for what was in flight
    assert query.done() and (await query).status_code == 200
    assert new is not old and new.state is State.HEALTHY
    assert old.state is State.STOPPED
    assert old.pool.connections() == 0  # no pooled connection to the old target remains
    assert old_pid is not None and not pid_alive(old_pid)
    roles = [(i.role, i.id) for i in gw.app.store.instances("alpha")]
    assert roles == [("active", new.id)]
    (row,) = gw.app.deployer.history("alpha")
    assert row["status"] == "succeeded"


async def test_long_query_finishes_on_the_old_target_before_it_stops(
    deploy_config: Config, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(deploy_config, teams=("alpha",))
    await gw.wait_healthy("alpha")
    n = await calibrated_rows(gw, "alpha", 8.0)
    (old,) = gw.app.fleet.service("alpha").targets()
    old_pid = gw.app.runtime.pid(old.id)  # type: ignore[attr-defined]
    assert old_pid is not None

    auth = bearer(gw, "alpha")

    query = asyncio.create_task(slow_query(gw, auth, n, _shape="array"))
    await until(lambda: old.inflight > 0)
    result = await gw.app.deployer.deploy("alpha")
    assert query.done(), "the deploy returned before the old target drained"
    response = query.result()
    assert response.status_code == 200
    assert response.json() == [{"n": n}]
    assert result.ok and result.drained == 1 and result.cancelled == 0
    assert not pid_alive(old_pid)


async def test_drain_timeout_gives_the_straggler_504_and_the_stop_proceeds(
    config: Config, start_gateway: StartGateway
) -> None:
    cfg = config.replace(deploy_timeout=60, drain_timeout=1.0, extra={"sql_time_limit_ms": 120_000})
    gw = await start_gateway(cfg, teams=("alpha",))
    await gw.wait_healthy("alpha")
    n = await calibrated_rows(gw, "alpha", 6.0)
    (old,) = gw.app.fleet.service("alpha").targets()

    auth = bearer(gw, "alpha")

    query = asyncio.create_task(slow_query(gw, auth, n))
    await until(lambda: old.inflight > 0)
    result = await gw.app.deployer.deploy("alpha")
    response = await query
    assert response.status_code == 504
    assert result.ok and result.cancelled == 1
    assert old.state is State.STOPPED
    async with gw.client(headers=auth) as client:
        assert (await client.get(gw.url("alpha", "/data.json"))).status_code == 200


async def test_a_deploy_that_never_gets_healthy_changes_nothing(
    config: Config, start_gateway: StartGateway
) -> None:
    # A real instance that cannot pass its health check: Datasette refuses to start when
    # given an unknown setting, so the candidate keeps exiting and restarting.
    gw = await start_gateway(config.replace(deploy_timeout=3), teams=("alpha",))
    await gw.wait_healthy("alpha")
    (old,) = gw.app.fleet.service("alpha").targets()
    before = gw.app.store.instances("alpha")
    gw.app.config.extra["datasette_args"] = ["--setting", "no_such_setting", "1"]
    result = await gw.app.deployer.deploy("alpha")
    gw.app.config.extra.pop("datasette_args")

    assert not result.ok
    assert "did not become healthy" in result.reason
    assert gw.app.fleet.service("alpha").targets() == [old]
    assert old.state is State.HEALTHY
    assert gw.app.store.instances("alpha") == before
    assert len(gw.app.runtime._running) == 1  # type: ignore[attr-defined]
    async with gw.client(headers=bearer(gw, "alpha")) as client:
        assert (await client.get(gw.url("alpha", "/data.json"))).status_code == 200
    assert gw.app.deployer.history("alpha")[0]["status"] == "failed"


async def test_kill_9_of_the_old_target_mid_drain_never_leaves_a_client_hanging(
    deploy_config: Config, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(deploy_config, teams=("alpha",))
    await gw.wait_healthy("alpha")
    n = await calibrated_rows(gw, "alpha", 8.0)
    (old,) = gw.app.fleet.service("alpha").targets()
    old_pid = gw.app.runtime.pid(old.id)  # type: ignore[attr-defined]
    assert old_pid is not None

    auth = bearer(gw, "alpha")
    # No pooled connection left: on a *fresh* connection a reset is never retried, so the
    # client must get a clear 502 (on a reused one, a GET would be retried on the new target).
    old.pool.close_idle()

    query = asyncio.create_task(slow_query(gw, auth, n))
    await until(lambda: old.inflight > 0)
    deploy = asyncio.create_task(gw.app.deployer.deploy("alpha"))
    await until(lambda: old.state is State.DRAINING)
    os.kill(old_pid, 9)
    response = await asyncio.wait_for(query, 30)
    assert response.status_code == 502
    assert "closed the connection" in response.text
    result = await asyncio.wait_for(deploy, 60)
    assert result.ok


async def test_pause_holds_requests_until_resume_and_maintenance_answers_503(
    config: Config, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(config, teams=("alpha",))
    await gw.wait_healthy("alpha")
    gw.app.fleet.pause("alpha", 20)
    async with gw.client(headers=bearer(gw, "alpha")) as client:
        (target,) = gw.app.fleet.service("alpha").targets()  # type: ignore[union-attr]
        seen, served = gw.app.counters.requests, target.served
        held = asyncio.create_task(client.post(gw.url("alpha", "/-/health")))
        await until(lambda: gw.app.counters.requests == seen + 1)  # it reached the proxy...
        assert not held.done() and target.served == served  # ...and was held there
        gw.app.fleet.resume("alpha")
        response = await asyncio.wait_for(held, 10)
        assert response.status_code in (200, 405)  # reached Datasette: never sent while paused

        gw.app.fleet.set_maintenance("alpha", "Back at 5pm: upgrading storage.")
        page = await client.get(gw.url("alpha", "/"))
        assert page.status_code == 503
        assert "Back at 5pm: upgrading storage." in page.text
        assert page.headers["retry-after"]
        gw.app.fleet.set_maintenance("alpha", None)
        assert (await client.get(gw.url("alpha", "/-/health"))).status_code == 200

        # Maintenance that begins while a request is held answers it too, once released.
        gw.app.fleet.pause("alpha", 20)
        (target,) = gw.app.fleet.service("alpha").targets()  # type: ignore[union-attr]
        served, seen = target.served, gw.app.counters.requests
        held = asyncio.create_task(client.get(gw.url("alpha", "/")))
        await until(lambda: gw.app.counters.requests == seen + 1)  # it reached the proxy...
        assert not held.done() and target.served == served and target.inflight == 0  # ...held
        gw.app.fleet.set_maintenance("alpha", "Down for a moment.")
        gw.app.fleet.resume("alpha")
        late = await asyncio.wait_for(held, 10)
        assert late.status_code == 503, late.text
        assert "Down for a moment." in late.text
