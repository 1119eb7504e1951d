"""``gateway teams move`` where no move is possible: a clear one-line error, nothing changed.

The move itself runs on a real one-node swarm (tests/test_swarm_runtime.py); these need no
Docker: a runtime without nodes, and no gateway running.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from gateway.config import Config
from tests.edge import run_edge

GATEWAY = str(Path(sys.executable).with_name("gateway"))


def move_cli(cfg: Config, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    command = [GATEWAY, "teams", "move", *args, "--data-dir", str(cfg.data_dir)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


async def test_a_runtime_without_nodes_refuses_a_move_and_the_team_serves_on(
    config: Config,
) -> None:
    async with run_edge(config, teams=("alpha",)) as edge:
        await edge.wait_healthy("alpha", 30)
        (before,) = edge.app.fleet.require("alpha").targets()
        out = await asyncio.to_thread(move_cli, config, "alpha", "--node", "worker-2")
        assert out.returncode == 1, out
        assert "the local runtime runs every team on this one host" in out.stderr, out
        assert "moves need --runtime swarm" in out.stderr and "Traceback" not in out.stderr
        service = edge.app.fleet.require("alpha")
        assert service.targets() == [before] and service.paused_until is None
        assert "alpha" not in edge.app.fleet.operations


def test_a_move_needs_a_running_gateway(config: Config) -> None:
    out = move_cli(config, "alpha", "--node", "worker-2")
    assert out.returncode == 1 and "no gateway is running" in out.stderr, out
