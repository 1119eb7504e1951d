"""The local runtime's fork server (gateway/instance/zygote.py, gateway/runtimes/zygote.py):
real Datasette processes forked from a preloaded Python behind a real gateway socket."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from gateway.config import Config
from gateway.errors import ConfigError
from gateway.runtimes.zygote import Forked
from tests.conftest import StartGateway
from tests.test_deploy import bearer
from tests.test_sleep import alive, local, pids, put_to_sleep, until


def parent(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no PPid for {pid}")


async def test_each_team_is_forked_with_its_own_secret_and_a_dead_zygote_is_replaced(
    config: Config, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(config.replace(hold_timeout=60), teams=("alpha", "beta"))
    await gw.wait_healthy("alpha", 60)
    await gw.wait_healthy("beta", 60)
    runtime = local(gw)
    assert runtime.zygote is not None
    (a,) = pids(gw, "alpha")
    (b,) = pids(gw, "beta")
    zygote = parent(a)
    assert parent(b) == zygote != os.getpid()  # both forked by the one zygote
    assert all(isinstance(s.process, Forked) for s in runtime._running.values())
    # Each instance answers only requests signed with its own team's secret: both serving
    # shows each child got its own environment, not the zygote's or another team's.
    async with gw.client(timeout=90) as client:
        for team in ("alpha", "beta"):
            r = await client.get(gw.url(team, "/data.json"), headers=bearer(gw, team))
            assert r.status_code == 200, (team, r.text)
        # The zygote dies: its children die with it (PR_SET_PDEATHSIG), each is reported
        # exited, and the next starts come from a fresh zygote; requests are held meanwhile.
        os.kill(zygote, signal.SIGKILL)
        await until(lambda: not alive(a) and not alive(b))
        r = await client.get(gw.url("alpha", "/data.json"), headers=bearer(gw, "alpha"))
        assert r.status_code == 200, r.text
    await until(lambda: len(pids(gw, "alpha")) == 1 and len(pids(gw, "beta")) == 1)
    (a2,) = pids(gw, "alpha")
    assert a2 != a and parent(a2) not in (zygote, os.getpid())


async def test_exec_starts_a_fresh_interpreter_and_wakes_the_same_way(
    config: Config, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(
        config.replace(local_start="exec", hold_timeout=60, idle_timeout=0), teams=("alpha",)
    )
    await gw.wait_healthy("alpha", 60)
    assert local(gw).zygote is None
    (first,) = pids(gw, "alpha")
    assert parent(first) == os.getpid()
    await put_to_sleep(gw, "alpha")
    async with gw.client(headers=bearer(gw, "alpha"), timeout=90) as client:
        assert (await client.get(gw.url("alpha", "/data.json"))).status_code == 200
    (second,) = pids(gw, "alpha")
    assert parent(second) == os.getpid()


def test_local_start_refuses_anything_else(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--local-start"):
        Config(data_dir=tmp_path, local_start="spawn")


@pytest.mark.parametrize("module", ["gateway.instance.zygote", "gateway.instance.run"])
def test_a_process_whose_gateway_is_already_gone_exits_at_once(module: str) -> None:
    """The death signal is armed in the child, after its start: a gateway that died before
    that would leave an orphan holding a port. Given a pid that is not its parent (as the
    gateway's is once it has died), it exits at once instead of serving."""
    import subprocess
    import sys

    arg = "1" if module.endswith("zygote") else "--gateway-parent=1"
    done = subprocess.run(
        [sys.executable, "-m", module, arg, *(["serve", "--help"] if "run" in module else [])],
        stdin=subprocess.PIPE,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 1, done
    assert done.stdout == b"" and done.stderr == b""
