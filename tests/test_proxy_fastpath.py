"""The hot path's shortcuts keep the proxy's promises (benchmarks/README.md says why)."""

from __future__ import annotations

import httpx
import pytest

from gateway.config import Config
from gateway.routing.exchange import WATCH_AFTER
from tests.conftest import StartGateway
from tests.servers import RawUpstream, UvicornUpstream, gateway_for, wait_for


async def test_client_gone_before_the_watcher_starts_still_cancels_upstream(
    config: Config, start_gateway: StartGateway
) -> None:
    # The disconnect watcher starts WATCH_AFTER seconds into a request; a client that leaves
    # sooner must still have its upstream exchange cut and its slot freed.
    hang = await RawUpstream("hang").start()
    try:
        gw = await gateway_for(start_gateway, config, {"alpha": [hang.address]})
        target = gw.app.fleet.service("alpha").targets()[0]  # type: ignore[union-attr]
        async with gw.client(timeout=httpx.Timeout(30, read=WATCH_AFTER / 5)) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get(gw.url("alpha", "/wait"))
        await wait_for(lambda: hang.peer_closed == 1)
        await wait_for(lambda: target.inflight == 0)
        assert target.pool.connections() == 0
    finally:
        await hang.close()


async def test_a_proxied_response_carries_one_date_header(
    config: Config, start_gateway: StartGateway
) -> None:
    upstream = await UvicornUpstream().start()  # uvicorn sends its own Date, like Datasette
    try:
        gw = await gateway_for(start_gateway, config, {"alpha": [upstream.address]})
        async with gw.client() as client:
            r = await client.get(gw.url("alpha", "/echo"))
        assert r.status_code == 200
        assert len(r.headers.get_list("date")) == 1
    finally:
        await upstream.close()
