"""The Docker runtime: one container per team instance, followed through the engine's events.

runtime.py   DockerRuntime: create, start, adopt and stop containers; provision from the CLI
provider.py  DockerProvider: the engine's container list and events, as full snapshots
labels.py    a container's labels -> a route (only this gateway's own containers)
snapshot.py  SnapshotSync: a snapshot -> the instances lost behind the gateway's back
image.py     the tenant image build (image/Dockerfile) and its content-hash tag
cli.py       gateway image build|tag
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.runtimes.docker.runtime import (
        CPUS,
        PIDS_LIMIT,
        DockerRuntime,
        container_name,
        deprovision_team,
        hardening,
        provision_team,
        published,
    )

__all__ = [
    "CPUS",
    "PIDS_LIMIT",
    "DockerRuntime",
    "container_name",
    "deprovision_team",
    "hardening",
    "provision_team",
    "published",
]


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): every CLI command imports the image commands (cli.py), not the runtime.
    if name in __all__:
        from gateway.runtimes.docker import runtime

        return getattr(runtime, name)
    raise AttributeError(name)
