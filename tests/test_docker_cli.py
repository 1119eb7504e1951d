"""``gateway teams create/delete --runtime docker`` without a gateway: idempotent, converging."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from gateway.cli import cli
from gateway.config import Config
from gateway.errors import InvalidSlug
from gateway.runtimes.docker import DockerRuntime, container_name
from gateway.store import open_store
from gateway.store.db import Instance


@pytest.fixture
def docker_env(config: Config, docker_image: str) -> Iterator[dict[str, str]]:
    import docker

    store = open_store(config.control_db)
    gateway_id = store.ensure_setting("gateway_id")
    store.close()
    yield {
        "GATEWAY_DATA_DIR": str(config.data_dir),
        "GATEWAY_RUNTIME": "docker",
        "GATEWAY_DRAIN_TIMEOUT": "5",
    }
    client = docker.from_env()
    for c in client.containers.list(
        all=True, filters={"label": f"gateway.managed-by={gateway_id}"}
    ):
        c.remove(force=True, v=True)
    client.close()


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner(env=env).invoke(cli, list(args), catch_exceptions=False)


def team_containers(config: Config, team: str) -> list[Any]:
    import docker

    store = open_store(config.control_db)
    gid = store.ensure_setting("gateway_id")
    store.close()
    client = docker.from_env()
    return client.containers.list(
        all=True, filters={"label": [f"gateway.managed-by={gid}", f"gateway.team={team}"]}
    )


@pytest.mark.docker
@pytest.mark.timeout(300)
def test_interrupted_provision_converges_and_delete_keeps_data(
    config: Config, docker_env: dict[str, str]
) -> None:
    # A CLI killed mid-provision: the team and instance rows exist, the container was
    # created but never started.
    store = open_store(config.control_db)
    store.create_team("alpha")
    inst = store.add_instance("alpha", "docker")
    runtime = DockerRuntime(
        config,
        store,
        lambda t: store.ensure_setting(f"instance_secret:{t}"),
        store.ensure_setting("gateway_id"),
    )
    runtime.prepare_volume("alpha")
    runtime.client.api.create_container(**runtime.spec(inst))
    (created,) = team_containers(config, "alpha")
    assert created.status == "created"

    result = run(docker_env, "teams", "create", "alpha")
    assert result.exit_code == 0, result.output
    assert "exists; making sure its container runs" in result.output
    (running,) = team_containers(config, "alpha")
    assert running.id == created.id and running.status == "running"
    assert running.name == container_name(inst)

    again = run(docker_env, "teams", "create", "alpha")  # idempotent: nothing new
    assert again.exit_code == 0, again.output
    assert [c.id for c in team_containers(config, "alpha")] == [created.id]

    deleted = run(docker_env, "teams", "delete", "alpha", "-y")
    assert deleted.exit_code == 0, deleted.output
    assert team_containers(config, "alpha") == []
    assert (config.teams_dir / "alpha" / "data.db").exists()  # data kept without --purge

    assert run(docker_env, "teams", "create", "alpha").exit_code == 0
    assert len(team_containers(config, "alpha")) == 1
    purged = run(docker_env, "teams", "delete", "alpha", "-y", "--purge")
    assert purged.exit_code == 0, purged.output
    assert team_containers(config, "alpha") == []
    assert not (config.teams_dir / "alpha").exists()
    runtime.client.close()
    store.close()


def test_slugs_are_checked_before_any_docker_call(config: Config) -> None:
    def tripwire() -> Any:
        raise AssertionError("Docker was called with an invalid slug")

    store = open_store(config.control_db)
    runtime = DockerRuntime(config, store, lambda t: "secret", "gw", client_factory=tripwire)
    bad = Instance("../etc-1", "../etc", "docker", "", None, "", "active", 0.0)
    with pytest.raises(InvalidSlug):
        runtime.ensure(bad)
    with pytest.raises(InvalidSlug):
        runtime.remove_team("Bad_Slug")
    with pytest.raises(InvalidSlug):
        runtime.prepare_volume("../etc")
    store.close()
