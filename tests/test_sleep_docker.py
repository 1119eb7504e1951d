"""Idle teams sleep and wake on their first request with real containers (issue 17): the
container is removed (volume kept), a gateway restart keeps it asleep, the first request
creates exactly one container again."""

from __future__ import annotations

import asyncio

import pytest

from gateway.config import Config
from tests.docker_support import add_teams, docker_config, get, serve, until

__all__ = ["docker_config"]  # the fixture, imported for pytest
pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]


def containers_of(gateway_id: str, team: str) -> list[object]:
    import docker

    client = docker.from_env()
    try:
        label = f"gateway.managed-by={gateway_id}"
        found = client.containers.list(all=True, filters={"label": label})
        return [c for c in found if c.name.startswith(f"gateway-{team}-")]
    finally:
        client.close()


async def test_a_sleeping_container_is_removed_stays_asleep_across_restart_and_wakes(
    docker_config: Config,
) -> None:
    add_teams(docker_config, "alpha")
    async with serve(docker_config.replace(hold_timeout=60)) as running:
        await running.wait_healthy("alpha", 90)
        gateway_id = running.app.gateway_id
        assert len(containers_of(gateway_id, "alpha")) == 1
        task = running.app.fleet.sleep("alpha")
        assert task is not None
        await task
        assert containers_of(gateway_id, "alpha") == []
        assert (docker_config.teams_dir / "alpha" / "data.db").exists()  # the volume stays
    async with serve(docker_config.replace(hold_timeout=60)) as running:
        service = running.app.fleet.require("alpha")
        assert service.state() == "sleeping"
        assert containers_of(gateway_id, "alpha") == []
        codes = await asyncio.gather(*(get(running, "alpha") for _ in range(10)))
        assert codes == [200] * 10
        assert running.app.fleet.wakes == 1
        await until(lambda: service.state() == "up", 30, "awake")
        assert len(containers_of(gateway_id, "alpha")) == 1
