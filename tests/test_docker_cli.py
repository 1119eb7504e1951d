"""``gateway teams create/delete --runtime docker`` without a gateway: idempotent, converging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from gateway.cli import cli
from gateway.config import Config
from gateway.errors import InvalidSlug
from gateway.runtimes.docker import DockerRuntime, container_name
from gateway.store import open_store
from gateway.store.db import Instance
from tests.listen_fds import activated, listening_socket, port_of


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
    shared = _clients.pop(config.data_dir, None)
    if shared is not None:
        shared.close()


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner(env=env).invoke(cli, list(args), catch_exceptions=False)


_clients: dict[Path, Any] = {}


def team_containers(config: Config, team: str) -> list[Any]:
    """This test's containers of ``team``, through one client per test (closed at teardown)."""
    import docker

    store = open_store(config.control_db)
    gid = store.ensure_setting("gateway_id")
    store.close()
    client = _clients.get(config.data_dir) or _clients.setdefault(
        config.data_dir, docker.from_env()
    )
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
    assert archived_dbs(config, "alpha") == 1  # data kept (archived) without --purge

    assert run(docker_env, "teams", "create", "alpha").exit_code == 0
    assert len(team_containers(config, "alpha")) == 1
    purged = run(docker_env, "teams", "delete", "alpha", "-y", "--purge")
    assert purged.exit_code == 0, purged.output
    assert team_containers(config, "alpha") == []
    assert not (config.teams_dir / "alpha").exists()
    assert archived_dbs(config, "alpha") == 1  # only the first deletion's archive
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


def http_status(port: int, host: str, path: str = "/data.json") -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@pytest.mark.docker
@pytest.mark.timeout(300)
def test_serve_and_teams_create_serve_alpha_and_hide_the_host_ports(
    config: Config, docker_env: dict[str, str], tmp_path: Path
) -> None:
    """The issue's 'done when': `gateway serve --runtime docker` + `gateway teams create`."""
    # Both listeners bound here and passed as LISTEN_FDS: no free-port race.
    public, admin_sock = listening_socket(), listening_socket()
    port, admin = port_of(public), port_of(admin_sock)
    env = {**os.environ, **docker_env, "GATEWAY_PORT": str(port), "GATEWAY_ADMIN_PORT": str(admin)}
    gateway_bin = Path(sys.executable).parent / "gateway"
    argv, fds = activated([str(gateway_bin), "serve"], public=public, admin=admin_sock)
    with open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen(argv, env=env, stdout=log, stderr=log, pass_fds=fds)
    public.close()
    admin_sock.close()
    try:
        deadline = time.monotonic() + 60
        while http_status(port, "localhost", "/") == 0:
            assert server.poll() is None and time.monotonic() < deadline, (
                tmp_path / "serve.log"
            ).read_text()
            time.sleep(0.1)
        done = subprocess.run(
            [gateway_bin, "teams", "create", "alpha"], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Ready" in done.stdout
        assert http_status(port, "alpha.localhost") in (302, 401)  # private until made public
        store = open_store(config.control_db)
        store.query("UPDATE teams SET public = 1 WHERE slug = 'alpha'")
        store.close()
        deadline = time.monotonic() + 30
        while http_status(port, "alpha.localhost") != 200:
            assert time.monotonic() < deadline, "alpha never answered 200 through the gateway"
            time.sleep(0.1)

        (container,) = team_containers(config, "alpha")
        (net,) = container.attrs["NetworkSettings"]["Networks"].values()
        hosts = [
            ["own datasette (control)", "127.0.0.1", 8001],
            ["public port via bridge", net["Gateway"], port],
            ["admin port via bridge", net["Gateway"], admin],
            ["public port via loopback", "127.0.0.1", port],
            ["admin port via loopback", "127.0.0.1", admin],
        ]
        code, out = container.exec_run(
            ["/opt/datasette/bin/python", "-c", CONNECT, json.dumps(hosts)]
        )
        assert code == 0, out
        seen = json.loads(out)
        assert seen.pop("own datasette (control)") == "open"
        assert all(v != "open" for v in seen.values()), seen
        started = container.attrs["State"]["StartedAt"]

        # With the gateway running, delete drains through it, then the container goes.
        for argv in (["create", "beta"], ["delete", "beta", "-y"]):
            done = subprocess.run(
                [gateway_bin, "teams", *argv], env=env, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stdout + done.stderr
        assert "Draining beta" in done.stdout
        assert team_containers(config, "beta") == []
        assert archived_dbs(config, "beta") == 1  # kept, where no slug maps (archive.py)
        assert not (config.teams_dir / "beta").exists()
    finally:
        server.terminate()
        server.wait(60)
    container.reload()  # the gateway stopped; the team's container did not
    assert container.status == "running" and container.attrs["State"]["StartedAt"] == started


CONNECT = """
import json, socket, sys
out = {}
for name, host, port in json.loads(sys.argv[1]):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((host, port))
        out[name] = "open"
    except OSError as exc:
        out[name] = type(exc).__name__
    finally:
        s.close()
print(json.dumps(out))
"""


def archived_dbs(config: Config, slug: str) -> int:
    """How many archived volumes of ``slug`` hold a database (gateway/archive.py)."""
    return len(list((config.data_dir / "archive").glob(f"{slug}.*/data.db")))
