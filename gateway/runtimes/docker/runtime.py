"""The production runtime: each team's Datasette in its own hardened container.

Containers are found by a deterministic name (``gateway-<instance id>``) and by labels, so a
gateway or CLI killed mid-provision converges when run again: a missing container is
created, a stopped one started, a running one adopted with its published port. The Docker
SDK blocks, so every call runs in a thread, never on the event loop. ``close()`` leaves the
containers running: a gateway restart must not interrupt any team.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.config import Config
from gateway.errors import RuntimeUnavailable
from gateway.routing.signature import sign_with
from gateway.routing.target import Target
from gateway.runtimes.base import InstanceLost, prepare_team_dir
from gateway.runtimes.docker import image
from gateway.runtimes.docker.labels import CONTAINER_PREFIX, MANAGED_BY
from gateway.runtimes.docker.provider import DockerProvider
from gateway.runtimes.docker.snapshot import SnapshotSync
from gateway.slugs import validate_slug
from gateway.store.db import Instance, Store

log = logging.getLogger("gateway.docker")

NETWORK = "gateway-tenants"
PIDS_LIMIT = 256
CPUS = 1.0
STOP_GRACE_EXTRA = 10  # seconds beyond the drain timeout before Docker sends SIGKILL
SecretFn = Callable[[str], str]
HEALTHCHECK = {
    "test": ["CMD", *image.HEALTH_CMD],
    # Informational (health_status events); the gateway's own checks route. Each probe
    # starts a Python, so keep it rare.
    "interval": 30 * 10**9,
    "timeout": 5 * 10**9,
    "retries": 3,
    "start_period": 30 * 10**9,
}


def hardening(memory_mb: int) -> dict[str, Any]:
    """The confinement of every tenant container, as ``create_host_config`` (and
    ``containers.run``) keywords: one place, shared with the benchmark's plain baseline."""
    memory = f"{memory_mb}m"
    return {
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "read_only": True,
        "tmpfs": {"/tmp": "rw,noexec,nosuid,size=64m"},
        "mem_limit": memory,
        "memswap_limit": memory,  # no swap beyond the limit
        "pids_limit": PIDS_LIMIT,
        "nano_cpus": int(CPUS * 1e9),
    }


def container_name(instance: Instance) -> str:
    return CONTAINER_PREFIX + instance.id


