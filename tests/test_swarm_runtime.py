"""The swarm runtime on the real engine, joined to a one-node swarm for this module only.

The one module that runs ``docker swarm init --advertise-addr 127.0.0.1``: if the engine was
not in a swarm it leaves it afterwards (``docker swarm leave --force``) and removes the
``docker_gwbridge`` network the init made and the tenant bridge's config-only network, so the
plain docker-runtime tests on the same engine see what they saw before. Every service a test
makes carries its gateway's id and is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.admin.listener_app import build_admin_app
from gateway.config import Config
from gateway.routing.target import State
from gateway.runtimes.docker import image
from gateway.runtimes.swarm.provider import SWARM_NETWORK, SWARM_NETWORK_CONFIG, TASK_OF
from tests.conftest import Running
from tests.docker_support import (
    add_teams,
    gateway_id_of,
    get,
    running_task,
    serve,
    service_of,
    task_container,
    task_networks,
    until,
)
from tests.edge import run_edge
from tests.test_docker_deploy_truth import deploy
from tests.upload_support import Member, sign_in

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

GATEWAY = str(Path(sys.executable).with_name("gateway"))


@pytest.fixture(scope="module")
def swarm() -> Iterator[None]:
    import docker

    client = docker.from_env()
    try:
        info = client.info()["Swarm"]
        networks = {n.name for n in client.networks.list()}
        made = info["LocalNodeState"] == "inactive"
        if made:
            subprocess.run(
                ["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"],
                check=True,
                capture_output=True,
            )
        elif not info.get("ControlAvailable"):
            pytest.fail("the engine is in a swarm but not a manager: services cannot be made")
        yield
        if made:
            subprocess.run(["docker", "swarm", "leave", "--force"], check=True, capture_output=True)
            for net in client.networks.list(names=["docker_gwbridge", SWARM_NETWORK_CONFIG]):
                if net.name not in networks:
                    net.remove()
            assert {n.name for n in client.networks.list()} <= networks, "a swarm network leaked"
    finally:
        client.close()


@pytest.fixture
def swarm_config(swarm: None, config: Config, docker_image: str) -> Iterator[Config]:
    import docker

    cfg = config.replace(runtime="swarm")
    gateway_id = gateway_id_of(cfg)
    yield cfg
    client = docker.from_env()
    for label in (f"gateway.managed-by={gateway_id}", f"gateway.test={gateway_id}"):
        for service in client.api.services(filters={"label": label}):
            client.api.remove_service(service["ID"])
    # Bounded: the removed services' task containers stop (stop grace) and go.
    deadline = time.monotonic() + 60
    # (The low-level list: the high-level one inspects each container, and one that goes
    # between the list and the inspect raised NotFound.)
    while client.api.containers(all=True, filters={"label": f"{TASK_OF}={gateway_id}"}):
        assert time.monotonic() < deadline, "task containers outlived their services"
        time.sleep(0.2)
    client.close()


def wide_listeners() -> set[str]:
    """The host's TCP listeners on any address but loopback (``ss -ltn``)."""
    out = subprocess.run(["ss", "-ltnH"], check=True, capture_output=True, text=True).stdout
    local = [line.split()[3] for line in out.splitlines() if line.strip()]
    loopback = ("127.", "[::1]:", "[::ffff:127.")
    return {addr for addr in local if not addr.startswith(loopback)}


