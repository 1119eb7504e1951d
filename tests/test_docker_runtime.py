"""The docker runtime on the real engine: hardening, isolation, kill/recover, restart, forgery.

Every container a test makes carries this test's gateway id (or ``gateway.test``) and is
removed in the fixture's finalizer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn

from gateway.app import Gateway, create_app
from gateway.config import Config
from gateway.http.protocol import GatewayHttpProtocol
from gateway.routing.target import State
from gateway.runtimes.docker import image
from gateway.store import open_store
from tests.conftest import Running, free_socket
from tests.shutdown import stop_server

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

PROBE = """
import json, os, socket, sys
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
for name, path in json.loads(sys.argv[2]):
    out[name] = os.path.exists(path)
try:
    open("/etc/probe", "w")
    out["rootfs writable"] = True
except OSError:
    out["rootfs writable"] = False
open("/tmp/probe", "w").write("x")
open("/data/.probe", "w").write("x")
out["data"] = sorted(os.listdir("/data"))
out["uid"] = os.getuid()
print(json.dumps(out))
"""


@pytest.fixture
def docker_config(config: Config, docker_image: str) -> Iterator[Config]:
    import docker

    cfg = config.replace(runtime="docker")
    store = open_store(cfg.control_db)
    gateway_id = store.ensure_setting("gateway_id")
    store.close()
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
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            lifespan="on",
            log_level="warning",
            loop="none",
            http=GatewayHttpProtocol,  # the production protocol (gateway/server.py)
            proxy_headers=False,
        )
    )
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
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


async def test_two_teams_are_hardened_and_isolated(docker_config: Config) -> None:
    cfg = docker_config
    add_teams(cfg, "alpha", "beta")
    (cfg.teams_dir / "beta").mkdir(parents=True)
    (cfg.teams_dir / "beta" / "beta-secret.txt").write_text("only beta")
    async with serve(cfg) as running:
        await running.wait_healthy("alpha", 90)
        await running.wait_healthy("beta", 90)
        assert await get(running, "alpha") == 200
        assert await get(running, "beta") == 200
        gateway_id = running.app.gateway_id
        a, b = container_of(running.app, "alpha"), container_of(running.app, "beta")
        for team, container in (("alpha", a), ("beta", b)):
            assert_hardened(container.attrs, cfg, team, gateway_id)

        net = b.attrs["NetworkSettings"]["Networks"]
        (b_net,) = net.values()
        b_port = int(b.attrs["NetworkSettings"]["Ports"]["8001/tcp"][0]["HostPort"])
        hosts = [
            ["own datasette (control)", "127.0.0.1", 8001],
            ["gateway via bridge", b_net["Gateway"], running.port],
            ["gateway via loopback", "127.0.0.1", running.port],
            ["beta's container", b_net["IPAddress"], 8001],
            ["beta's published port", b_net["Gateway"], b_port],
        ]
        paths = [
            ["beta's file", "/data/beta-secret.txt"],
            ["beta's host dir", str(cfg.teams_dir / "beta")],
            ["docker socket", "/var/run/docker.sock"],
            ["docker socket (run)", "/run/docker.sock"],
        ]
        code, out = a.exec_run(
            ["/opt/datasette/bin/python", "-c", PROBE, json.dumps(hosts), json.dumps(paths)]
        )
        assert code == 0, out
        seen = json.loads(out)
        assert seen["own datasette (control)"] == "open"  # the probe can see an open port
        for name, *_ in hosts[1:]:
            assert seen[name] != "open", (name, seen)
        for name, _ in paths:
            assert seen[name] is False, (name, seen)
        assert seen["rootfs writable"] is False
        assert seen["uid"] == image.UID
        assert "beta-secret.txt" not in seen["data"] and "data.db" in seen["data"]


def assert_hardened(attrs: dict[str, Any], cfg: Config, team: str, gateway_id: str) -> None:
    host, conf = attrs["HostConfig"], attrs["Config"]
    assert conf["User"] not in ("", "0", "root") and not conf["User"].startswith("0:")
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert not host["Privileged"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["ReadonlyRootfs"] is True
    assert "/tmp" in host["Tmpfs"]
    assert host["Memory"] == cfg.instance_memory_mb * 1024 * 1024
    assert host["MemorySwap"] == host["Memory"]
    assert host["PidsLimit"] == 256
    assert host["NanoCpus"] > 0
    assert host["RestartPolicy"]["Name"] == "unless-stopped"
    assert conf["StopTimeout"] > cfg.drain_timeout
    mounts = attrs["Mounts"]
    assert len(mounts) == 1, mounts
    assert mounts[0]["Type"] == "bind" and mounts[0]["Destination"] == "/data"
    assert mounts[0]["Source"] == str(cfg.teams_dir / team)
    # Exactly the one Datasette port, published on loopback only (a loop over an empty
    # mapping would prove nothing).
    assert list(host["PortBindings"]) == ["8001/tcp"], host["PortBindings"]
    assert list(attrs["NetworkSettings"]["Ports"]) == ["8001/tcp"], attrs["NetworkSettings"]
    for bindings in host["PortBindings"].values():
        assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings)
    for bindings in attrs["NetworkSettings"]["Ports"].values():
        assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings)
    labels = conf["Labels"]
    assert labels["gateway.team"] == team
    assert labels["gateway.host"] == f"{team}.{cfg.domain}"
    assert labels["gateway.port"] == "8001"
    assert labels["gateway.version"] == image.image_tag()
    assert labels["gateway.instance"] and labels["gateway.managed-by"] == gateway_id
    assert conf["Healthcheck"]["Test"][0] == "CMD"


async def test_kill_drains_now_and_recovers(docker_config: Config) -> None:
    add_teams(docker_config, "alpha")
    async with serve(docker_config) as running:
        await running.wait_healthy("alpha", 90)
        service = running.app.fleet.service("alpha")
        assert service is not None
        (old,) = service.targets()
        container = container_of(running.app, "alpha")
        started = container.attrs["State"]["StartedAt"]
        container.kill()
        await until(lambda: old.state in (State.DRAINING, State.STOPPED), 30, "drain")
        await until(lambda: old not in service.targets() and service.state() == "up", 90, "new")
        assert await get(running, "alpha") == 200
        container.reload()
        assert container.status == "running" and container.attrs["State"]["StartedAt"] > started


async def test_gateway_restart_rebuilds_routes_without_restarting_containers(
    docker_config: Config,
) -> None:
    add_teams(docker_config, "alpha", "beta")
    async with serve(docker_config) as first:
        for team in ("alpha", "beta"):
            await first.wait_healthy(team, 90)
        before = {t: container_of(first.app, t).attrs for t in ("alpha", "beta")}
    # The gateway is gone; its containers are not.
    async with serve(docker_config) as second:
        for team in ("alpha", "beta"):
            await second.wait_healthy(team, 60)
            assert await get(second, team) == 200
            now = container_of(second.app, team).attrs
            assert now["Id"] == before[team]["Id"]
            assert now["State"]["StartedAt"] == before[team]["State"]["StartedAt"]
            assert now["RestartCount"] == before[team]["RestartCount"]


async def test_forged_and_bad_labels_are_ignored(
    docker_config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    add_teams(docker_config, "alpha")
    caplog.set_level(logging.WARNING, logger="gateway.docker.provider")
    async with serve(docker_config) as running:
        await running.wait_healthy("alpha", 90)
        app = running.app
        real = container_of(app, "alpha")
        gid = app.gateway_id
        client = app.runtime.client  # type: ignore[attr-defined]
        provider = app.runtime.provider  # type: ignore[attr-defined]
        labels = dict(real.labels)
        forged = {**labels, "gateway.managed-by": "someone-else", "gateway.test": gid}
        copied = {**labels, "gateway.test": gid}  # even our own id, under another name
        bad = {**labels, "gateway.port": "nope", "gateway.test": gid}
        seen = provider.snapshots
        for name, lab in (("forged", forged), ("copied", copied), ("bad", bad)):
            client.containers.run(
                image.image_tag(),
                ["sleep", "300"],
                name=f"h3-{name}-{gid[:8].lower().replace('_', 'x')}",
                labels=lab,
                detach=True,
                ports={"8001/tcp": ("127.0.0.1", None)},
            )
        await until(lambda: provider.snapshots > seen, 30, "a fresh snapshot")
        await until(lambda: caplog.text.count("ignoring container") >= 3, 30, "warnings")
        assert "forged labels" in caplog.text and "bad labels" in caplog.text
        service = app.fleet.service("alpha")
        assert service is not None
        (target,) = service.targets()
        assert target.pool.port == int(real.ports["8001/tcp"][0]["HostPort"])
        assert target.state is State.HEALTHY
        assert await get(running, "alpha") == 200


async def test_provider_reconnects_when_the_event_stream_drops(docker_config: Config) -> None:
    add_teams(docker_config, "alpha")
    async with serve(docker_config) as running:
        await running.wait_healthy("alpha", 90)
        provider = running.app.runtime.provider  # type: ignore[attr-defined]
        reconnects = provider.reconnects
        provider._close_stream()  # the engine's connection drops, as on a daemon restart
        await until(lambda: provider.reconnects > reconnects, 30, "a reconnect")
        seen = provider.snapshots
        await until(lambda: provider.snapshots > seen, 30, "a snapshot after reconnecting")
        # Events flow again: a kill is still noticed and recovered from.
        service = running.app.fleet.service("alpha")
        assert service is not None
        (old,) = service.targets()
        container_of(running.app, "alpha").kill()
        await until(lambda: old.state is State.STOPPED, 30, "drain after reconnect")
        await until(lambda: service.state() == "up" and old not in service.targets(), 90, "up")
        assert await get(running, "alpha") == 200


async def test_a_paused_container_is_drained_and_resumed(docker_config: Config) -> None:
    add_teams(docker_config, "alpha")
    async with serve(docker_config) as running:
        await running.wait_healthy("alpha", 90)
        service = running.app.fleet.service("alpha")
        assert service is not None
        (old,) = service.targets()
        container = container_of(running.app, "alpha")
        container.pause()  # it hangs: requests would wait on it forever
        await until(lambda: old.state is State.STOPPED, 30, "drain of the paused target")
        await until(lambda: service.state() == "up" and old not in service.targets(), 90, "up")
        assert await get(running, "alpha") == 200
        container.reload()
        assert container.status == "running"


async def test_a_removed_container_is_recreated(docker_config: Config) -> None:
    add_teams(docker_config, "alpha")
    async with serve(docker_config) as running:
        await running.wait_healthy("alpha", 90)
        service = running.app.fleet.service("alpha")
        assert service is not None
        (old,) = service.targets()
        gone = container_of(running.app, "alpha")
        gone.remove(force=True)  # `docker rm -f` behind the gateway's back
        await until(lambda: old.state is State.STOPPED, 30, "drain")
        await until(lambda: service.state() == "up" and old not in service.targets(), 90, "up")
        assert await get(running, "alpha") == 200
        fresh = container_of(running.app, "alpha")
        assert fresh.id != gone.id and fresh.name == gone.name
        assert_hardened(fresh.attrs, docker_config, "alpha", running.app.gateway_id)


async def test_a_gateway_killed_mid_provision_converges_on_restart(docker_config: Config) -> None:
    # What a gateway killed mid-provision leaves: the rows, and a created, never started
    # container (the volume not yet chowned).
    from gateway.runtimes.docker import DockerRuntime

    add_teams(docker_config, "alpha")
    store = open_store(docker_config.control_db)
    inst = store.add_instance("alpha", "docker", version=image.image_tag())
    runtime = DockerRuntime(
        docker_config,
        store,
        lambda t: store.ensure_setting(f"instance_secret:{t}"),
        store.ensure_setting("gateway_id"),
    )
    runtime.client.api.create_container(**runtime.spec(inst))
    runtime.client.close()
    store.close()
    async with serve(docker_config) as running:
        await running.wait_healthy("alpha", 90)
        assert await get(running, "alpha") == 200
        container = container_of(running.app, "alpha")
        assert container.name == f"gateway-{inst.id}" and container.status == "running"
        assert len(running.app.store.instances("alpha")) == 1


async def test_a_member_is_the_actor_inside_the_container(docker_config: Config) -> None:
    """The gateway signs the actor with the team's secret; the container was given it."""
    from gateway.auth import accounts
    from gateway.auth.tokens import Tokens

    store = open_store(docker_config.control_db)
    user = accounts.create_user(store, "ada@example.org", "not-a-real-hash", team="alpha")
    token = Tokens(store).create("alpha", user.id, "test")
    store.close()
    async with serve(docker_config) as running:
        await running.wait_healthy("alpha", 90)
        async with running.client() as client:
            anonymous = await client.get(running.url("alpha", "/-/actor.json"))
            assert anonymous.status_code in (302, 401)  # private team
            r = await client.get(
                running.url("alpha", "/-/actor.json"),
                headers={"Authorization": f"Bearer {token}"},
            )
        assert r.status_code == 200, r.text
        assert r.json()["actor"]["email"] == "ada@example.org"