class DockerRuntime:
    name = "docker"
    detaches = True

    def __init__(
        self,
        config: Config,
        store: Store,
        secret_for: SecretFn,
        gateway_id: str,
        client_factory: Callable[[], Any] = image.docker_client,
    ) -> None:
        self.config = config
        self.store = store
        self.secret_for = secret_for
        self.gateway_id = gateway_id
        self._factory = client_factory
        self._client: Any = None
        # Instances whose start() has finished (or failed), with their targets: snapshots may
        # judge only these (snapshot.py).
        self.started: dict[str, tuple[Instance, Target]] = {}
        self.crashes = 0  # a lost container is reported through watch(): the fleet counts it
        self._image: str | None = None
        self._version: str | None = None
        self.network = NETWORK
        self._network_id: str | None = None
        self.provider = DockerProvider(client_factory, gateway_id, config.domain)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._factory()
        return self._client

    def version(self) -> str:
        # Hashing the recipe reads files and package metadata: once, not on every provision.
        if self._version is None:
            self._version = image.image_tag()
        return self._version

    async def start(self, instance: Instance, target: Target) -> None:
        try:
            host, port = await asyncio.to_thread(self.ensure, instance)
            target.pool.host, target.pool.port = host, port
        except Exception as exc:
            # The target stays down; the next snapshot finds no container and retries. The
            # reason is kept on the target, so a waiting deploy or CLI says it at once.
            log.error("cannot start %s: %s", instance.id, exc)
            target.fail_start(f"cannot start {instance.id}: {_engine_message(exc)}")
        finally:
            self.started[instance.id] = (instance, target)

    def watch(self, on_instance_lost: InstanceLost) -> None:
        """Follow the engine's containers; a started instance's container that dies, stops
        or moves is reported (snapshot.py)."""
        self.provider.start(SnapshotSync(self.started, self.store, on_instance_lost).apply)

    async def check_version(self, version: str) -> str:
        return await asyncio.to_thread(self.tenant_image, version)

    def tenant_image(self, tag: str) -> str:
        """``tag`` if it is a tenant image present on the engine; else why not, in one line."""
        import docker.errors

        repo = tag.rsplit(":", 1)[0] if ":" in tag.rsplit("/", 1)[-1] else tag
        if repo != image.IMAGE_REPO:
            raise RuntimeUnavailable(
                f"{tag} is not a tenant image: deploys run {image.IMAGE_REPO}:<tag> images "
                "built by `gateway image build` (or --dockerfile)"
            )
        try:
            self.client.images.get(tag)
        except docker.errors.ImageNotFound as exc:
            raise RuntimeUnavailable(
                f"no image {tag} on the Docker engine: build it (`gateway image build`) "
                f"or list what exists (`docker images {image.IMAGE_REPO}`)"
            ) from exc
        except docker.errors.APIError as exc:
            raise RuntimeUnavailable(f"the Docker engine cannot check {tag}: {exc}") from exc
        return tag

    def problem(self) -> str:
        return self.provider.error

    async def running_version(self, instance: Instance) -> str:
        return await asyncio.to_thread(self.container_image, instance)

    def container_image(self, instance: Instance) -> str:
        """The image the instance's container runs, as the engine reports it."""
        container = self.find(instance)
        if container is None:
            raise RuntimeUnavailable(f"the container of {instance.id} is gone")
        return str((container.attrs.get("Config") or {}).get("Image") or container.image.id)

    async def stop(self, instance: Instance) -> None:
        self.started.pop(instance.id, None)  # stopped on purpose: no longer watched
        await asyncio.to_thread(self.remove, instance)

    async def close(self) -> None:
        await self.provider.close()
        if self._client is not None:
            await asyncio.to_thread(self._client.close)

    # -- blocking API (threads, and the CLI) -------------------------------------------------
    def ensure(self, instance: Instance) -> tuple[str, int]:
        """Create, start or adopt the instance's container (or service); return its address.

        The same steps for every engine-backed runtime: only ``create``, ``reach`` and ``find``
        differ (a container here, a Swarm service in swarm/runtime.py)."""
        import docker.errors

        validate_slug(instance.team)  # before any engine call
        found = self.find(instance)
        if found is None:
            self.prepare_volume(instance.team)
            try:
                self.create(instance)
                log.info("created %s for %s", container_name(instance), instance.id)
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: a concurrent provision won the name
                    self._image, self._network_id = None, None  # look them up afresh
                    raise RuntimeUnavailable(
                        f"cannot create {container_name(instance)}: {_engine_message(exc)}"
                    ) from exc
            found = self.find(instance)
            if found is None:
                raise RuntimeUnavailable(f"{container_name(instance)} vanished as it was made")
        address, ref = self.reach(instance, found)
        self.store.update_instance(instance.id, port=address[1], ref=ref)
        return address

    def create(self, instance: Instance) -> None:
        self.client.api.create_container(**self.spec(instance))

    def reach(self, instance: Instance, container: Any) -> tuple[tuple[str, int], str]:
        """Start the container if it is not running; its published address and id."""
        if container.status == "paused":  # paused behind our back: a hang, from our side
            container.unpause()
            container.reload()
        if container.status != "running":
            self.prepare_volume(instance.team)
            container.start()
            container.reload()
        address = published(container.attrs)
        if address is None:
            raise RuntimeUnavailable(f"container {container.name} publishes no loopback port")
        return address, str(container.id)

    def find(self, instance: Instance) -> Any:
        import docker.errors

        try:
            container = self.client.containers.get(container_name(instance))
        except docker.errors.NotFound:
            return None
        if container.labels.get(MANAGED_BY) != self.gateway_id:
            raise RuntimeUnavailable(
                f"a container named {container.name} exists but is not managed by this gateway"
            )
        return container

    def remove(self, instance: Instance) -> None:
        container = self.find(instance)
        if container is not None:
            _stop_and_remove(container, self.stop_grace)

    def remove_team(self, team: str) -> int:
        """Remove every container of ``team`` this gateway manages (orphans included)."""
        validate_slug(team)
        found = self.client.containers.list(
            all=True, filters={"label": [f"{MANAGED_BY}={self.gateway_id}", f"gateway.team={team}"]}
        )
        for container in found:
            _stop_and_remove(container, self.stop_grace)
        return len(found)

    @property
    def stop_grace(self) -> int:
        return int(self.config.drain_timeout) + STOP_GRACE_EXTRA

    def prepare_volume(self, team: str) -> Path:
        """The team's directory, writable by the container's non-root user."""
        team_dir = self.config.teams_dir / validate_slug(team)
        prepare_team_dir(team_dir)
        if os.geteuid() == 0:
            for path in [team_dir, *team_dir.rglob("*")]:
                if not path.is_symlink():
                    os.chown(path, image.UID, image.UID)
        return team_dir

    def user(self) -> str:
        # As root, the image's own user (volumes are chowned to it); otherwise our own uid,
        # which already owns the volume and is non-root by definition.
        return f"{image.UID}:{image.UID}" if os.geteuid() == 0 else f"{os.getuid()}:{os.getgid()}"

    def spec(self, instance: Instance) -> dict[str, Any]:
        """Every setting of a tenant container: the hardening is all here, in one place.

        The low-level API is used because the high-level one cannot set ``stop_timeout``.
        """
        team = validate_slug(instance.team)
        tag = self.tag_for(instance)
        host_config = self.client.api.create_host_config(
            binds={str(self.config.teams_dir / team): {"bind": "/data", "mode": "rw"}},
            port_bindings={image.PORT: ("127.0.0.1", None)},
            network_mode=self.ensure_network(),
            restart_policy={"Name": "unless-stopped"},
            **hardening(self.config.instance_memory_mb),
        )
        return {
            "image": tag,
            "name": container_name(instance),
            "detach": True,
            "labels": self.labels(instance, tag),
            "environment": {"DATASETTE_SECRET": self.secret_for(team)},
            "user": self.user(),
            "ports": [image.PORT],
            "host_config": host_config,
            "stop_signal": "SIGTERM",
            "stop_timeout": self.stop_grace,
            "healthcheck": HEALTHCHECK,
        }

    def tag_for(self, instance: Instance) -> str:
        """The image an instance runs: a deploy may pin it to a given build of our image;
        otherwise the current one. The current recipe's tag resolves like any new instance
        (the Dockerfile build when the registry-free one is absent, else the message saying
        to run `gateway image build`)."""
        pinned = (
            instance.version.startswith(image.IMAGE_REPO + ":")
            and instance.version != self.version()
        )
        return instance.version if pinned else self.image()

    def labels(self, instance: Instance, tag: str) -> dict[str, str]:
        """What labels.py reads back into a route (containers, and Swarm services)."""
        team = validate_slug(instance.team)
        return {
            "gateway.team": team,
            "gateway.host": f"{team}.{self.config.domain}",
            "gateway.port": str(image.PORT),
            "gateway.version": tag,
            "gateway.instance": instance.id,
            MANAGED_BY: self.gateway_id,
        }

    def image(self) -> str:
        # Resolved once per runtime: a provision then costs no extra engine round trip.
        if self._image is None:
            self._image = image.resolve_image(self.client)
        return self._image

    def ensure_network(self) -> str:
        """One bridge with inter-container traffic off: a team cannot reach another's port.

        Returns its id. Docker does not refuse a second network of the same name: two gateways
        (or test runs) creating it at once on a fresh engine made two, and every later use of
        the name failed as ambiguous. So each keeps the same one (first by creation time, then
        id), removes the others it can, and names it by id.
        """
        import docker.errors

        if self._network_id is not None:
            return self._network_id
        found = self._tenant_networks()
        if not found:
            try:
                self.client.networks.create(
                    self.network,
                    driver="bridge",
                    options={"com.docker.network.bridge.enable_icc": "false"},
                    labels={"gateway.network": "tenants"},
                )
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
            found = self._tenant_networks()
        keep = min(found, key=lambda n: (str(n.attrs.get("Created", "")), str(n.id)))
        for other in found:
            if other.id != keep.id:
                try:
                    other.remove()
                except docker.errors.APIError as exc:  # gone already, or in use: left alone
                    log.warning(
                        "duplicate network %s %s not removed: %s", other.name, other.id, exc
                    )
        self._network_id = str(keep.id)
        return self._network_id

    def _tenant_networks(self) -> list[Any]:
        # The engine's name filter matches substrings: keep exact names only.
        return [
            n for n in self.client.networks.list(names=[self.network]) if n.name == self.network
        ]

    def wait_healthy(self, address: tuple[str, int], team: str, timeout: float = 60) -> bool:
        """Poll the container's health endpoint directly (CLI without a running gateway),
        signed as the gateway signs (the instance answers nothing else)."""
        import urllib.request

        deadline = time.monotonic() + timeout
        url = f"http://{address[0]}:{address[1]}/-/health"
        name, value = sign_with(self.secret_for(team), team)
        request = urllib.request.Request(url, headers={name.decode(): value.decode()})
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(request, timeout=2) as resp:
                    if resp.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.1)
        return False