async def test_provision_is_routable_hardened_pinned_and_trusts_only_its_own(
    swarm_config: Config,
) -> None:
    import docker

    cfg = swarm_config
    # Before any tenant exists (the swarm's own ports, 2377 and 7946, are already there).
    listening_before = wide_listeners()
    async with serve(cfg) as running:
        started = time.monotonic()
        add_teams(cfg, "alpha")
        await running.wait_healthy("alpha", 90)
        took = time.monotonic() - started
        assert await get(running, "alpha") == 200
        print(f"\nswarm provision -> routable: {took:.2f}s")  # reported, not asserted

        app, gid = running.app, running.app.gateway_id
        client = app.runtime.client  # type: ignore[attr-defined]
        service = service_of(running, "alpha")
        spec = service["Spec"]
        container = spec["TaskTemplate"]["ContainerSpec"]
        assert spec["Labels"]["gateway.managed-by"] == gid
        assert spec["Labels"]["gateway.team"] == "alpha"
        assert spec["Labels"]["gateway.version"] == image.image_tag()
        assert spec["Mode"] == {"Replicated": {"Replicas": 1}}
        assert container["ReadOnly"] is True and container["CapabilityDrop"] == ["ALL"]
        # An engine health check would hold the task unpublished until its first probe (30 s).
        assert container["Healthcheck"] == {"Test": ["NONE"]}
        assert container["User"] not in ("", "0", "root") and not container["User"].startswith("0:")
        limits = spec["TaskTemplate"]["Resources"]["Limits"]
        assert limits["MemoryBytes"] == cfg.instance_memory_mb * 1024 * 1024
        assert limits["Pids"] == 256 and limits["NanoCPUs"] > 0
        (node,) = client.api.nodes()  # the one test node; the team is pinned to it, recorded
        assert spec["TaskTemplate"]["Placement"]["Constraints"] == [f"node.id=={node['ID']}"]
        assert app.store.setting("swarm_node:alpha") == node["ID"]

        # Nothing is published (Swarm would listen on every interface): no port in the spec,
        # none on the task, no new listener on the host beyond loopback. The gateway reaches
        # the task container on the tenant bridge, where it answers only signed requests.
        task = running_task(running, service)
        assert not (spec.get("EndpointSpec") or {}).get("Ports")
        assert not (task["Status"].get("PortStatus") or {}).get("Ports")
        assert wide_listeners() <= listening_before, wide_listeners() - listening_before
        networks = task_networks(running, task)
        assert list(networks) == [SWARM_NETWORK]
        # Tenants cannot reach each other there (the bridge's options, from its configuration).
        assert client.api.inspect_network(SWARM_NETWORK)["ConfigFrom"] == {
            "Network": SWARM_NETWORK_CONFIG
        }
        config_net = client.api.inspect_network(SWARM_NETWORK_CONFIG)
        assert config_net["Options"]["com.docker.network.bridge.enable_icc"] == "false"
        ip = networks[SWARM_NETWORK]["IPAddress"]
        (target,) = app.fleet.service("alpha").targets()  # type: ignore[union-attr]
        assert (target.pool.host, target.pool.port) == (ip, image.PORT)
        async with httpx.AsyncClient() as direct:
            assert (await direct.get(f"http://{ip}:{image.PORT}/data.json")).status_code == 403

        # Services with copied labels under another gateway's id, or ours with a bad label,
        # are never routed (the docker runtime's trust rules, applied to services).
        provider = app.runtime.provider  # type: ignore[attr-defined]
        forged_labels = {**spec["Labels"], "gateway.managed-by": "someone-else"}
        bad_labels = {**spec["Labels"], "gateway.port": "nope"}
        for name, labels in (("forged", forged_labels), ("bad", bad_labels)):
            client.api.create_service(
                {"ContainerSpec": {"Image": image.image_tag(), "Command": ["sleep", "300"]}},
                name=f"h18-{name}-{gid[:8].lower().replace('_', 'x')}",
                labels={**labels, "gateway.test": gid},
            )
        seen = provider.snapshots
        await until(lambda: provider.snapshots > seen + 1, 30, "fresh snapshots")
        snap = await provider.snapshot(client)
        reasons = {r.name.split("-")[1]: r for r in snap.rejected if r.name.startswith("h18-")}
        assert reasons["forged"].forged and "not us" in reasons["forged"].reason
        assert "gateway.port" in reasons["bad"].reason
        assert [r.instance for r in snap.routes] == [target.id]
        assert target.state is State.HEALTHY and await get(running, "alpha") == 200

        # Tenants cannot reach one another on the bridge (icc off): from beta's task, alpha's
        # address does not answer (bounded by a 3 s connect timeout; a DROP, not a refusal).
        add_teams(cfg, "beta")
        await running.wait_healthy("beta", 90)
        beta = running_task(running, service_of(running, "beta"))
        probe = f"import socket; socket.create_connection(('{ip}', {image.PORT}), timeout=3)"
        engine = docker.from_env()
        try:
            beta_container = engine.containers.get(task_container(beta))
            code, out = beta_container.exec_run([image.HEALTH_CMD[0], "-c", probe])
        finally:
            engine.close()
        assert code != 0 and b"timed out" in out, (code, out)


