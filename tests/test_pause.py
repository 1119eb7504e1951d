"""``pause`` holds a team's requests for the pause and no longer, and releases them in the order
they came, before any request that arrives later. The CLI says what the server applied."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from gateway.config import Config
from tests.conftest import StartGateway
from tests.edge import run_edge
from tests.servers import UvicornUpstream, gateway_for, wait_for

GATEWAY = str(Path(sys.executable).with_name("gateway"))
PAUSE = 1.5


async def test_a_pause_holds_for_its_seconds_and_keeps_the_order(
    config: Config, start_gateway: StartGateway
) -> None:
    up = await UvicornUpstream().start()
    try:
        # hold_timeout well above the pause: the old code held until it, not until the pause.
        gw = await gateway_for(
            start_gateway, config.replace(hold_timeout=8), {"alpha": [up.address]}
        )
        async with gw.client() as client:
            service = gw.app.fleet.service("alpha")
            assert service is not None
            gw.app.fleet.pause("alpha", PAUSE)
            first = asyncio.ensure_future(client.get(gw.url("alpha", "/first")))
            await wait_for(lambda: service.holding == 1)  # held before the second one comes
            second = asyncio.ensure_future(client.get(gw.url("alpha", "/second")))
            await wait_for(lambda: service.holding == 2)
            await wait_for(lambda: service.paused_until is None, PAUSE + 15)  # its timer ended it
            late = asyncio.ensure_future(client.get(gw.url("alpha", "/late")))
            answers = await asyncio.wait_for(asyncio.gather(first, second, late), 30)
        # The echo upstream answers unknown paths 404 itself and records the order it saw.
        assert [r.status_code for r in answers] == [404, 404, 404]
        # Nobody overtook: requests held past the pause (until the 8 s hold timeout) would
        # have let /late, which came once the pause was over, reach the upstream first.
        assert up.state.paths == ["/first", "/second", "/late"]
    finally:
        await up.close()


async def test_the_cli_says_the_pause_the_server_applied(config: Config) -> None:
    cfg = config.replace(max_pause=5)
    async with run_edge(cfg, teams=("alpha",)) as edge:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        args = [GATEWAY, "pause", "--team", "alpha", "--seconds", "100"]
        args += ["--data-dir", str(cfg.data_dir)]
        out = await asyncio.to_thread(
            subprocess.run, args, capture_output=True, text=True, timeout=60, env=env
        )
        assert out.returncode == 0, out
        assert "held for up to 5s (capped at the gateway's max_pause, 5s)" in out.stdout
        assert "100" not in out.stdout
        edge.app.fleet.resume("alpha")
