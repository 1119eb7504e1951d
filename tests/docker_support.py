"""What the docker and swarm runtime tests share: a gateway on the real engine, its teams, and
the containers, services and tasks it made, read back from the engine.

Every container or service a test makes carries its gateway's id (or ``gateway.test``) and is
removed by the fixture that made the config.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from gateway.app import Gateway, create_app
from gateway.config import Config
from gateway.store import open_store
from tests.conftest import Running, free_socket, serve_app
from tests.shutdown import stop_server


def gateway_id_of(cfg: Config) -> str:
    """The id this config's gateway labels its containers and services with."""
    store = open_store(cfg.control_db)
    try:
        return store.ensure_setting("gateway_id")
    finally:
        store.close()


@pytest.fixture
def docker_config(config: Config, docker_image: str) -> Iterator[Config]:
    import docker

    cfg = config.replace(runtime="docker")
    gateway_id = gateway_id_of(cfg)
    yield cfg
    client = docker.from_env()
    for label in (f"gateway.managed-by={gateway_id}", f"gateway.test={gateway_id}"):
        for c in client.containers.list(all=True, filters={"label": label}):
            c.remove(force=True, v=True)
    client.close()


def add_teams(cfg: Config, *slugs: str) -> None:
    """As the CLI does: another connection writes the store; teams are public for reads."""
    store = open_store(cfg.control_db)
    for slug in slugs:
        store.create_team(slug)
        store.query("UPDATE teams SET public = 1 WHERE slug = ?", [slug])
    store.close()


@contextlib.asynccontextmanager
async def serve(cfg: Config) -> AsyncIterator[Running]:
    """A real gateway on a real socket that this test can stop (a gateway restart)."""
    sock = free_socket()
    cfg = cfg.replace(port=sock.getsockname()[1])
    app = create_app(cfg)
    server, task = await serve_app(app, sock)
    try:
        yield Running(app, cfg.port, cfg)
    finally:
        await stop_server(server, task, 60)


def container_of(app: Gateway, team: str) -> Any:
    (inst,) = [i for i in app.store.instances(team) if i.role == "active"]
    return app.runtime.client.containers.get(f"gateway-{inst.id}")  # type: ignore[attr-defined]


async def get(running: Running, team: str, path: str = "/data.json") -> int:
    async with running.client() as client:
        return (await client.get(running.url(team, path))).status_code


async def until(predicate: Any, timeout: float = 60, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


# -- Swarm: services, their tasks and the tasks' containers --------------------------------------
def service_of(running: Running, team: str) -> dict[str, Any]:
    """The Swarm service of the team's active instance."""
    (inst,) = [i for i in running.app.store.instances(team) if i.role == "active"]
    return running.app.runtime.client.api.inspect_service(f"gateway-{inst.id}")  # type: ignore[attr-defined,no-any-return]


def running_task(running: Running, service: dict[str, Any]) -> dict[str, Any]:
    """The service's one running task."""
    client = running.app.runtime.client  # type: ignore[attr-defined]
    tasks = client.api.tasks(filters={"service": service["ID"], "desired-state": "running"})
    (task,) = [t for t in tasks if t["Status"]["State"] == "running"]
    return dict(task)


def task_container(task: dict[str, Any]) -> str:
    """The id of the task's container (on this engine)."""
    return str(task["Status"]["ContainerStatus"]["ContainerID"])


def task_networks(running: Running, task: dict[str, Any]) -> dict[str, Any]:
    """The task container's networks, by name, as the engine inspects them."""
    client = running.app.runtime.client  # type: ignore[attr-defined]
    return dict(client.api.inspect_container(task_container(task))["NetworkSettings"]["Networks"])
