"""Run the gateway under uvicorn (uvloop + httptools).

One process, one event loop, up to three listeners (``gateway/listeners.py``): the public one
(HTTPS when ``tls_cert`` is set, with HSTS), a plain-HTTP redirect to HTTPS (``redirect_port``)
and the admin API (``admin_port`` on ``admin_host``, or ``admin_socket``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from typing import Any

import uvicorn

from gateway import acme_store, logs, native, sdnotify
from gateway.app import Gateway, create_app
from gateway.config import Config
from gateway.http.protocol import GatewayHttpProtocol
from gateway.limits import ListenerConfig, ListenerLimits, raise_fd_limit
from gateway.listeners import (
    AuxServer,
    MainServer,
    RedirectToHTTPS,
    bind_tcp,
    hsts_headers,
    run_listeners,
    tls_options,
)
from gateway.lock import DataDirLock, hold_running_lock
from gateway.preflight import check_runtime
from gateway.restart import Sockets, announce_ready, hand_over
from gateway.tls import check_tls_files


def uvicorn_config(app: Any, config: Config) -> uvicorn.Config:
    """The production uvicorn settings, shared with ``benchmarks/`` so it measures these."""
    return ListenerConfig(
        app,
        # Sizes, deadlines and connection caps for hostile clients (gateway/limits.py).
        ListenerLimits.from_config(config),
        host=config.host,
        port=config.port,
        loop="uvloop",
        # httptools with a lean request cycle (gateway/http/protocol.py), and an idle keep-alive
        # connection is not cut the instant we shut down.
        http=GatewayHttpProtocol,
        lifespan="on",
        # The gateway logs its own access lines; uvicorn's costs throughput on the hot path.
        access_log=False,
        # Forwarded headers are trusted by the gateway itself, from configured proxies only.
        proxy_headers=False,
        server_header=False,
        log_level=config.log_level,
        log_config=None,  # the gateway's own format (gateway/logs.py): timestamps and PID
        timeout_graceful_shutdown=int(config.drain_timeout),
        # HSTS is added by uvicorn to each HTTPS response: no per-request work in the gateway.
        headers=hsts_headers(config),
        **tls_options(config),
    )


def serve(config: Config) -> None:
    logs.configure(config.log_level)
    if config.tls_acme_store:
        acme_store.prepare(config)
    elif config.tls:
        check_tls_files(config.tls_cert, config.tls_key)
    check_runtime(config)
    with hold_running_lock(config.data_dir) as lock:
        raise_fd_limit()  # every client and upstream connection is a file descriptor
        app = create_app(config)
        sockets = Sockets()
        main, public, aux = build_listeners(app, config, sockets)
        log = logging.getLogger("gateway")
        log.info("gateway serving %s/", config.base_url)
        # A stale or missing build is not an error (pure Python is the same code), but the
        # operator should know the proxy runs at about two thirds of its speed.
        log.log(
            logging.INFO if native.in_use() else logging.WARNING,
            "hot path: %s",
            native.STATUS,
        )
        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                serving = run_listeners(
                    main, public, aux, restart=Restarter(app, main, aux, sockets, lock)
                )
                runner.run(acme_store.serve_with_reload(config, main, serving))
        finally:
            from gateway.admin.discovery import unpublish

            unpublish(config)


class Restarter:
    """SIGHUP (``gateway restart``): hand the sockets to a successor, then drain and exit."""

    def __init__(
        self,
        app: Gateway,
        main: uvicorn.Server,
        aux: list[tuple[uvicorn.Server, list[socket.socket]]],
        sockets: Sockets,
        lock: DataDirLock | None = None,
    ) -> None:
        self.app = app
        self.lock = lock
        self.main = main
        self.aux = [server for server, _ in aux]
        self.sockets = sockets
        self._busy = False
        self._tasks: set[asyncio.Task[Any]] = set()

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.restart()))
        if self.app.access_log is not None:  # logrotate: move the file, then SIGUSR1
            loop.add_signal_handler(signal.SIGUSR1, self.app.access_log.reopen)
        self._spawn(self._announce_when_ready())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def restart(self) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            lock_fd = self.lock.fd if self.lock else None
            sdnotify.reloading()
            if not await hand_over(self.sockets.named, self._stop, lock_fd):
                if self.lock:
                    self.lock.claim()  # the successor may have written its PID before failing
                sdnotify.ready()  # still the main process
        finally:
            self._busy = False

    def _stop(self) -> None:
        # Every listener stops accepting now; the successor holds the same sockets.
        for server in (self.main, *self.aux):
            server.should_exit = True

    async def _announce_when_ready(self) -> None:
        """Ready = listening, routes loaded, and every team healthy (or the hold timeout)."""
        while not self.main.started:  # noqa: ASYNC110 (uvicorn exposes a flag, not an event)
            await asyncio.sleep(0.05)
        deadline = time.monotonic() + max(self.app.config.deploy_timeout, 5.0)
        while time.monotonic() < deadline:
            services = self.app.fleet.services.values()
            if self.app.fleet.ready and all(s.state() != "starting" for s in services):
                break
            await asyncio.sleep(0.05)
        announce_ready()
        sdnotify.ready()  # systemd: this process is the service's main PID now


def build_listeners(
    app: Gateway, config: Config, sockets: Sockets | None = None
) -> tuple[uvicorn.Server, list[socket.socket], list[tuple[uvicorn.Server, list[socket.socket]]]]:
    """Bind every socket first, so a port in use is a clean error before anything starts.

    A restarting gateway passes its sockets on (``gateway/restart.py``): they are taken over,
    not bound again."""
    from gateway.admin import admin_listener

    sockets = sockets or Sockets()
    public = [sockets.get("public", lambda: bind_tcp(config.host, config.port, "--port"))]
    main = MainServer(uvicorn_config(app, config))
    aux: list[tuple[uvicorn.Server, list[socket.socket]]] = []
    if config.tls and config.redirect_port:
        sock = sockets.get(
            "redirect", lambda: bind_tcp(config.host, config.redirect_port, "--redirect-port")
        )
        # Public too: the same protocol and limits as the main listener (its own counts).
        redirect = ListenerConfig(
            RedirectToHTTPS(config),
            ListenerLimits.from_config(config),
            lifespan="off",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            log_level=config.log_level,
            log_config=None,  # gateway/logs.py configures logging once for every listener
            http=GatewayHttpProtocol,
        )
        aux.append((AuxServer(redirect), [sock]))
    aux.append(admin_listener(app, sockets))
    return main, public, aux


def _loop_factory() -> Any:
    import uvloop

    return uvloop.new_event_loop
