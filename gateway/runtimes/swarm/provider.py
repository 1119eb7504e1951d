"""Follow Swarm services and their tasks as the docker provider follows containers.

Each service of this gateway becomes the container-shaped record labels.py already judges
(the same trust rules: ``gateway.managed-by`` must be this gateway's id, the service name must
be ``gateway-<instance>``), with the state of its current task. Nothing is published (Swarm
cannot bind a published port to one address): the address is the task container's own, on the
node-local tenant bridge (``SWARM_NETWORK``), read from this engine's container list; a task on
another node has none here, so it is not routed. Task containers carry only
``gateway.swarm-of``, so no docker-runtime provider on the same engine mistakes them for its own
containers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gateway.runtimes.docker import image
from gateway.runtimes.docker.labels import MANAGED_BY, Snapshot, build_snapshot
from gateway.runtimes.docker.provider import DockerProvider

TASK_OF = "gateway.swarm-of"  # the label on task containers: which gateway's service
SERVICE_ID = "com.docker.swarm.service.id"
# The swarm-scoped bridge every task joins: node-local, tenant-to-tenant traffic off (its
# options come from the config-only network SWARM_NETWORK_CONFIG), reached from the host.
SWARM_NETWORK = "gateway-swarm-tenants"
SWARM_NETWORK_CONFIG = "gateway-swarm-tenants-config"


class SwarmProvider(DockerProvider):
    def subscribe(self, client: Any) -> Any:
        # Task containers starting, dying or being killed (a kill, Swarm's restart, a service
        # removed): service events carry no labels to filter on, and the re-list covers them.
        return client.events(
            decode=True, filters={"type": "container", "label": [f"{TASK_OF}={self.gateway_id}"]}
        )

    def subject(self, event: dict[str, Any]) -> str:
        # A task container's events name its service: the route's id.
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        return str(attributes.get(SERVICE_ID) or super().subject(event))

    def list_routes(self, client: Any) -> Snapshot:
        services = client.api.services(filters={"label": MANAGED_BY})
        tasks = client.api.tasks(filters={"desired-state": "running"})
        nodes = {n["ID"]: n for n in client.api.nodes()}
        ips = task_ips(client, self.gateway_id)
        current: dict[str, dict[str, Any]] = {}
        for task in tasks:  # the newest task Swarm wants running, per service
            sid = task.get("ServiceID", "")
            if sid not in current or task_order(task) > task_order(current[sid]):
                current[sid] = task
        infos, addresses = [], {}
        for service in services:
            spec = service.get("Spec") or {}
            task = current.get(service["ID"])
            infos.append(
                {
                    "Id": service["ID"],
                    "Names": ["/" + str(spec.get("Name", ""))],
                    "State": task_state(task, nodes),
                    "Status": "",
                    "Labels": spec.get("Labels") or {},
                    "Ports": [],
                }
            )
            addresses[service["ID"]] = task_address(task, ips)
        snap = build_snapshot(infos, self.gateway_id, self.domain)
        snap.routes = [
            dataclasses.replace(r, published=addresses.get(r.container)) for r in snap.routes
        ]
        return snap


def task_order(task: dict[str, Any]) -> tuple[int, str]:
    return int((task.get("Version") or {}).get("Index", 0)), str(task.get("CreatedAt", ""))


def node_usable(node: dict[str, Any] | None) -> str:
    """Why no task should be served on ``node`` ("" when it can be)."""
    if node is None:
        return "node-gone"
    if (node.get("Status") or {}).get("State") != "ready":
        return "node-down"
    if (node.get("Spec") or {}).get("Availability") != "active":
        return "node-drained"
    return ""


def task_state(task: dict[str, Any] | None, nodes: dict[str, Any]) -> str:
    """A task's state in the docker provider's words: ``running`` only when it is served."""
    if task is None:
        return "no-task"
    state = str((task.get("Status") or {}).get("State") or "")
    if state != "running":
        return state
    return node_usable(nodes.get(task.get("NodeID", ""))) or "running"


def task_ips(client: Any, gateway_id: str) -> dict[str, str]:
    """Container id -> its address on the tenant bridge, for this gateway's task containers
    on this engine (one list call, not one inspect per task)."""
    found = client.api.containers(filters={"label": f"{TASK_OF}={gateway_id}"})
    ips = {}
    for info in found:
        networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
        ip = (networks.get(SWARM_NETWORK) or {}).get("IPAddress")
        if ip:
            ips[str(info["Id"])] = str(ip)
    return ips


def task_address(task: dict[str, Any] | None, ips: dict[str, str]) -> tuple[str, int] | None:
    """Where the gateway reaches a task: its container's address on the tenant bridge (None
    for a task not running here: on another node, or with no container yet)."""
    if task is None:
        return None
    container = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
    ip = ips.get(str(container or ""))
    return (ip, image.PORT) if ip else None