async def test_the_container_carries_the_menu_plugin(docker_config: Config) -> None:
    """gateway_menu.py is baked into the image too: Datasette's menu leads to the gateway."""
    from gateway.auth import accounts

    store = open_store(docker_config.control_db)
    user = accounts.create_user(store, "ada@example.org", "not-a-real-hash", team="alpha")
    store.close()
    async with serve(docker_config) as running:
        await running.wait_healthy("alpha", 90)
        cookie, _ = running.app.auth.sessions.create(user.id)
        headers = {"cookie": f"{running.app.auth.cookie_name}={cookie}"}
        async with running.client(headers=headers) as client:
            r = await client.get(running.url("alpha", "/"))
        assert r.status_code == 200, r.text
        assert '<html lang="en">' in r.text
        upload = running.config.team_url("alpha") + "/-/upload-csv"
        assert f'<a href="{upload}">Upload CSV</a>' in r.text


def test_two_tenant_networks_of_one_name_settle_on_one(docker_config: Config) -> None:
    """Docker allows two networks of one name: two gateways creating it at once on a fresh
    engine made two, and every later container create failed with "network gateway-tenants is
    ambiguous". That state, made for real under this test's own name: every runtime settles on
    the same one, by id, and the other is removed."""
    import secrets

    import docker

    from gateway.runtimes.docker import DockerRuntime

    client = docker.from_env()
    name = f"gateway-tenants-test-{secrets.token_hex(4)}"

    def named() -> list[str]:
        return [n.id for n in client.networks.list(names=[name]) if n.name == name]

    store = open_store(docker_config.control_db)
    runtimes = [DockerRuntime(docker_config, store, lambda team: "s", "t") for _ in range(2)]
    try:
        for _ in range(2):
            client.networks.create(name, driver="bridge", labels={"gateway.test": "network"})
        assert len(named()) == 2
        for runtime in runtimes:
            runtime.network = name
        chosen = {runtime.ensure_network() for runtime in runtimes}
        assert len(chosen) == 1
        assert named() == list(chosen)
    finally:
        for runtime in runtimes:
            if runtime._client is not None:
                runtime._client.close()
        for net in client.networks.list(names=[name]):
            if net.name == name:
                net.remove()
        client.close()
        store.close()
