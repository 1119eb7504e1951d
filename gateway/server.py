"""Run the gateway under uvicorn (uvloop + httptools).

One process, one event loop, up to three listeners (``gateway/listeners.py``): the public one
(HTTPS when ``tls_cert`` is set, with HSTS), a plain-HTTP redirect to HTTPS (``redirect_port``)
and the admin API (``admin_port`` on ``admin_host``, or ``admin_socket``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import uvicorn

from gateway.app import Gateway, create_app
from gateway.config import Config
from gateway.listeners import (
    AuxServer,
    RedirectToHTTPS,
    aux_config,
    bind_tcp,
    hsts_headers,
    run_listeners,
    tls_options,
)
from gateway.lock import hold_running_lock
from gateway.tls import check_tls_files


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
        # HSTS is added by uvicorn to each HTTPS response: no per-request work in the gateway.
        headers=hsts_headers(config),
        **tls_options(config),
    )


def serve(config: Config) -> None:
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if config.tls:
        check_tls_files(config.tls_cert, config.tls_key)
    with hold_running_lock(config.data_dir):
        app = create_app(config)
        main, public, aux = build_listeners(app, config)
        logging.getLogger("gateway").info("gateway serving %s/", config.base_url)
        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(run_listeners(main, public, aux))
        finally:
            from gateway.admin.discovery import unpublish

            unpublish(config)


def build_listeners(
    app: Gateway, config: Config
) -> tuple[uvicorn.Server, list[socket.socket], list[tuple[uvicorn.Server, list[socket.socket]]]]:
    """Bind every socket first, so a port in use is a clean error before anything starts."""
    from gateway.admin import admin_listener

    public = [bind_tcp(config.host, config.port)]
    main = uvicorn.Server(uvicorn_config(app, config))
    aux: list[tuple[uvicorn.Server, list[socket.socket]]] = []
    if config.tls and config.redirect_port:
        sock = bind_tcp(config.host, config.redirect_port)
        aux.append((AuxServer(aux_config(RedirectToHTTPS(config), config)), [sock]))
    aux.append(admin_listener(app))
    return main, public, aux


def _loop_factory() -> Any:
    import uvloop

    return uvloop.new_event_loop
