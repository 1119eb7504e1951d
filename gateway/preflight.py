"""Checks ``gateway serve`` runs before it starts anything, so a missing part is one clear
line saying what to run, not a timeout on the first request."""

from __future__ import annotations

import logging

from gateway.config import Config

log = logging.getLogger("gateway")


def check_runtime(config: Config) -> None:
    """docker: the engine answers and a tenant image exists (RuntimeUnavailable otherwise)."""
    if config.runtime != "docker":
        return
    from gateway.runtimes.docker import image

    client = image.docker_client()  # names what to install or start when there is no engine
    try:
        tag = image.resolve_image(client)  # says to run `gateway image build` when absent
    finally:
        client.close()
    log.info("docker engine ready; new instances run %s", tag)
