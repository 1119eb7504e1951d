"""Each team instance a one-replica Swarm service, hardened like the docker runtime's container.

A service is named ``gateway-<instance id>`` and carries the docker runtime's labels, so the
same trust rules judge it (labels.py). The gateway's own deploy sequence runs unchanged: a new
instance is a new service, started, health-checked, cut over to, drained, then removed; Swarm
never rolls anything. Swarm's part is to keep each service's one task running (restarting a
killed one) on the node the team is pinned to.

Reach: nothing is published (the service API cannot bind a published port to 127.0.0.1, so
it would listen on every interface). Each task joins ``gateway-swarm-tenants``, a swarm-scoped
bridge local to its node with tenant-to-tenant traffic off, and the gateway connects to the
task container's address there, as it does to a container. That address is routable only from
the task's own node, so teams are placed on the gateway's node (docs/production.md).

Placement: a team's data lives on one node, so its services carry ``node.id==<id>``; the id is
recorded in the control store (``swarm_node:<team>``) when the team's first instance starts,
chosen among the ready, active nodes (with ``swarm_node_label``, if set) that the gateway can
reach -- its own -- with the most free memory: the node's memory minus ``instance_memory_mb``
for each of this gateway's services on it (``roomiest``). ``gateway teams move`` (move.py)
records another: a node id, or ``node.labels.KEY==VALUE`` for a node named by its label.

What the engine's service API (20.10, API 1.41) cannot express, beside the container spec:
``no-new-privileges`` and a ``noexec`` /tmp; the task still runs as a non-root user with
every capability dropped, on a read-only root file system (docs/production.md).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from gateway.config import Config
from gateway.errors import RuntimeUnavailable
from gateway.runtimes.docker import image
from gateway.runtimes.docker.labels import MANAGED_BY
from gateway.runtimes.docker.runtime import (
    CPUS,
    PIDS_LIMIT,
    DockerRuntime,
    SecretFn,
    container_name,
    deprovision_team,
    provision_team,
)
from gateway.runtimes.swarm.provider import (
    SWARM_NETWORK,
    SWARM_NETWORK_CONFIG,
    TASK_OF,
    SwarmProvider,
    node_usable,
    task_address,
    task_ips,
    task_order,
)
from gateway.slugs import validate_slug
from gateway.store.db import Instance, Store

log = logging.getLogger("gateway.swarm")

MANAGED_NETWORK = "gateway.network"
TASK_START_TIMEOUT = 60.0  # seconds for a new task to be running (image present on the node)
FAILED = ("failed", "rejected", "orphaned")


class SwarmRuntime(DockerRuntime):
    name = "swarm"

    def __init__(
        self,
        config: Config,
        store: Store,
        secret_for: SecretFn,
        gateway_id: str,
        client_factory: Any = image.docker_client,
    ) -> None:
        super().__init__(config, store, secret_for, gateway_id, client_factory)
        self.provider = SwarmProvider(client_factory, gateway_id, config.domain)

    # -- blocking API (threads, and the CLI) -------------------------------------------------
    # (``ensure`` is the docker runtime's: find, create, then reach.)
    def create(self, instance: Instance) -> None:
        self.client.api.create_service(**self.service_spec(instance))

    def reach(self, instance: Instance, service: Any) -> tuple[tuple[str, int], str]:
        """Wait for the service's running task; its address on the tenant bridge. A task
        container left frozen (a gateway that died mid-move) is thawed: Swarm still calls
        that task running, and it would hang every request."""
        address = self.wait_task(service["ID"], container_name(instance))
        self.thaw(instance)
        return address, str(service["ID"])

    def wait_task(self, service_id: str, name: str) -> tuple[str, int]:
        """Poll (bounded) until the service's current task runs with an address here."""
        deadline = time.monotonic() + TASK_START_TIMEOUT
        why = "no task scheduled yet"
        while time.monotonic() < deadline:
            tasks = self.client.api.tasks(filters={"service": service_id})
            live = [t for t in tasks if t.get("DesiredState") == "running"]
            nodes = {n["ID"]: n for n in self.client.api.nodes()}
            ips = task_ips(self.client, self.gateway_id)
            if live:
                task = max(live, key=task_order)
                status = task.get("Status") or {}
                state = str(status.get("State", ""))
                address = task_address(task, ips)
                unusable = node_usable(nodes.get(task.get("NodeID", "")))
                if state == "running" and address is not None and not unusable:
                    return address
                if state == "running" and address is None and not unusable:
                    # Running, but not on this engine (or not on the tenant bridge).
                    state = f"running on node {task.get('NodeID')}, unreachable from here"
                why = f"its task is {unusable or state}" + (
                    f": {status['Err']}" if status.get("Err") else ""
                )
            else:
                failed = [t for t in tasks if (t.get("Status") or {}).get("State") in FAILED]
                if failed:
                    last = max(failed, key=task_order)["Status"]
                    why = f"its last task {last.get('State')}: {last.get('Err', '')}"
            time.sleep(0.1)
        raise RuntimeUnavailable(f"service {name} has no running task: {why}")

    def find(self, instance: Instance) -> Any:
        import docker.errors

        try:
            service = self.client.api.inspect_service(container_name(instance))
        except docker.errors.NotFound:
            return None
        if ((service.get("Spec") or {}).get("Labels") or {}).get(MANAGED_BY) != self.gateway_id:
            raise RuntimeUnavailable(
                f"a service named {container_name(instance)} exists but is not managed by "
                "this gateway"
            )
        return service

    def container_image(self, instance: Instance) -> str:
        """The image the instance's service runs (Swarm may append a digest: dropped)."""
        service = self.find(instance)
        if service is None:
            raise RuntimeUnavailable(f"the service of {instance.id} is gone")
        spec = service["Spec"]["TaskTemplate"]["ContainerSpec"]
        return str(spec["Image"]).split("@", 1)[0]

    def remove(self, instance: Instance) -> None:
        service = self.find(instance)
        if service is not None:
            self._remove_service(service["ID"])

    def remove_team(self, team: str) -> int:
        validate_slug(team)
        found = self.client.api.services(
            filters={"label": [f"{MANAGED_BY}={self.gateway_id}", f"gateway.team={team}"]}
        )
        for service in found:
            self._remove_service(service["ID"])
        return len(found)

    def _remove_service(self, service_id: str) -> None:
        """Remove the service and wait (bounded) until none of its task containers runs: the
        next instance on the same volume, or a move, must not overlap a stopping one.

        Swarm's agent takes seconds to stop a removed service's task and more to remove the
        container (benchmarks/README.md), so the containers, on this engine, are stopped
        here (gracefully: SIGTERM, then the grace period); a stopped one holds no file."""
        import docker.errors

        try:
            self.client.api.remove_service(service_id)
        except docker.errors.NotFound:
            return
        label = {"label": f"com.docker.swarm.service.id={service_id}"}
        for container in self.client.api.containers(filters=label):
            with contextlib.suppress(docker.errors.APIError):  # gone, or stopping already
                self.client.api.stop(container["Id"], timeout=self.stop_grace)
        deadline = time.monotonic() + self.stop_grace + 5
        while self.client.api.containers(filters=label) and time.monotonic() < deadline:
            time.sleep(0.1)
        log.info("removed service %s", service_id)

    def freeze(self, instance: Instance) -> bool:
        """Pause the instance's task container (the freezer: it opens no file while its
        database is swapped under it). False when it has none here to pause."""
        import docker.errors

        container = self.task_container(instance)
        if container is None:
            return False
        try:
            self.client.api.pause(container)
        except docker.errors.APIError as exc:
            raise RuntimeUnavailable(f"cannot pause {container_name(instance)}: {exc}") from exc
        return True

    def thaw(self, instance: Instance) -> None:
        import docker.errors

        container = self.task_container(instance)
        if container is not None:
            with contextlib.suppress(docker.errors.APIError):  # not paused (any more)
                self.client.api.unpause(container)

    def task_container(self, instance: Instance) -> str | None:
        """The container of the instance's current task on this engine, if any."""
        service = self.find(instance)
        if service is None:
            return None
        tasks = self.client.api.tasks(
            filters={"service": service["ID"], "desired-state": "running"}
        )
        if not tasks:
            return None
        task = max(tasks, key=task_order)
        container = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
        return str(container) if container else None

    # -- placement -------------------------------------------------------------------------
    def node_for(self, team: str) -> str:
        """The node id the team is pinned to: recorded once, chosen by free memory."""
        return self.store.ensure_setting(f"swarm_node:{team}", lambda: self.roomiest_node())

    def placement(self, team: str) -> str:
        """The constraint the team's services carry: ``node.id==<id>`` as first placed, or
        what a move recorded (``node.labels.KEY==VALUE`` for a node named by its label)."""
        pinned = self.node_for(team)
        return pinned if pinned.startswith("node.") else f"node.id=={pinned}"

    def pin(self, team: str, placement: str) -> None:
        """Record the team's placement: services made from now on carry it (a node id is
        kept bare, as first placed)."""
        value = placement.removeprefix("node.id==")
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                [f"swarm_node:{validate_slug(team)}", value],
            )

    def resolve_node(self, node: str) -> tuple[str, str]:
        """``gateway teams move --node NODE``: a node id, hostname or ``KEY=VALUE`` node label
        -> (the placement constraint, the one node it names). Refused unless exactly one ready,
        active node matches and the gateway can reach tasks there."""
        nodes = self.client.api.nodes()
        key, eq, value = node.partition("=")
        placement = f"node.labels.{key}=={value}" if eq else ""
        found = [n for n in nodes if node_matches(n, node)]
        if not found:
            names = ", ".join(node_name(n) for n in nodes)
            raise RuntimeUnavailable(f"no swarm node {node!r} (the nodes: {names})")
        if len(found) > 1:
            raise RuntimeUnavailable(
                f"{node!r} names {len(found)} nodes: a team's data lives on one node, so give "
                "one node's id or hostname, or a label only one node carries"
            )
        (chosen,) = found
        why = node_usable(chosen)
        if why:
            raise RuntimeUnavailable(f"node {node_name(chosen)} cannot take a team: {why}")
        here = str(self.client.info()["Swarm"].get("NodeID") or "")
        if chosen["ID"] != here:
            raise RuntimeUnavailable(
                f"node {node_name(chosen)} is not the gateway's own: tenant tasks are reachable "
                'only on the gateway\'s node (docs/production.md, "more than one host")'
            )
        return placement or f"node.id=={chosen['ID']}", str(chosen["ID"])

    def roomiest_node(self) -> str:
        # Only the gateway's own node: a task's bridge address is routable from there only.
        here = str(self.client.info()["Swarm"].get("NodeID") or "")
        nodes = self.client.api.nodes()
        services = self.client.api.services(filters={"label": f"{MANAGED_BY}={self.gateway_id}"})
        return roomiest(
            nodes,
            services,
            self.config.instance_memory_mb,
            self.config.swarm_node_label,
            lambda n: n["ID"] == here,
        )

    def service_spec(self, instance: Instance) -> dict[str, Any]:
        """The docker runtime's hardening (runtime.py ``spec``) in the service API's terms."""
        team = validate_slug(instance.team)
        tag = self.tag_for(instance)
        memory = self.config.instance_memory_mb * 1024 * 1024
        container = {
            "Image": tag,
            "Labels": {TASK_OF: self.gateway_id, "gateway.instance": instance.id},
            "Env": [f"DATASETTE_SECRET={self.secret_for(team)}"],
            "User": self.user(),
            "Mounts": [
                {"Type": "bind", "Source": str(self.config.teams_dir / team), "Target": "/data"},
                {
                    "Type": "tmpfs",
                    "Target": "/tmp",
                    "TmpfsOptions": {"SizeBytes": 64 * 1024 * 1024},
                },
            ],
            "ReadOnly": True,
            "CapabilityDrop": ["ALL"],
            "StopSignal": "SIGTERM",
            "StopGracePeriod": self.stop_grace * 10**9,
            # No engine health check: under Swarm it is not informational as with containers
            # but gates the task, which stays "starting" (no published port) until the first
            # probe, 30 s later; a probe every second or two would cost a Python per team.
            # The gateway's own health checks decide routing, as for containers.
            "Healthcheck": {"Test": ["NONE"]},
        }
        return {
            "name": container_name(instance),
            "labels": self.labels(instance, tag),
            "task_template": {
                "ContainerSpec": container,
                "Resources": {
                    "Limits": {
                        "NanoCPUs": int(CPUS * 1e9),
                        "MemoryBytes": memory,
                        "Pids": PIDS_LIMIT,
                    }
                },
                # Swarm restarts a dead task (the gateway then re-adds it); no backoff beyond.
                "RestartPolicy": {"Condition": "any", "Delay": 500_000_000, "MaxAttempts": 0},
                "Placement": {"Constraints": [self.placement(team)]},
                # No published port: the gateway reaches the task on the tenant bridge.
                "Networks": [{"Target": self.ensure_swarm_network()}],
            },
            "mode": {"Replicated": {"Replicas": 1}},
        }

    def ensure_swarm_network(self) -> str:
        """The tenant bridge's id, made once: a config-only network holding its options on this
        node, and the swarm-scoped bridge built from it (the SDK has no ``ConfigFrom``, hence
        the raw calls). Only the gateway's node runs tenants, so only it needs them."""
        import docker.errors

        api = self.client.api
        for name, body in (
            (
                SWARM_NETWORK_CONFIG,
                {
                    "ConfigOnly": True,
                    "Labels": {MANAGED_NETWORK: "swarm"},
                    # Tenants must not reach each other, as on the docker runtime's network.
                    "Options": {"com.docker.network.bridge.enable_icc": "false"},
                },
            ),
            (
                SWARM_NETWORK,
                {
                    "Driver": "bridge",
                    "Scope": "swarm",
                    "ConfigFrom": {"Network": SWARM_NETWORK_CONFIG},
                },
            ),
        ):
            if not [n for n in api.networks(names=[name]) if n["Name"] == name]:
                # (Labels only on the config-only one: the engine refuses any setting of its
                # own on a network built from a configuration.)
                data = {"Name": name, "CheckDuplicate": True}
                try:
                    api._result(api._post_json(api._url("/networks/create"), data=data | body))
                except docker.errors.APIError as exc:
                    if exc.status_code != 409:  # 409: a concurrent provision made it
                        raise RuntimeUnavailable(f"cannot create network {name}: {exc}") from exc
        (network,) = [n for n in api.networks(names=[SWARM_NETWORK]) if n["Name"] == SWARM_NETWORK]
        return str(network["Id"])


