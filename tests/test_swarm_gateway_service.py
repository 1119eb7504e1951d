"""The gateway itself as a Swarm service (docs/production.md, "The gateway itself as a Swarm
service"): the documented ``docker service create`` command, run for real on a one-node swarm.

The project builds no gateway image, so the tenant image's Python runs the single-file build
(as tests/test_container_supervisor.py does for the compose file). The test checks what the
command's parts are for: the service, a manager with the Docker socket, creates and routes a
team's service; the data directory is mounted at the same path on both sides, because a tenant
service bind-mounts ``<data_dir>/teams/<team>`` by its path on the node; the host network lets
it reach the tasks on the node-local tenant bridge. Then a ``docker service update --force``
(what an image update does, stop-first) brings up a new gateway task that adopts the team's
running task without restarting it; the gap it leaves is printed, not asserted (documented).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Config
from gateway.runtimes.swarm.provider import TASK_OF
from tests.docker_support import add_teams, gateway_id_of
from tests.test_binary import binary
from tests.test_container_supervisor import answer, probe_port
from tests.test_swarm_runtime import swarm, swarm_config

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]
__all__ = ["binary", "swarm", "swarm_config"]  # fixtures, used by name

START_TIMEOUT = 180.0  # the gateway task starting, then the team's task (image present)


def service_create(name: str, gid: str, image: str, pyz: Path, data: Path, port: int) -> list[str]:
    """docs/production.md's command, with this test's paths, port and a cleanup label."""
    return [
        "docker", "service", "create", "--detach", "--name", name, "--replicas", "1",
        "--update-order", "stop-first", "--stop-grace-period", "45s",
        "--constraint", "node.role==manager",
        "--network", "host",
        "--user", "0:0",
        "--label", f"gateway.test={gid}",
        "--mount", f"type=bind,source={pyz},target=/opt/gateway/gateway.pyz,readonly",
        "--mount", f"type=bind,source={data},target={data}",
        "--mount", "type=bind,source=/var/run/docker.sock,target=/var/run/docker.sock",
        "--env", "GATEWAY_RUNTIME=swarm", "--env", f"GATEWAY_DATA_DIR={data}",
        "--env", "GATEWAY_DOMAIN=localhost",
        "--env", "GATEWAY_HOST=127.0.0.1", "--env", f"GATEWAY_PORT={port}",
        "--env", "GATEWAY_ADMIN_PORT=0", "--env", "HOME=/tmp",
        image,
        "python3", "/opt/gateway/gateway.pyz", "supervise", "--",
        "python3", "/opt/gateway/gateway.pyz", "serve",
    ]  # fmt: skip


def status(port: int) -> int:
    return answer(port, "/data.json", "alpha.localhost")


def docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def tasks(service: str) -> list[dict[str, Any]]:
    out = docker("service", "ps", "--no-trunc", "--format", "{{json .}}", service)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def logs(service: str) -> str:
    done = subprocess.run(
        ["docker", "service", "logs", "--raw", service], capture_output=True, text=True
    )
    return (done.stdout + done.stderr)[-4000:]


def tenant_containers(gid: str) -> set[str]:
    out = docker("ps", "-q", "--no-trunc", "--filter", f"label={TASK_OF}={gid}")
    return set(out.split())


def wait_for(predicate: Any, what: str, service: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{logs(service)}"
        time.sleep(0.2)


def test_the_gateway_as_a_swarm_service_routes_a_team_and_survives_its_own_update(
    swarm_config: Config, binary: Path, docker_image: str
) -> None:
    cfg = swarm_config
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    gid = gateway_id_of(cfg)  # the store the service will open: same path inside and out
    add_teams(cfg, "alpha")
    port = probe_port()
    name = f"gateway-test-{gid[:12]}"
    docker(*service_create(name, gid, docker_image, binary, cfg.data_dir, port)[1:])
    try:
        wait_for(lambda: status(port) == 200, "the team through the gateway service", name)
        (tenant,) = tenant_containers(gid)
        # The team's directory is where the host (and so the tenant's bind mount) has it.
        assert (cfg.teams_dir / "alpha" / "data.db").exists()
        started_at = docker("inspect", "-f", "{{.State.StartedAt}}", tenant)
        (first,) = [t["ID"] for t in tasks(name) if t["CurrentState"].startswith("Running")]

        # What an image or configuration update does: Swarm stops the task, then starts another.
        started = time.monotonic()
        docker("service", "update", "--detach", "--force", name)
        answers: list[tuple[float, int]] = []
        deadline = started + START_TIMEOUT

        def back() -> bool:
            running = [t["ID"] for t in tasks(name) if t["CurrentState"].startswith("Running")]
            return bool(running) and running != [first]

        while time.monotonic() < deadline and not (back() and status(port) == 200):
            answers.append((time.monotonic() - started, status(port)))
            time.sleep(0.05)
        assert back() and status(port) == 200, logs(name)
        failed = [at for at, code in answers if code != 200]
        gap = (failed[-1] - failed[0]) if failed else 0.0
        print(
            f"\ngateway service update: {len(failed)} of {len(answers)} probes failed, "
            f"gap {gap:.1f}s"
        )
        # The new gateway adopted the team's running task: the same container, never restarted.
        assert tenant_containers(gid) == {tenant}
        assert docker("inspect", "-f", "{{.State.StartedAt}}", tenant) == started_at
        for _ in range(20):
            assert status(port) == 200
    finally:
        subprocess.run(["docker", "service", "rm", name], capture_output=True, timeout=60)
        gone = time.monotonic() + 60
        while docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={name}"):
            assert time.monotonic() < gone, "the gateway service's task outlived it"
            time.sleep(0.2)
