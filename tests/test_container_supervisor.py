"""The compose file's gateway command as a real container (``docker run`` of the same command;
the compose file's python:3.11-slim base cannot be pulled here, so the tenant image's Python
runs it): PID 1 is ``gateway supervise``, a HUP restarts the gateway inside the container with
no failed request, the container keeps running, and ``docker stop`` exits it with 0."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.test_binary import binary

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]
__all__ = ["binary"]  # the fixture, used by name
COMPOSE = Path(__file__).resolve().parent.parent / "certs" / "docker-compose.yml"


@pytest.fixture
def engine() -> Iterator[object]:
    import docker

    client = docker.from_env()
    try:
        yield client
    finally:
        for c in client.containers.list(all=True, filters={"label": "gateway.test=supervisor"}):
            c.remove(force=True)
        client.close()


def answer(port: int, path: str = "/-/gateway/livez", host: str = "localhost") -> int:
    """The status a GET of ``path`` at ``host`` gets from 127.0.0.1:``port``; 0 if none."""
    try:
        r = httpx.get(f"http://127.0.0.1:{port}{path}", headers={"host": host}, timeout=5)
        return r.status_code
    except httpx.TransportError:
        return 0


# A container cannot inherit a socket from the test, so the gateway in it binds a probed port
# itself. Another program may take that port first: the gateway then exits saying so, and the
# start is retried on another port, a bounded number of times.
START_ATTEMPTS = 3
PORT_TAKEN = "Address already in use"


def probe_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_gateway(
    engine: object, binary: Path, image: str, tmp_path: Path
) -> tuple[Any, int, Path]:
    """The compose file's command in a container, serving: the container, its port, data dir."""
    command = yaml.safe_load(COMPOSE.read_text())["services"]["gateway"]["command"]
    for attempt in range(START_ATTEMPTS):
        port = probe_port()
        data = tmp_path / f"data-{attempt}"
        data.mkdir()
        container: Any = engine.containers.run(  # type: ignore[attr-defined]
            image,
            command,
            detach=True,
            labels={"gateway.test": "supervisor"},
            network_mode="host",
            user="0:0",
            environment={
                "HOME": "/tmp",
                "GATEWAY_DATA_DIR": "/var/lib/gateway",
                "GATEWAY_PORT": str(port),
                "GATEWAY_ADMIN_PORT": "0",
            },
            volumes={
                str(binary): {"bind": "/opt/gateway/gateway.pyz", "mode": "ro"},
                str(data): {"bind": "/var/lib/gateway", "mode": "rw"},
            },
        )
        deadline = time.monotonic() + 180
        while answer(port) != 200:
            container.reload()
            if container.status != "running" and PORT_TAKEN in _logs(container):
                container.remove(force=True)
                break
            assert container.status == "running", _logs(container)
            assert time.monotonic() < deadline, _logs(container)
            time.sleep(0.5)
        else:
            return container, port, data
    raise AssertionError(f"the gateway lost its port to another program {START_ATTEMPTS} times")


def test_restart_hands_over_inside_the_container(
    engine: object, binary: Path, docker_image: str, tmp_path: Path
) -> None:
    container, port, data = start_gateway(engine, binary, docker_image, tmp_path)
    first = int((data / "gateway.lock").read_text())

    container.kill(signal="SIGHUP")  # what `gateway restart` does to the gateway, from outside
    answers = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        answers.append(answer(port))
        now = (data / "gateway.lock").read_text().strip()
        if now and int(now) != first and f"Finished server process [{first}]" in _logs(container):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(_logs(container))
    for _ in range(20):  # and the successor keeps serving
        answers.append(answer(port))
    assert set(answers) == {200}, sorted(set(answers))
    container.reload()
    assert container.status == "running"  # the old process's exit did not end it

    container.stop(timeout=45)
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0, _logs(container)


def _logs(container: object) -> str:
    return container.logs().decode(errors="replace")  # type: ignore[attr-defined]
