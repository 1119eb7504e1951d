"""Run the gateway under uvicorn (uvloop + httptools)."""

from __future__ import annotations

import logging
from typing import Any

import uvicorn

from gateway.app import create_app
from gateway.config import Config
from gateway.lock import hold_running_lock


def uvicorn_config(app: Any, config: Config) -> uvicorn.Config:
    """The production uvicorn settings, shared with ``benchmarks/`` so it measures these."""
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        # The gateway logs its own access lines; uvicorn's costs throughput on the hot path.
        access_log=False,
        # Forwarded headers are trusted by the gateway itself, from configured proxies only.
        proxy_headers=False,
        server_header=False,
        log_level=config.log_level,
        timeout_graceful_shutdown=int(config.drain_timeout),
    )


def serve(config: Config) -> None:
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with hold_running_lock(config.data_dir):
        app = create_app(config)
        uv = uvicorn_config(app, config)
        logging.getLogger("gateway").info("gateway serving %s/", config.base_url)
        uvicorn.Server(uv).run()
