"""Several listeners in one process and one event loop: public (HTTP or HTTPS), the plain-HTTP
redirect to HTTPS, and the admin API.

Each listener is a uvicorn ``Server``; only the public one handles signals and the app's
lifespan, and the others stop when it stops. Sockets are bound up front, so a port in use is a
clean error before anything starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from gateway.acme_store import tls_files
from gateway.config import Config
from gateway.errors import ConfigError
from gateway.routing.table import normalize_host


def bind_tcp(host: str, port: int, flag: str = "") -> socket.socket:
    """Bind a listener; ``flag`` (``--port``, ``--admin-port``...) is named if it fails."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        fix = f"; stop what listens there or choose another {flag}" if flag else ""
        which = f" ({flag} {port})" if flag else ""
        raise ConfigError(f"cannot listen on {host}:{port}{which}: {exc.strerror}{fix}") from exc
    sock.set_inheritable(True)
    return sock


def bind_unix(path: str) -> socket.socket:
    p = Path(path)
    if p.exists() or p.is_symlink():
        if not stat.S_ISSOCK(p.lstat().st_mode):
            raise ConfigError(f"{path} exists and is not a socket; refusing to replace it")
        p.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket is the admin credential's first line: owner only
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {path}: {exc.strerror}") from exc
    finally:
        os.umask(old)
    return sock


def hsts_headers(config: Config) -> list[tuple[str, str]]:
    """uvicorn adds these to every response itself: HSTS costs the proxy path nothing."""
    if not config.tls or config.hsts_max_age <= 0:
        return []
    # includeSubDomains: every team lives on a subdomain covered by the same wildcard cert.
    return [("strict-transport-security", f"max-age={config.hsts_max_age}; includeSubDomains")]


def tls_options(config: Config) -> dict[str, Any]:
    if not config.tls:
        return {}
    if config.tls_acme_store:
        files = tls_files(config)  # written from the store by acme_store.prepare()
        return {"ssl_certfile": str(files.cert), "ssl_keyfile": str(files.key)}
    return {"ssl_certfile": config.tls_cert, "ssl_keyfile": config.tls_key}


class RedirectToHTTPS:
    """The plain-HTTP listener: 308 to the same path on HTTPS, only for our own hosts."""

    def __init__(self, config: Config) -> None:
        self.domain = config.domain
        self.port_suffix = "" if config.port == 443 else f":{config.port}"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        host = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = normalize_host(value)
                break
        # Never an open redirect: only the apex and its subdomains are sent on.
        if host is None or not (host == self.domain or host.endswith("." + self.domain)):
            await _plain(send, 400, b"unknown host\n")
            return
        target = f"https://{host}{self.port_suffix}" + scope.get("raw_path", b"/").decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        await send(
            {
                "type": "http.response.start",
                "status": 308,
                "headers": [
                    (b"location", target.encode("latin-1")),
                    (b"content-length", b"0"),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})


async def _plain(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class MainServer(uvicorn.Server):
    """The public listener: it owns SIGINT/SIGTERM. After a graceful stop the process exits 0
    instead of re-raising the signal (uvicorn's default), so supervisors see a clean exit."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()


class AuxServer(uvicorn.Server):
    """A listener that leaves signals to the main server and stops when it stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def aux_config(app: Any, config: Config, **extra: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        lifespan="off",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        log_level=config.log_level,
        log_config=None,  # gateway/logs.py configures logging once for every listener
        http="httptools",
        **extra,
    )


async def run_listeners(
    main: uvicorn.Server,
    main_sockets: list[socket.socket],
    aux: Sequence[tuple[uvicorn.Server, list[socket.socket]]],
    restart: Any = None,
) -> None:
    """Serve everything until the main server exits (a signal), then stop the others."""
    if restart is not None:
        restart.install()
    tasks = [asyncio.ensure_future(server.serve(sockets=socks)) for server, socks in aux]
    try:
        await main.serve(sockets=main_sockets)
    finally:
        for server, _ in aux:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