def provision_swarm_team(config: Config, store: Store, slug: str, *, wait: bool = True) -> int:
    return provision_team(config, store, slug, wait=wait, runtime_cls=SwarmRuntime)


def deprovision_swarm_team(config: Config, store: Store, slug: str) -> int:
    return deprovision_team(config, store, slug, runtime_cls=SwarmRuntime)


# -- placement policy: pure functions of the engine's node and service lists -----------------
def node_name(node: dict[str, Any]) -> str:
    return str((node.get("Description") or {}).get("Hostname") or node.get("ID", ""))


def node_labels(node: dict[str, Any]) -> dict[str, str]:
    return dict((node.get("Spec") or {}).get("Labels") or {})


def node_matches(node: dict[str, Any], name: str) -> bool:
    """``name`` is the node's id, its hostname, or ``KEY=VALUE`` / ``KEY`` among its labels."""
    key, eq, value = name.partition("=")
    if eq:
        return node_labels(node).get(key) == value
    return name in (node.get("ID"), node_name(node))


def constraint_matches(node: dict[str, Any], constraint: str) -> bool:
    """Whether ``node`` satisfies one of the placements this runtime writes."""
    field, _, value = constraint.partition("==")
    if field == "node.id":
        return bool(node.get("ID") == value)
    if field.startswith("node.labels."):
        return node_labels(node).get(field.removeprefix("node.labels.")) == value
    return False


