"""Deploys that tell the truth, on the real engine: a foreign or missing image is refused before
anything starts and recorded as failed; a deploy records the image the container really runs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from gateway.admin.listener_app import build_admin_app
from gateway.config import Config
from gateway.runtimes.docker import image
from tests.conftest import Running
from tests.docker_support import add_teams, container_of, docker_config, serve

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]
__all__ = ["docker_config"]  # the fixture, used by name

FOREIGN = "gateway-test-foreign"  # a local image outside the tenant repository (like busybox)


@pytest.fixture
def foreign_image(docker_image: str) -> Iterator[str]:
    import docker

    client = docker.from_env()
    tag = f"{FOREIGN}:{int(time.time() * 1000)}"
    client.images.get(docker_image).tag(tag)
    try:
        yield tag
    finally:
        client.images.remove(tag)
        client.close()


async def deploy(running: Running, body: dict[str, object]) -> dict[str, object]:
    token = running.app.store.ensure_setting("admin_token")
    app = build_admin_app(running.app, token)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        r = await client.post(
            "/api/deploy", json=body, headers={"authorization": f"Bearer {token}"}, timeout=120
        )
    lines = [line for line in r.text.splitlines() if line]
    summary: dict[str, object] = json.loads(lines[-1])
    return summary


def last_deploy(running: Running) -> dict[str, object]:
    return running.app.deployer.history("alpha", 1)[0]


async def test_foreign_and_missing_images_are_refused_at_once_and_recorded_failed(
    docker_config: Config, foreign_image: str
) -> None:
    add_teams(docker_config, "alpha")
    async with serve(docker_config) as running:
        await running.wait_healthy("alpha", 90)
        before = container_of(running.app, "alpha").id
        for tag, words in (
            (foreign_image, "is not a tenant image"),
            (f"{image.IMAGE_REPO}:nope", f"no image {image.IMAGE_REPO}:nope"),
        ):
            started = time.monotonic()
            summary = await deploy(running, {"team": "alpha", "image": tag})
            took = time.monotonic() - started
            (result,) = summary["results"]  # type: ignore[misc]
            assert result["ok"] is False and words in result["reason"], result
            assert took < docker_config.deploy_timeout / 2, took  # refused, not timed out
            record = last_deploy(running)
            assert record["status"] == "failed" and words in str(record["reason"]), record
            assert container_of(running.app, "alpha").id == before  # nothing was started
        assert running.app.deployer.outcomes == {"succeeded": 0, "failed": 2}


async def test_a_deploy_records_the_image_the_container_really_runs(
    docker_config: Config, docker_image: str
) -> None:
    add_teams(docker_config, "alpha")
    async with serve(docker_config) as running:
        await running.wait_healthy("alpha", 90)
        summary = await deploy(running, {"team": "alpha", "image": docker_image})
        (result,) = summary["results"]  # type: ignore[misc]
        assert result["ok"] is True, result
        container = container_of(running.app, "alpha")
        assert container.attrs["Config"]["Image"] == docker_image
        assert result["to_version"] == docker_image
        assert last_deploy(running)["to_version"] == docker_image
