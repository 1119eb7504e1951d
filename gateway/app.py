"""``create_app(config)``: the gateway as one ASGI callable, and its composition root.

``Gateway.__init__`` builds the parts bottom-up (store, config-derived settings, routing,
runtime, fleet, deployer, backups, stats, auth, uploads) and hands each surface (the apex
site, account pages, operator dashboard, health) only the objects it uses. No other module
imports ``Gateway``: the admin listener, metrics and restores name what they read in small
Protocols (``admin/parts.py``, ``observability/prom.py``, ``backup/restore.py``).

The request path is one straight line:

    host -> team -> (auth) -> upload page | proxy

The apex host serves the gateway's own pages through Starlette; team hosts go through the raw
ASGI proxy, which keeps the hot path lean.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import sqlite3
from typing import Any

from starlette.applications import Starlette

from gateway.admin.api import status_view
from gateway.admin.dashboard import apex_ops_routes
from gateway.auth.gatekeeper import Auth
from gateway.auth.pages import auth_routes
from gateway.backup import Replication
from gateway.config import Config
from gateway.context import CONTEXT, RequestContext
from gateway.deploy.service import Deployer
from gateway.diskspace import SpaceWatch, no_space, out_of_space
from gateway.errors import BadRequest, ClientGone, HTTPError, UnknownHost, URITooLong
from gateway.filemodes import tighten
from gateway.fleet import Fleet
from gateway.observability import RequestStats, open_access_log
from gateway.observability.failures import failure_kind
from gateway.observability.observe import Observer
from gateway.observability.probes import health_routes
from gateway.pages.site import build_site
from gateway.pages.templates import make_templates
from gateway.responses import send_error, team_links
from gateway.routing.exchange import Counters, CutConnection, ProxySettings
from gateway.routing.health_checks import HealthMonitor
from gateway.routing.proxy import Proxy
from gateway.routing.signature import RequestSigner
from gateway.routing.table import RouteTable, normalize_host
from gateway.runtimes.base import Runtime
from gateway.store import Store, open_store
from gateway.upload import UploadApp

log = logging.getLogger("gateway")


class Gateway:
    def __init__(self, config: Config, *, runtime: Runtime | None = None) -> None:
        self.config = config
        self.max_target = config.max_request_line
        tighten(config)  # umask 077, and an older install's files made private (filemodes.py)
        self.store: Store = open_store(config.control_db)
        self.gateway_id = self.store.ensure_setting("gateway_id")
        self.table = RouteTable()
        self.counters = Counters()
        self.proxy = Proxy(
            ProxySettings(
                connect_timeout=config.connect_timeout,
                read_timeout=config.read_timeout,
                hold_timeout=config.hold_timeout,
                retry_buffer=config.retry_buffer,
                trusted_proxies=config.trusted_proxy_set,
                cookie_domain=config.domain.encode(),
            ),
            self.counters,
        )
        self.health = HealthMonitor(config.health_interval, config.health_timeout)
        self.runtime = runtime or self._make_runtime()
        # Every request to an instance carries the gateway's signature (routing/signature.py).
        self.signer = RequestSigner(self.instance_secret)
        self.fleet = Fleet(config, self.store, self.runtime, self.table, self.health, self.signer)
        self.deployer = Deployer(self.fleet, config.deploy_timeout)
        self.backups = Replication(config, self.store)  # Litestream (gateway/backup/)
        self.fleet.volume_guard = self.backups.held  # a deleted team's final sync comes first
        # Observability: plain counters per request, exported at scrape time (admin /metrics).
        self.stats = RequestStats()
        self.access_log = open_access_log(config.access_log, config.trusted_proxy_set)
        self.space = SpaceWatch(config.data_dir, config.min_free_mb)
        self.templates = make_templates()  # one Jinja environment for every Starlette page
        self.auth = Auth(config, self.store, self.signer, self.instance_secret)
        self.upload = UploadApp(config, self.store, self.templates)
        self.site = self._build_site()
        self.observed = Observer(self.handle, self.stats, self.access_log)

    def _build_site(self) -> Starlette:
        """The apex: its own pages, plus health, the operator dashboard and the account pages."""
        templates = self.templates
        mounted = [
            *health_routes(self.fleet, self.problem, "/-/gateway"),
            *apex_ops_routes(self, self.auth, templates),  # the operator dashboard (gateway/admin)
            # register, login, dashboard, teams (gateway/auth)
            *auth_routes(self.auth, self.config, self.store, self.fleet, self.upload, templates),
        ]
        status = functools.partial(status_view, self)
        return build_site(self.config, self.store, self.auth, templates, status, mounted)

    def problem(self) -> str:
        """Why requests cannot be served now (the runtime, the disk), "" when nothing."""
        return self.runtime.problem() or self.space.problem()

    def _make_runtime(self) -> Runtime:
        if self.config.runtime == "local":
            from gateway.runtimes.local import LocalRuntime

            return LocalRuntime(self.config, self.store, self.instance_secret)
        if self.config.runtime == "swarm":
            from gateway.runtimes.swarm.runtime import SwarmRuntime

            return SwarmRuntime(self.config, self.store, self.instance_secret, self.gateway_id)
        from gateway.runtimes.docker.runtime import DockerRuntime

        return DockerRuntime(self.config, self.store, self.instance_secret, self.gateway_id)

    def instance_secret(self, team: str) -> str:
        """Each instance signs its own cookies with its own secret, kept in the store."""
        return self.store.ensure_setting(f"instance_secret:{team}")

    # -- ASGI ----------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.observed(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)
        else:  # websockets: Datasette has none to proxy
            await send({"type": "websocket.close", "code": 1008})

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            host = request_host(scope)
            if len(scope.get("raw_path") or b"") + len(scope["query_string"]) > self.max_target:
                raise URITooLong(f"the request target is longer than {self.max_target} bytes")
            if host == self.config.domain:
                await self.site(scope, receive, send)
                return
            service = self.table.lookup(host)
            if service is None:
                raise UnknownHost(
                    f"There is no team at {host}. Teams live at <team>.{self.config.domain}."
                )
            ctx: RequestContext = scope[CONTEXT]  # made by the server or the Observer
            ctx.team = service.name  # for metrics, the access log and error pages
            service.touch()  # idle tracking; the first request to a sleeping team wakes it
            extra = self.auth.authorize(scope, ctx, service)
            path = scope["path"]
            if path == "/-/upload-csv" or path.startswith("/-/upload-csv/"):
                await self.upload(scope, receive, send, service)
                return
            await self.proxy(scope, receive, send, service, ctx, extra)
        except HTTPError as err:
            self.counters.error(failure_kind(err))
            await send_error(scope, send, err, links=self.error_links(scope, err))
        except (ClientGone, CutConnection):
            return
        except (OSError, sqlite3.Error) as exc:
            if not out_of_space(exc):
                raise
            log.warning("out of storage space: %s", exc)
            full = no_space()
            self.counters.error(str(full.status))
            await send_error(scope, send, full, links=self.error_links(scope, full))

    def error_links(self, scope: dict[str, Any], err: HTTPError) -> tuple[tuple[str, str], ...]:
        """Links onward on the gateway's own error pages on team hosts (HTML only; the apex's
        pages add their own)."""
        ctx: RequestContext | None = scope.get(CONTEXT)
        if (ctx is not None and ctx.team) or isinstance(err, UnknownHost):
            return team_links(self.config.base_url, self.config.team_url, scope, err)
        return ()

    async def lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        await self.auth.prepare()
        # Import workers die with the gateway: fail what they left running, drop staging tables.
        await self.upload.runner.startup()
        await self.fleet.start()
        await self.backups.start()
        # Everything built so far (modules, Starlette routes, the fleet) lives as long as the
        # process: move it out of the collector's sight, so the collections that the hot
        # path's short-lived objects trigger stop re-walking it.
        gc.collect()
        gc.freeze()

    async def shutdown(self) -> None:
        await self.upload.runner.close()
        await self.fleet.close()
        await self.backups.close()
        with contextlib.suppress(Exception):
            self.store.close()
        if self.access_log is not None:
            self.access_log.close()


def request_host(scope: dict[str, Any]) -> str:
    raw: bytes | None = None
    # Typed: mypyc then walks a list and compares bytes natively instead of through
    # generic iteration and PyObject_RichCompare (per header; a proxy in front adds seven).
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"host":
            if raw is not None:
                raise BadRequest("more than one Host header")
            raw = value
    if raw is None:
        raise BadRequest("missing Host header")
    host = _HOSTS.get(raw)
    if host is None:
        host = normalize_host(raw)
        if host is None:
            raise BadRequest("malformed Host header")
        if len(_HOSTS) >= 1024:  # clients choose the Host: keep the memo bounded
            _HOSTS.clear()
        _HOSTS[raw] = host
    return host


# Raw Host header -> normalized host. A gateway sees few distinct values; the memo saves
# normalize_host's per-character check on every request.
_HOSTS: dict[bytes, str] = {}


def create_app(config: Config, *, runtime: Runtime | None = None) -> Gateway:
    """Build the whole gateway for ``config``: the Python API for appliances and tests."""
    return Gateway(config, runtime=runtime)
