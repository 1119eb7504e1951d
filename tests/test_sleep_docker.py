"""Idle teams sleep and wake on their first request with real containers (issue 17): the
container is removed (volume kept), a gateway restart keeps it asleep, the first request
creates exactly one container again; a deploy of a sleeper creates nothing and it wakes on the
new image; the max_awake guard removes the least recently used team's container only."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.config import Config
from gateway.runtimes.docker import image
from tests.docker_support import add_teams, docker_config, get, serve, until

__all__ = ["docker_config"]  # the fixture, imported for pytest
pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]


def containers_of(gateway_id: str, team: str) -> list[Any]:
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


@pytest.fixture
def second_tag(docker_image: str, docker_config: Config) -> Iterator[str]:
    """The tenant image under a second tag: a deploy's "new version" without another build."""
    import docker

    client = docker.from_env()
    tag = f"sleep-{docker_config.data_dir.name[-12:].lower()}"
    client.images.get(docker_image).tag(image.IMAGE_REPO, tag)
    yield f"{image.IMAGE_REPO}:{tag}"
    client.images.remove(f"{image.IMAGE_REPO}:{tag}")  # the tag only: the image stays
    client.close()


async def test_a_deploy_of_a_sleeping_team_creates_no_container_and_it_wakes_on_the_new_image(
    docker_config: Config, second_tag: str
) -> None:
    add_teams(docker_config, "alpha")
    async with serve(docker_config.replace(hold_timeout=60)) as running:
        await running.wait_healthy("alpha", 90)
        gateway_id = running.app.gateway_id
        task = running.app.fleet.sleep("alpha")
        assert task is not None
        await task
        result = await running.app.deployer.deploy("alpha", second_tag)
        assert result.ok and "asleep" in result.reason, result.reason
        assert containers_of(gateway_id, "alpha") == []  # nothing was created or started
        assert running.app.fleet.require("alpha").state() == "sleeping"
        assert await get(running, "alpha") == 200
        (container,) = containers_of(gateway_id, "alpha")
        assert container.attrs["Config"]["Image"] == second_tag


async def test_the_capacity_guard_removes_the_least_recently_used_teams_container(
    docker_config: Config,
) -> None:
    teams = ("a1", "b2", "c3")
    add_teams(docker_config, *teams)
    async with serve(docker_config.replace(hold_timeout=60, max_awake=2)) as running:
        for team in ("a1", "b2"):
            await running.wait_healthy(team, 90)
        gateway_id = running.app.gateway_id
        assert running.app.fleet.require("c3").state() == "sleeping"  # beyond max_awake
        assert containers_of(gateway_id, "c3") == []
        assert await get(running, "a1") == 200
        assert await get(running, "b2") == 200  # a1 is now the least recently used
        kept = [c.id for c in containers_of(gateway_id, "b2")]
        assert await get(running, "c3") == 200  # the wake puts a1 to sleep first
        states = {t: running.app.fleet.require(t).state() for t in teams}
        assert states == {"a1": "sleeping", "b2": "up", "c3": "up"}
        await until(lambda: containers_of(gateway_id, "a1") == [], 60, "a1's container removed")
        assert [c.id for c in containers_of(gateway_id, "b2")] == kept
        assert len(containers_of(gateway_id, "c3")) == 1