async def test_a_killed_task_is_restarted_by_swarm_and_re_added(swarm_config: Config) -> None:
    import docker

    add_teams(swarm_config, "alpha")
    async with serve(swarm_config) as running:
        await running.wait_healthy("alpha", 90)
        service = running.app.fleet.service("alpha")
        assert service is not None
        (old,) = service.targets()
        swarm_service = service_of(running, "alpha")
        task = running_task(running, swarm_service)
        engine = docker.from_env()
        try:
            engine.containers.get(task_container(task)).kill()
        finally:
            engine.close()
        await until(lambda: old.state in (State.DRAINING, State.STOPPED), 30, "drain")
        await until(lambda: old not in service.targets() and service.state() == "up", 90, "new")
        assert await get(running, "alpha") == 200
        # Swarm restarted it: the same service, a new task, which the gateway now routes to.
        assert service_of(running, "alpha")["ID"] == swarm_service["ID"]
        new = running_task(running, swarm_service)
        assert new["ID"] != task["ID"]
        (target,) = service.targets()
        ip = task_networks(running, new)[SWARM_NETWORK]["IPAddress"]
        assert (target.pool.host, target.pool.port) == (ip, image.PORT)


async def test_deploy_all_under_load_fails_no_request_then_rollback(swarm_config: Config) -> None:
    add_teams(swarm_config, "alpha")
    async with serve(swarm_config) as running:
        await running.wait_healthy("alpha", 90)
        before = service_of(running, "alpha")
        done = asyncio.Event()
        codes: list[int] = []

        async def load() -> None:
            async with running.client() as client:
                # Bounded in count; the deploy ends it sooner.
                for _ in range(5000):
                    if done.is_set():
                        return
                    try:
                        r = await client.get(running.url("alpha", "/data.json"))
                        codes.append(r.status_code)
                    except httpx.HTTPError:
                        codes.append(0)

        workers = [asyncio.create_task(load()) for _ in range(4)]
        t0 = time.monotonic()
        summary = await deploy(running, {"all": True})  # `gateway deploy --all`
        took = time.monotonic() - t0
        done.set()
        await asyncio.gather(*workers)
        print(f"\nswarm deploy: {took:.2f}s, {len(codes)} requests during it")
        assert summary["ok"] is True, summary
        assert codes and all(c == 200 for c in codes), {c: codes.count(c) for c in set(codes)}
        after = service_of(running, "alpha")
        assert after["ID"] != before["ID"]  # a new service, not Swarm's rolling update
        client = running.app.runtime.client  # type: ignore[attr-defined]
        gone = [s for s in client.api.services() if s["ID"] == before["ID"]]
        assert not gone, "the old service outlived its drain"
        rollback = await running.app.deployer.rollback("alpha")
        assert rollback.ok, rollback.as_dict()
        assert service_of(running, "alpha")["ID"] not in (before["ID"], after["ID"])
        assert await get(running, "alpha") == 200


async def test_gateway_restart_rebuilds_routes_without_restarting_tasks(
    swarm_config: Config,
) -> None:
    import docker

    add_teams(swarm_config, "alpha")
    async with serve(swarm_config) as first:
        await first.wait_healthy("alpha", 90)
        service = service_of(first, "alpha")
        task = running_task(first, service)
    # As a gateway that died mid-move leaves it: the task's container frozen, which Swarm still
    # calls running. The next gateway thaws it rather than routing to a hang.
    engine = docker.from_env()
    try:
        engine.api.pause(task_container(task))
    finally:
        engine.close()
    async with serve(swarm_config) as second:
        await second.wait_healthy("alpha", 60)
        assert await get(second, "alpha") == 200
        assert service_of(second, "alpha")["ID"] == service["ID"]
        now = running_task(second, service)
        assert now["ID"] == task["ID"]
        assert now["Status"]["ContainerStatus"] == task["Status"]["ContainerStatus"]


async def test_a_drained_node_answers_503_with_retry_after_then_recovers(
    swarm_config: Config,
) -> None:
    add_teams(swarm_config, "alpha")
    async with serve(swarm_config) as running:
        await running.wait_healthy("alpha", 90)
        service = running.app.fleet.service("alpha")
        assert service is not None
        (old,) = service.targets()
        client = running.app.runtime.client  # type: ignore[attr-defined]
        (node,) = client.api.nodes()
        spec = {**node["Spec"], "Availability": "drain"}
        client.api.update_node(node["ID"], node["Version"]["Index"], spec)
        try:
            await until(lambda: old.state in (State.DRAINING, State.STOPPED), 30, "drain")
            async with running.client() as http:
                r = await http.get(running.url("alpha", "/data.json"), timeout=30)
            assert r.status_code == 503 and r.headers.get("retry-after"), r
        finally:
            node = client.api.inspect_node(node["ID"])
            spec = {**node["Spec"], "Availability": "active"}
            client.api.update_node(node["ID"], node["Version"]["Index"], spec)
        await until(lambda: service.state() == "up", 120, "the team back on the active node")
        assert await get(running, "alpha") == 200