def _engine_message(exc: Exception) -> str:
    """The engine's own words (``No such image: ...``), not the SDK's wrapping."""
    explanation = getattr(exc, "explanation", None)
    if isinstance(explanation, str) and explanation:
        return explanation
    return str(exc)


def published(attrs: dict[str, Any]) -> tuple[str, int] | None:
    ports = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
    for binding in ports.get(f"{image.PORT}/tcp") or []:
        if binding.get("HostIp") == "127.0.0.1" and binding.get("HostPort"):
            return "127.0.0.1", int(binding["HostPort"])
    return None


def _stop_and_remove(container: Any, grace: int) -> None:
    import docker.errors

    try:
        container.stop(timeout=grace)
        container.remove(v=True)
        log.info("removed container %s", container.name)
    except docker.errors.NotFound:
        pass


# -- the CLI's side, when no gateway is running to do it --------------------------------------
def _cli_runtime(
    config: Config, store: Store, runtime_cls: type[DockerRuntime] = DockerRuntime
) -> DockerRuntime:
    # Same secret key as Gateway.instance_secret, so the gateway adopts the container as is.
    return runtime_cls(
        config,
        store,
        lambda team: store.ensure_setting(f"instance_secret:{team}"),
        store.ensure_setting("gateway_id"),
    )


def provision_team(
    config: Config,
    store: Store,
    slug: str,
    *,
    wait: bool = True,
    runtime_cls: type[DockerRuntime] = DockerRuntime,
) -> int:
    """Create or adopt the team's container now; safe to rerun after an interrupted run."""
    runtime = _cli_runtime(config, store, runtime_cls)
    try:
        instances = [i for i in store.instances(slug) if i.role == "active"]
        if not instances:
            instances = [store.add_instance(slug, runtime.name, version=runtime.version())]
        for inst in instances:
            address = runtime.ensure(inst)
            if wait and not runtime.wait_healthy(address, slug):
                raise RuntimeUnavailable(
                    f"container {container_name(inst)} started but /-/health does not answer; "
                    f"see `docker logs {container_name(inst)}`"
                )
        return len(instances)
    finally:
        if runtime._client is not None:
            runtime._client.close()


def deprovision_team(
    config: Config, store: Store, slug: str, runtime_cls: type[DockerRuntime] = DockerRuntime
) -> int:
    """Stop and remove every container of the team (its data stays on the host)."""
    runtime = _cli_runtime(config, store, runtime_cls)
    try:
        return runtime.remove_team(slug)
    finally:
        if runtime._client is not None:
            runtime._client.close()