def roomiest(
    nodes: list[dict[str, Any]],
    services: list[dict[str, Any]],
    instance_mb: int,
    label: str,
    reachable: Any,
) -> str:
    """The policy for a new team: among the ready, active, reachable nodes (carrying
    ``label``, KEY or KEY=VALUE, if given), the one with the most free memory -- its memory
    minus ``instance_mb`` for each of ``services`` placed on it; ties go to the lowest id."""
    candidates = [n for n in nodes if not node_usable(n) and reachable(n)]
    if label:
        key, eq, value = label.partition("=")
        candidates = [
            n
            for n in candidates
            if key in node_labels(n) and (not eq or node_labels(n)[key] == value)
        ]
    if not candidates:
        more = f" and labelled {label}" if label else ""
        raise RuntimeUnavailable(
            f"no swarm node is ready, active{more} and reachable by the gateway: no node to "
            "place a team on (tenant tasks are reachable only on the gateway's own node)"
        )
    used: dict[str, int] = {}
    for service in services:
        placement = (service["Spec"].get("TaskTemplate") or {}).get("Placement") or {}
        for constraint in placement.get("Constraints") or []:
            for node in nodes:
                if constraint_matches(node, constraint):
                    used[node["ID"]] = used.get(node["ID"], 0) + instance_mb
    mb = 1024 * 1024

    def rank(node: dict[str, Any]) -> tuple[int, str]:
        total = int(((node.get("Description") or {}).get("Resources") or {}).get("MemoryBytes", 0))
        return -(total // mb - used.get(node["ID"], 0)), str(node["ID"])

    return str(min(candidates, key=rank)["ID"])