@contextlib.contextmanager
def node_labels(running: Running, labels: dict[str, str]) -> Iterator[str]:
    """Add ``labels`` to the one node for the test (two placement labels on one node: the
    code path of two nodes); removed afterwards. Yields the node id."""
    client = running.app.runtime.client  # type: ignore[attr-defined]
    (node,) = client.api.nodes()

    def update(change: Any) -> None:
        node = client.api.inspect_node(client.api.nodes()[0]["ID"])
        spec = {**node["Spec"], "Labels": change(dict(node["Spec"].get("Labels") or {}))}
        client.api.update_node(node["ID"], node["Version"]["Index"], spec)

    update(lambda now: now | labels)
    try:
        yield str(node["ID"])
    finally:
        update(lambda now: {k: v for k, v in now.items() if k not in labels})


async def move(running: Running, slug: str, node: str) -> list[dict[str, Any]]:
    """``gateway teams move`` through the admin API (its NDJSON steps, then the outcome)."""
    token = running.app.store.ensure_setting("admin_token")
    transport = httpx.ASGITransport(app=build_admin_app(running.app, token))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        r = await client.post(
            f"/api/teams/{slug}/move",
            json={"node": node},
            headers={"authorization": f"Bearer {token}"},
            timeout=180,
        )
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines() if line]


class Load:
    """Bounded reads through the gateway (4 clients, at most 5000 requests each)."""

    def __init__(self, running: Running) -> None:
        self.running, self.codes, self.done = running, [], asyncio.Event()
        self.codes: list[int]
        self.workers = [asyncio.create_task(self.one()) for _ in range(4)]

    async def one(self) -> None:
        async with self.running.client() as client:
            for _ in range(5000):
                if self.done.is_set():
                    return
                try:
                    r = await client.get(self.running.url("alpha", "/data.json"), timeout=60)
                    self.codes.append(r.status_code)
                except httpx.HTTPError:
                    self.codes.append(0)

    async def stop(self) -> dict[int, int]:
        self.done.set()
        await asyncio.gather(*self.workers)
        return {c: self.codes.count(c) for c in set(self.codes)}


async def held_upload(running: Running, member: Member, name: str) -> dict[str, Any]:
    """Once the move holds the team: an upload (a write the gateway makes itself, into the
    team's file). Returns its job."""
    service = running.app.fleet.service("alpha")
    assert service is not None
    await until(
        lambda: (
            running.app.fleet.operations.get("alpha") == "move" and service.paused_until is not None
        ),
        60,
        "the move to hold the team",
    )
    r = await member.post(b"id,name\n1,held\n2,held\n", f"{name}.csv", auto="1")
    assert r.status_code == 202, r.text
    return dict(r.json()["jobs"][0])


async def states_while_held(running: Running, job_id: str, task: asyncio.Task[Any]) -> set[str]:
    """The job's states seen while the move (``task``) holds the team: it releases the import
    lock and resumes in one step of the event loop, so these are all from before."""
    service = running.app.fleet.service("alpha")
    assert service is not None
    seen = set()
    while not task.done() and service.paused_until is not None:
        row = running.app.store.query("SELECT state FROM import_jobs WHERE id = ?", [job_id])
        seen.add(str(row[0]["state"]))
        await asyncio.sleep(0.05)
    return seen


