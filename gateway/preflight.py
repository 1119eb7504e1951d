"""Checks ``gateway serve`` runs before it starts anything, so a missing part is one clear
line saying what to run, not a timeout on the first request."""

from __future__ import annotations

import logging

from gateway.config import Config
from gateway.errors import RuntimeUnavailable

log = logging.getLogger("gateway")


def check_runtime(config: Config) -> None:
    """docker: the engine answers and a tenant image exists (RuntimeUnavailable otherwise)."""
    if config.runtime not in ("docker", "swarm"):
        return
    from gateway.runtimes.docker import image

    client = image.docker_client()  # names what to install or start when there is no engine
    try:
        if config.runtime == "swarm":
            swarm = client.info().get("Swarm") or {}
            if not swarm.get("ControlAvailable"):
                raise RuntimeUnavailable(
                    "--runtime swarm: this Docker engine is not a swarm manager; run "
                    "`docker swarm init` (or join it to a swarm as a manager)"
                )
        tag = image.resolve_image(client)  # says to run `gateway image build` when absent
    finally:
        client.close()
    log.info("docker engine ready; new instances run %s", tag)
