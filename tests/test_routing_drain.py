"""Hold (no healthy target yet) and drain semantics, through a live gateway."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gateway.config import Config
from gateway.routing.target import State
from gateway.runtimes.static import StaticRuntime
from gateway.store import open_store
from tests.conftest import StartGateway
from tests.servers import ClosedPort, Proxied, UvicornUpstream, gateway_for, wait_for


async def status_counters(gw: Proxied) -> dict[str, int]:
    async with gw.client() as client:
        data = (
            await client.get(gw.url(None, "/-/gateway/status.json"), headers=gw.admin_headers())
        ).json()
    return data["counters"]  # type: ignore[no-any-return]


async def test_request_is_held_until_a_target_turns_healthy(
    config: Config, start_gateway: StartGateway
) -> None:
    closed = ClosedPort()  # the target exists but nothing answers yet: it stays STARTING
    gw = await gateway_for(
        start_gateway,
        config.replace(hold_timeout=20),
        {"alpha": [("127.0.0.1", closed.port)]},
        wait=False,
    )
    target = gw.app.fleet.service("alpha").targets()[0]  # type: ignore[union-attr]
    up = UvicornUpstream()
    try:
        async with gw.client() as client:
            seen = gw.app.counters.requests
            request = asyncio.ensure_future(client.post(gw.url("alpha", "/echo"), content=b"hi"))
            await wait_for(lambda: gw.app.counters.requests == seen + 1)  # at the proxy...
            assert not request.done()  # ...held, not refused
            assert target.state is State.STARTING
            await up.start(sock=closed.sock)  # the instance comes up on its port
            r = await request
        assert r.status_code == 200, r.text
        assert r.json()["body"] == "hi"
        assert target.state is State.HEALTHY
        assert (await status_counters(gw))["retries"] == 0
    finally:
        await up.close()
        closed.close()


async def test_hold_timeout_gives_503_with_retry_after(
    config: Config, start_gateway: StartGateway
) -> None:
    with ClosedPort() as closed:
        gw = await gateway_for(
            start_gateway,
            config.replace(hold_timeout=0.5),
            {"alpha": [("127.0.0.1", closed.port)]},
            wait=False,
        )
        async with gw.client() as client:
            r = await client.get(gw.url("alpha", "/x"), headers={"accept": "application/json"})
    assert r.status_code == 503
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["status"] == 503


async def test_drain_finishes_in_flight_and_sends_new_requests_elsewhere(
    config: Config, start_gateway: StartGateway
) -> None:
    a, b = await UvicornUpstream().start(), await UvicornUpstream().start()
    try:
        gw = await gateway_for(start_gateway, config, {"alpha": [a.address, b.address]})
        first = gw.app.fleet.service("alpha").targets()[0]  # type: ignore[union-attr]
        async with gw.client() as client:
            slow = asyncio.ensure_future(client.get(gw.url("alpha", "/gate")))
            await wait_for(lambda: a.state.gated == 1)
            assert first.inflight == 1
            drain = asyncio.ensure_future(gw.app.fleet.stop_target(first))
            await wait_for(lambda: first.state is State.DRAINING)
            for _ in range(3):
                r = await client.get(gw.url("alpha", "/echo"))
                assert r.status_code == 200
            assert not slow.done() and not drain.done()  # drain waits for the in-flight one
            a.state.gate.set()
            assert (await slow).status_code == 200
            result = await drain
        assert (result.completed, result.cancelled) == (1, 0)
        assert first.state is State.STOPPED
        assert a.state.paths == ["/gate"]  # nothing new reached the draining target
        assert b.state.paths == ["/echo"] * 3
    finally:
        await a.close()
        await b.close()


async def test_deleting_a_team_drains_and_the_straggler_gets_504(
    config: Config, start_gateway: StartGateway
) -> None:
    up = await UvicornUpstream().start()
    try:
        gw = await gateway_for(
            start_gateway, config.replace(drain_timeout=0.5), {"alpha": [up.address]}
        )
        target = gw.app.fleet.service("alpha").targets()[0]  # type: ignore[union-attr]
        async with gw.client() as client:
            slow = asyncio.ensure_future(
                client.get(gw.url("alpha", "/slow?s=30"), headers={"accept": "application/json"})
            )
            await wait_for(lambda: up.state.slow_started == 1)
            other = open_store(config.control_db)  # as `gateway teams delete` does
            try:
                other.set_team_state("alpha", "deleting")
            finally:
                other.close()
            r = await slow
            # The delete is over once the volume is archived and the rows are gone (the route
            # goes first; the archive waits for the backups' final sync).
            await wait_for(
                lambda: gw.app.fleet.service("alpha") is None and not gw.app.store.teams()
            )
        assert r.status_code == 504
        assert r.json()["status"] == 504
        assert target.inflight == 0
        assert target.state is State.STOPPED
        counters = await status_counters(gw)
        assert counters["drains"] == 1
        assert counters["drain_cancelled"] == 1
        assert [t.slug for t in gw.app.store.teams()] == []
    finally:
        await up.close()


async def test_a_straggler_mid_body_is_cut_at_the_drain_timeout(
    config: Config, start_gateway: StartGateway
) -> None:
    """docs/reliability.md: at the drain timeout, stragglers already sending their body are cut
    (the client sees a truncated body, never a clean end), and the stop proceeds."""
    up = await UvicornUpstream().start()
    try:
        gw = await gateway_for(
            start_gateway, config.replace(drain_timeout=0.5), {"alpha": [up.address]}
        )
        target = gw.app.fleet.service("alpha").targets()[0]  # type: ignore[union-attr]
        async with gw.client() as client, client.stream("GET", gw.url("alpha", "/trickle")) as r:
            assert r.status_code == 200 and r.headers["content-length"] == "1000"
            await wait_for(lambda: up.state.trickling == 1)
            other = open_store(config.control_db)  # as `gateway teams delete` does
            try:
                other.set_team_state("alpha", "deleting")
            finally:
                other.close()
            got = b""
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                async for chunk in r.aiter_bytes():
                    got += chunk
        assert got == b"t" * 100  # what was sent before the cut, and nothing pretending more
        await wait_for(lambda: gw.app.fleet.service("alpha") is None)
        assert target.inflight == 0 and target.state is State.STOPPED
        counters = await status_counters(gw)
        assert counters["drain_cancelled"] == 1
    finally:
        await up.close()


async def test_a_client_that_leaves_while_held_is_never_forwarded(
    config: Config, start_gateway: StartGateway
) -> None:
    closed = ClosedPort()
    gw = await gateway_for(
        start_gateway,
        config.replace(hold_timeout=20),
        {"alpha": [("127.0.0.1", closed.port)]},
        wait=False,
    )
    service = gw.app.fleet.service("alpha")
    assert service is not None
    up = UvicornUpstream()
    try:
        async with gw.client(timeout=httpx.Timeout(30, read=0.5)) as client:
            with pytest.raises(httpx.ReadTimeout):  # gives up while held, and hangs up
                await client.post(gw.url("alpha", "/held"), content=b"do not run me")
        assert service.holding == 1  # still held: no target yet
        await up.start(sock=closed.sock)
        await gw.wait_healthy("alpha")
        # The held request ends once the target is up: as "client gone" (499), not sent.
        stats = gw.app.stats.teams
        await wait_for(lambda: "alpha" in stats and stats["alpha"].statuses.get(499) == 1)
        async with gw.client() as client:
            assert (await client.get(gw.url("alpha", "/echo"))).status_code == 200
        assert up.state.paths == ["/echo"]  # the gone client's POST was never sent
    finally:
        await up.close()
        closed.close()


async def test_a_delete_interrupted_by_a_restart_completes(
    config: Config, start_gateway: StartGateway
) -> None:
    """A gateway that died mid-delete leaves the team 'deleting': the next one finishes it."""
    store = open_store(config.control_db)
    store.create_team("alpha")
    store.add_instance("alpha", "static")
    store.create_team("beta")
    store.set_team_state("alpha", "deleting")
    store.close()
    up = await UvicornUpstream().start()
    try:
        gw = await start_gateway(
            config, runtime=StaticRuntime({"alpha": up.address, "beta": up.address})
        )
        await wait_for(lambda: [t.slug for t in gw.app.store.teams()] == ["beta"])
        assert gw.app.fleet.service("alpha") is None
        assert gw.app.store.instances("alpha") == []
    finally:
        await up.close()