async def test_teams_move_between_two_placement_labels_under_load(swarm_config: Config) -> None:
    cfg = swarm_config
    add_teams(cfg, "alpha")
    async with serve(cfg) as running:
        member = await sign_in(running, "alpha")
        kept = await member.upload(b"id,name\n1,before\n2,before\n", "kept.csv")
        assert kept["state"] == "done", kept
        gid = running.app.gateway_id
        a, b = "gateway.test-move-a", "gateway.test-move-b"
        client = running.app.runtime.client  # type: ignore[attr-defined]
        with node_labels(running, {a: gid, b: gid}) as node_id:
            load = Load(running)
            for key in (a, b):
                before = service_of(running, "alpha")
                moving = asyncio.create_task(move(running, "alpha", f"{key}={gid}"))
                job = await held_upload(running, member, key.rsplit("-", 1)[1])
                seen = await states_while_held(running, job["id"], moving)
                events = await moving
                done = events[-1]
                assert done["event"] == "done" and done["ok"] is True, events
                assert done["node"] == node_id and done["placement"] == f"node.labels.{key}=={gid}"
                steps = [e["message"] for e in events[:-1]]
                assert any("copied" in m for m in steps) and any("cutting over" in m for m in steps)
                # The write was held while the move held the team (its import waits for the
                # lock the move holds until the cut-over), then lands, in the new volume.
                assert seen and "done" not in seen, seen
                assert (await member.wait(job, ("done", "failed")))["state"] == "done"
                after = service_of(running, "alpha")
                assert after["ID"] != before["ID"]
                constraints = after["Spec"]["TaskTemplate"]["Placement"]["Constraints"]
                assert constraints == [f"node.labels.{key}=={gid}"]
                assert app_setting(running, "swarm_node:alpha") == constraints[0]
                assert not [s for s in client.api.services() if s["ID"] == before["ID"]]
            codes = await load.stop()
        assert codes.get(200) and set(codes) == {200}, codes
        print(f"\nswarm moves under load: {codes}")
        # Data intact: what was there before, and both writes held during the moves.
        names = {
            table: [r["name"] for r in await member.rows(member.url(f"/data/{table}"))]
            for table in ("kept", "a", "b")
        }
        assert names == {"kept": ["before"] * 2, "a": ["held"] * 2, "b": ["held"] * 2}, names
        conn = sqlite3.connect(cfg.teams_dir / "alpha" / "data.db")
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            conn.close()
        # The old volumes are gone once each move succeeded; nothing half-made is left.
        assert not (cfg.data_dir / "moved" / "alpha").exists()
        assert not (cfg.data_dir / "moving" / "alpha").exists()


def app_setting(running: Running, key: str) -> str | None:
    return running.app.store.setting(key)


async def test_a_failed_move_is_undone_and_the_held_write_lands_where_it_was(
    swarm_config: Config,
) -> None:
    # A new instance can never be healthy within a microsecond: the move fails after the copy
    # and the swap, the most there is to undo.
    cfg = swarm_config.replace(deploy_timeout=1e-6)
    add_teams(cfg, "alpha")
    async with serve(cfg) as running:
        member = await sign_in(running, "alpha")
        gid = running.app.gateway_id
        before = service_of(running, "alpha")
        pinned = app_setting(running, "swarm_node:alpha")
        with node_labels(running, {"gateway.test-move-a": gid}):
            load = Load(running)
            moving = asyncio.create_task(move(running, "alpha", f"gateway.test-move-a={gid}"))
            job = await held_upload(running, member, "a")
            events = await moving
            codes = await load.stop()
        done = events[-1]
        assert done["ok"] is False and "nothing changed" in done["reason"], events
        assert "healthy" in done["reason"], done
        assert codes.get(200) and set(codes) == {200}, codes
        # Back as it was: the same service (never stopped), placement and volume; no new
        # service left; the held write lands on the old volume once resumed.
        assert service_of(running, "alpha")["ID"] == before["ID"]
        assert app_setting(running, "swarm_node:alpha") == pinned
        client = running.app.runtime.client  # type: ignore[attr-defined]
        ours = client.api.services(filters={"label": f"gateway.managed-by={gid}"})
        assert [s["ID"] for s in ours] == [before["ID"]]
        assert running.app.fleet.service("alpha").paused_until is None  # type: ignore[union-attr]
        assert (await member.wait(job, ("done", "failed")))["state"] == "done"
        rows = await member.rows(member.url("/data/a"))
        assert [r["name"] for r in rows] == ["held", "held"]
        assert not (cfg.data_dir / "moved" / "alpha").exists()
        assert not (cfg.data_dir / "moving" / "alpha").exists()


async def test_a_move_to_an_unknown_node_is_refused_and_changes_nothing(
    swarm_config: Config,
) -> None:
    add_teams(swarm_config, "alpha")
    async with serve(swarm_config) as running:
        await running.wait_healthy("alpha", 90)
        before = service_of(running, "alpha")
        events = await move(running, "alpha", "no-such-node")
        assert events[-1]["ok"] is False and "no swarm node 'no-such-node'" in events[-1]["reason"]
        assert service_of(running, "alpha")["ID"] == before["ID"]
        assert running.app.fleet.service("alpha").state() == "up"  # type: ignore[union-attr]


