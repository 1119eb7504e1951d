"""Issue 13, cases 4 and 5 on the Docker runtime: a team's volume is the container user's
alone (0700), and a container's published port answers only requests the gateway signed."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from itsdangerous import TimestampSigner

from gateway.config import Config
from gateway.runtimes.docker import image, published
from tests.docker_support import add_teams, container_of, docker_config, get, serve

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]
__all__ = ["docker_config"]


@pytest.fixture
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_docker_volumes_are_private_and_ports_answer_only_the_gateway(
    docker_config: Config, usual_umask: None
) -> None:
    cfg = docker_config
    add_teams(cfg, "alpha")  # made by "the CLI" under the usual umask 022
    async with serve(cfg) as running:
        await running.wait_healthy("alpha", 90)  # the gateway's signed checks pass
        assert await get(running, "alpha") == 200  # through the gateway: signed
        container = container_of(running.app, "alpha")
        address = published(container.attrs)
        assert address is not None
        direct = f"http://{address[0]}:{address[1]}"
        forged = TimestampSigner("guess", salt="gateway-request").sign(b"alpha").decode()
        async with httpx.AsyncClient(timeout=10) as host_process:
            for path in ("/data.json", "/-/health", "/-/versions.json"):
                for headers in ({}, {"x-gateway-signature": forged}):
                    r = await host_process.get(direct + path, headers=headers)
                    assert r.status_code == 403, (path, headers, r.status_code)
        # Docker's own HEALTHCHECK signs with the container's secret, so it still passes.
        code, out = container.exec_run(image.HEALTH_CMD)
        assert code == 0, out

        volume = cfg.teams_dir / "alpha"
        assert mode(cfg.data_dir) == 0o700 and mode(cfg.teams_dir) == 0o700
        assert mode(volume) == 0o700
        if os.geteuid() == 0:  # as root, volumes belong to the container's own user
            assert volume.stat().st_uid == image.UID
        for name in ("control.db", "control.db-wal", "control.db-shm"):
            assert mode(cfg.data_dir / name) == 0o600, name
