"""Fail fast and say why: no engine is a clear serve error and a 503 /readyz; an instance that
cannot start ends `teams create` at once with the engine's words; read-only commands run from
the wrong directory fail with a message and create nothing; `--no-wait` never says Ready."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import Config
from gateway.runtimes.docker import image
from gateway.store import open_store
from tests.conftest import StartGateway
from tests.edge import run_edge
from tests.servers import ClosedPort

GATEWAY = str(Path(sys.executable).with_name("gateway"))


@pytest.fixture
def no_engine() -> Iterator[str]:
    """DOCKER_HOST on a closed loopback port: no engine answers there, and nobody can start
    listening there during the test. (A unix path would do as well, but the docker SDK leaks
    the socket of a failed unix connect, a ResourceWarning in a later test.)"""
    with ClosedPort() as closed:
        yield f"tcp://127.0.0.1:{closed.port}"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return {**env, **extra}


def cli(*args: str, timeout: float = 90, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GATEWAY, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(**env),
        stdin=subprocess.DEVNULL,
    )


def test_serve_without_an_engine_exits_at_once_saying_what_to_run(
    tmp_path: Path, no_engine: str
) -> None:
    started = time.monotonic()
    out = cli(
        "serve",
        "--runtime",
        "docker",
        "--data-dir",
        str(tmp_path / "data"),
        "--port",
        "0",
        "--admin-port",
        "0",
        timeout=30,
        DOCKER_HOST=no_engine,
    )
    assert out.returncode == 1, out
    assert "no Docker engine is reachable" in out.stderr and "start it" in out.stderr
    assert "Traceback" not in out.stderr
    assert time.monotonic() - started < 20


async def test_readyz_is_not_ready_without_an_engine(
    config: Config, start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch, no_engine: str
) -> None:
    monkeypatch.setenv("DOCKER_HOST", no_engine)
    gw = await start_gateway(config.replace(runtime="docker"))
    async with gw.client() as client:
        for _ in range(100):  # the provider's first attempt fails within a moment
            r = await client.get(gw.url(path="/-/gateway/readyz"))
            if "unreachable" in r.json().get("problem", ""):
                break
            await asyncio.sleep(0.05)
    assert r.status_code == 503
    assert r.json()["ready"] is False and "docker engine" in r.json()["problem"]


def test_read_only_commands_in_the_wrong_directory_fail_and_create_nothing(
    tmp_path: Path,
) -> None:
    for args in (["status"], ["teams", "list"], ["routes"]):
        done = subprocess.run(
            [GATEWAY, *args],
            capture_output=True,
            text=True,
            timeout=90,
            env=clean_env(),
            cwd=tmp_path,
        )
        assert done.returncode == 1, (args, done)
        assert "no gateway data in" in done.stderr and "--data-dir" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert list(tmp_path.iterdir()) == []  # no ./data, no control.db


@pytest.mark.docker
@pytest.mark.timeout(300)
async def test_an_instance_that_cannot_start_ends_teams_create_at_once(
    config: Config, docker_image: str
) -> None:
    cfg = config.replace(runtime="docker")
    missing = f"{image.IMAGE_REPO}:gone-{os.getpid()}"
    async with run_edge(cfg) as edge:
        # A team whose instance record names an image the engine no longer has.
        store = open_store(cfg.control_db)
        store.create_team("beta")
        store.add_instance("beta", "docker", version=missing)
        store.close()
        flags = ["--data-dir", str(cfg.data_dir), "--runtime", "docker"]
        started = time.monotonic()
        out = await asyncio.to_thread(cli, "teams", "create", "beta", *flags)
        took = time.monotonic() - started
        assert out.returncode == 1, out
        assert "No such image" in out.stderr and missing in out.stderr, out.stderr
        assert "Ready" not in out.stdout
        assert took < 30, took  # not the 60 s wait
        status = await asyncio.to_thread(cli, "status", *flags)
        assert "last error: cannot start" in status.stdout and "No such image" in status.stdout
        async with edge.admin() as admin:
            page = await admin.get("/")
        assert "No such image" in page.text  # the dashboard shows it too


async def test_no_wait_never_prints_ready(config: Config) -> None:
    async with run_edge(config):
        flags = ["--data-dir", str(config.data_dir)]
        out = await asyncio.to_thread(cli, "teams", "create", "gamma", "--no-wait", *flags)
        assert out.returncode == 0, out
        assert "Ready" not in out.stdout and "Starting: http://gamma.localhost" in out.stdout
        for _ in range(300):  # until the instance is up: then both must say so
            status = await asyncio.to_thread(cli, "status", *flags)
            if " healthy " in status.stdout:
                break
            await asyncio.sleep(0.2)
        listed = await asyncio.to_thread(cli, "teams", "list", *flags)
        # teams list and status agree: the live state and the URL the gateway really serves.
        (row,) = [line.split() for line in listed.stdout.splitlines() if "gamma" in line]
        (live,) = [line.split() for line in status.stdout.splitlines() if line.startswith("gamma")]
        assert row == live, (listed.stdout, status.stdout)
        assert row[2] == f"http://gamma.localhost:{config_port(status.stdout)}/"


def config_port(status: str) -> str:
    # "gateway: running, ready (http://localhost:PORT/)"
    return status.split("http://localhost:", 1)[1].split("/", 1)[0]