def test_new_teams_go_to_the_reachable_node_with_the_most_free_memory(swarm: None) -> None:
    import docker

    from gateway.errors import RuntimeUnavailable
    from gateway.runtimes.swarm.runtime import roomiest

    engine = docker.from_env()
    try:
        (real,) = engine.api.nodes()
    finally:
        engine.close()
    # A second node cannot exist on this machine: a copy of the real node's record, with
    # another id and twice the memory, stands in for one.
    mb = 1024 * 1024
    memory = real["Description"]["Resources"]["MemoryBytes"]
    big = {
        **real,
        "ID": "zz-second-node",
        "Description": {**real["Description"], "Resources": {"MemoryBytes": 2 * memory}},
        "Spec": {**real["Spec"], "Labels": {"gateway.tenants": "yes"}},
    }
    nodes = [real, big]

    def pinned(constraint: str, count: int) -> list[dict[str, Any]]:
        spec = {"TaskTemplate": {"Placement": {"Constraints": [constraint]}}}
        return [{"Spec": spec}] * count

    def everywhere(node: dict[str, Any]) -> bool:
        return True

    assert roomiest(nodes, [], 512, "", everywhere) == big["ID"]
    # Its services use up its memory advantage (and one more): the real node has more free.
    fill = (memory // mb) // 512 + 1
    assert roomiest(nodes, pinned(f"node.id=={big['ID']}", fill), 512, "", everywhere) == real["ID"]
    # Placements by label count against the node that carries the label.
    by_label = pinned("node.labels.gateway.tenants==yes", fill)
    assert roomiest(nodes, by_label, 512, "", everywhere) == real["ID"]
    # --swarm-node-label keeps only the nodes carrying it (KEY or KEY=VALUE).
    assert roomiest(nodes, by_label, 512, "gateway.tenants", everywhere) == big["ID"]
    assert roomiest(nodes, [], 512, "gateway.tenants=yes", everywhere) == big["ID"]
    # A drained or down node never gets a team; nor one the gateway cannot reach.
    drained = {**big, "Spec": {**big["Spec"], "Availability": "drain"}}
    assert roomiest([real, drained], [], 512, "", everywhere) == real["ID"]
    down = {**big, "Status": {**big["Status"], "State": "down"}}
    assert roomiest([real, down], [], 512, "", everywhere) == real["ID"]
    assert roomiest(nodes, [], 512, "", lambda n: n["ID"] == real["ID"]) == real["ID"]
    with pytest.raises(RuntimeUnavailable, match=r"labelled gateway\.tenants=no"):
        roomiest(nodes, [], 512, "gateway.tenants=no", everywhere)


async def test_a_sleeping_team_moves_without_waking_and_wakes_there(swarm_config: Config) -> None:
    # Through the real CLI and the gateway's admin listener, as an operator runs it.
    async with run_edge(swarm_config, teams=("alpha",)) as edge:
        await edge.wait_healthy("alpha", 90)
        gid = edge.app.gateway_id
        with node_labels(edge, {"gateway.test-move-a": gid}):  # type: ignore[arg-type]
            asleep = edge.app.fleet.sleep("alpha")
            assert asleep is not None
            await asleep
            client = edge.app.runtime.client  # type: ignore[attr-defined]
            ours = {"label": f"gateway.managed-by={gid}"}
            assert not client.api.services(filters=ours)  # asleep: no service at all
            env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
            command = [GATEWAY, "teams", "move", "alpha", "--node", f"gateway.test-move-a={gid}"]
            command += ["--data-dir", str(edge.config.data_dir)]
            out = await asyncio.to_thread(
                subprocess.run, command, capture_output=True, text=True, timeout=120, env=env
            )
            assert out.returncode == 0, out
            assert "alpha: copying the database" in out.stdout
            assert "moved to node" in out.stdout and "starting on node" not in out.stdout
            assert not client.api.services(filters=ours)  # nothing was started for it
            # Its first request wakes it under the new placement, on the copied database.
            assert await get(edge, "alpha") == 200  # type: ignore[arg-type]
            service = service_of(edge, "alpha")  # type: ignore[arg-type]
            constraints = service["Spec"]["TaskTemplate"]["Placement"]["Constraints"]
            assert constraints == [f"node.labels.gateway.test-move-a=={gid}"]
