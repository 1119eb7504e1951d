"""certs/gateway-tls/: the fast shape, shipped as files (docs/production.md, "Which shape to run").

Traefik only obtains and renews the wildcard certificate into ``acme.json``; the gateway serves
HTTPS on :443 (and the redirect on :80) itself with that certificate. Tested like the other
production files:

- the compose file as ``docker-compose config`` resolves it (its two env files layered, later
  wins), cross-checked against the Traefik files and the Traefik-in-front shape in ``certs/``
  (``problems``; each mutation must produce one);
- the real Traefik on the shipped ``traefik.yml`` and ``dynamic.yml`` (ports, store path and
  an unreachable ACME CA swapped in): the router that names the certificate loads, proxies to
  nothing, and Traefik creates its store;
- the real ``gateway serve`` with the resolved environment (ports, data dir, local runtime and
  the store's path swapped in) on that very store: refused in one line while Traefik has no
  certificate yet, then HTTPS for the apex and team hosts with the store's certificate, HSTS,
  the redirect, and no trust in a client's X-Forwarded-For.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509

from gateway.config import from_env
from gateway.edge import traefik_config
from tests import acme_support
from tests import traefik_harness as harness
from tests.listen_fds import activated, listening_socket, port_of

CERTS = harness.CERTS
FAST = CERTS / "gateway-tls"
GATEWAY = str(Path(sys.executable).with_name("gateway"))


def resolved_compose(path: Path) -> dict[str, Any]:
    """The compose file as Docker Compose itself resolves it (env files, interpolation)."""
    tool = shutil.which("docker-compose")
    assert tool, "docker-compose is missing: scripts/system-deps.sh installs it"
    done = subprocess.run(
        [tool, "-f", str(path), "config"],
        env={**os.environ, "DO_AUTH_TOKEN": "dummy-for-the-test"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(yaml.safe_load(done.stdout))


def load() -> dict[str, Any]:
    return copy.deepcopy(_load())


@functools.cache  # one `docker-compose config` (seconds) for all the checks below
def _load() -> dict[str, Any]:
    compose = resolved_compose(FAST / "docker-compose.yml")
    return {
        "compose": compose,
        "env": {k: str(v) for k, v in compose["services"]["gateway"]["environment"].items()},
        "static": yaml.safe_load((FAST / "traefik.yml").read_text()),
        "dynamic": yaml.safe_load((FAST / "dynamic.yml").read_text()),
        "front_static": yaml.safe_load((CERTS / "traefik.yml").read_text()),
        "front_compose": yaml.safe_load((CERTS / "docker-compose.yml").read_text()),
    }


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """container path -> (host path, mode) of a resolved service."""
    out = {}
    for volume in service.get("volumes", []):
        host, inside, *mode = str(volume).split(":")
        out[inside] = (host, mode[0] if mode else "rw")
    return out


def host_path(service: dict[str, Any], inside: str) -> tuple[str, str] | None:
    """The host path and mode behind a path inside the container (longest mount wins)."""
    best = ""
    for mount in mounts(service):
        if (inside == mount or inside.startswith(mount.rstrip("/") + "/")) and len(mount) > len(
            best
        ):
            best = mount
    if not best:
        return None
    host, mode = mounts(service)[best]
    return host + inside[len(best) :], mode


def problems(files: dict[str, Any]) -> list[str]:
    env, compose, static, dynamic = (files[k] for k in ("env", "compose", "static", "dynamic"))
    gateway, traefik = compose["services"]["gateway"], compose["services"]["traefik"]
    out: list[str] = []
    config = from_env(env)  # the gateway accepts every setting given to it
    domain = config.domain

    # The gateway is the public edge: HTTPS on :443, the redirect on :80, on every address.
    if (config.host, config.port, config.redirect_port) != ("0.0.0.0", 443, 80):
        out.append("the gateway must serve :443 and redirect :80 on 0.0.0.0")
    if config.base_url != f"https://{domain}":
        out.append(f"GATEWAY_PUBLIC_URL must be https://{domain}")
    if config.trusted_proxy_set:
        out.append("nothing is in front of the gateway: GATEWAY_TRUSTED_PROXIES must be empty")

    # Traefik proxies nothing and holds no public port: its entrypoints are on loopback.
    for name, ep in static["entryPoints"].items():
        address = str(ep["address"])
        if not address.startswith("127.0.0.1:") or address.rsplit(":", 1)[1] in ("80", "443"):
            out.append(f"Traefik's entrypoint {name} must be on loopback, off :80/:443")
    [(_name, router)] = dynamic["http"]["routers"].items()
    if router["service"] != "noop@internal":
        out.append("the certificate's router must proxy nothing (service noop@internal)")
    if dynamic["http"].get("services"):
        out.append("no service: Traefik sends no request anywhere in this shape")
    if not set(router["entryPoints"]) <= set(static["entryPoints"]):
        out.append("the certificate's router must sit on Traefik's entrypoint")

    # The certificate Traefik obtains is the one the gateway reads.
    tls = router["tls"]
    if tls["domains"] != [{"main": domain, "sans": [f"*.{domain}"]}]:
        out.append(f"certificate domains must be {domain} + *.{domain}")
    resolvers = static["certificatesResolvers"]
    if tls["certResolver"] not in resolvers:
        out.append(f"the router's resolver {tls['certResolver']} is not defined")
    if config.tls_acme_resolver not in ("", tls["certResolver"]):
        out.append("GATEWAY_TLS_ACME_RESOLVER must name the router's resolver")
    if resolvers != files["front_static"]["certificatesResolvers"]:
        out.append("the resolver must be certs/traefik.yml's (switching shapes keeps the account)")
    storage = resolvers.get(tls["certResolver"], {}).get("acme", {}).get("storage", "")
    written = host_path(traefik, storage)
    read = host_path(gateway, config.tls_acme_store)
    if written is None or written[1] != "rw":
        out.append(f"Traefik's store {storage} must be on a writable mount")
    if read is None or read[1] != "ro":
        out.append(f"the gateway's {config.tls_acme_store} must be a read-only mount")
    if written is None or read is None or written[0] != read[0]:
        out.append(f"the gateway reads {read}, Traefik writes {written}: not the same file")
    if "DO_AUTH_TOKEN" not in traefik.get("environment", {}):
        out.append("Traefik needs DO_AUTH_TOKEN from the environment")
    provider = static["providers"]["file"]["filename"]
    if host_path(traefik, provider) is None:
        out.append(f"Traefik's {provider} is not mounted")
    if static["providers"].get("docker") is not None:
        out.append("Traefik needs no Docker provider")

    # The gateway runs as in the other shape: same build, supervisor, grace; same Traefik.
    front = files["front_compose"]["services"]
    for key in ("image", "command", "stop_grace_period", "network_mode"):
        if gateway.get(key) != front["gateway"].get(key):
            out.append(f"the gateway's {key} differs from certs/docker-compose.yml")
    if traefik["image"] != front["traefik"]["image"]:
        out.append("Traefik's image differs from certs/docker-compose.yml (the tested version)")
    for svc_name, svc in compose["services"].items():
        has_socket = any("docker.sock" in inside for inside in mounts(svc))
        if has_socket != (svc_name == "gateway"):
            out.append(f"the Docker socket must be mounted into the gateway only ({svc_name})")
    return out


def test_shipped_files_agree() -> None:
    assert problems(load()) == []


def _gateway(f: dict[str, Any]) -> dict[str, Any]:
    return dict(f["compose"]["services"]["gateway"])


MUTATIONS: dict[str, Callable[[dict[str, Any]], object]] = {
    "domain only in the env": lambda f: f["env"].update(
        GATEWAY_DOMAIN="other.org", GATEWAY_PUBLIC_URL="https://other.org"
    ),
    "gateway behind a port": lambda f: f["env"].update(GATEWAY_PORT="8000"),
    "no redirect": lambda f: f["env"].pop("GATEWAY_REDIRECT_PORT"),
    "trusts a proxy": lambda f: f["env"].update(GATEWAY_TRUSTED_PROXIES="127.0.0.1"),
    "another store": lambda f: f["env"].update(GATEWAY_TLS_ACME_STORE="/etc/acme.json"),
    "another resolver": lambda f: f["env"].update(GATEWAY_TLS_ACME_RESOLVER="zerossl"),
    "traefik on 443": lambda f: f["static"]["entryPoints"]["acme"].update(address=":443"),
    "traefik proxies": lambda f: f["dynamic"]["http"]["routers"]["certificate"].update(
        service="gateway"
    ),
    "no wildcard": lambda f: f["dynamic"]["http"]["routers"]["certificate"]["tls"]["domains"][
        0
    ].update(sans=[]),
    "another account": lambda f: f["static"]["certificatesResolvers"]["letsencrypt"]["acme"].update(
        email="else@example.org"
    ),
    "store writable by the gateway": lambda f: f["compose"]["services"]["gateway"].update(
        volumes=[
            v.replace(":ro", ":rw") if "/var/lib/traefik" in v else v
            for v in _gateway(f)["volumes"]
        ]
    ),
    "store not mounted": lambda f: f["compose"]["services"]["gateway"].update(
        volumes=[v for v in _gateway(f)["volumes"] if "/var/lib/traefik" not in v]
    ),
    "socket in traefik": lambda f: f["compose"]["services"]["traefik"]["volumes"].append(
        "/var/run/docker.sock:/var/run/docker.sock:rw"
    ),
    "another gateway command": lambda f: f["compose"]["services"]["gateway"].update(
        command=["python3", "/opt/gateway/gateway.pyz", "serve"]
    ),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_changing_one_side_only_fails(name: str) -> None:
    files = load()
    MUTATIONS[name](files)
    assert problems(files), f"{name}: the check did not notice"


@contextlib.contextmanager
def acme_only_traefik(tmp: Path) -> Iterator[tuple[harness.Traefik, Path]]:
    """certs/gateway-tls/traefik.yml and dynamic.yml (the latter as shipped, unchanged) with
    the entrypoint on a free port, the store in ``tmp`` and ACME pointed at nobody."""
    static = yaml.safe_load((FAST / "traefik.yml").read_text())
    ports = harness.Ports.free()
    [entrypoint] = static["entryPoints"].values()
    entrypoint["address"] = f"127.0.0.1:{ports.websecure}"
    entrypoint["reusePort"] = True  # only so that Traefik joins the port the harness holds
    acme = static["certificatesResolvers"]["letsencrypt"]["acme"]
    nobody, ca_port = harness.refused_port()
    acme["caServer"] = f"https://127.0.0.1:{ca_port}/directory"  # nobody there
    store = tmp / "traefik" / "acme.json"
    store.parent.mkdir(parents=True)
    acme["storage"] = str(store)
    static["providers"]["file"]["filename"] = str(FAST / "dynamic.yml")
    static = traefik_config.with_api(static, ports.api)
    traefik = harness.start(static, ports, tmp, env={"DO_AUTH_TOKEN": "dummy-for-the-test"})
    try:
        yield traefik, store
    finally:
        nobody.close()
        assert traefik.stop() == 0


def gateway_env(tmp: Path, store: Path, port: int, redirect: int) -> dict[str, str]:
    """The gateway's environment as the compose file resolves it, with only what cannot work
    here swapped: loopback and free ports, the test's data dir and store, the local runtime."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(load()["env"])
    env.update(
        GATEWAY_HOST="127.0.0.1",
        GATEWAY_PORT=str(port),
        GATEWAY_REDIRECT_PORT=str(redirect),
        GATEWAY_ADMIN_PORT="0",
        GATEWAY_DATA_DIR=str(tmp / "data"),
        GATEWAY_RUNTIME="local",
        GATEWAY_TLS_ACME_STORE=str(store),
        GATEWAY_TLS_ACME_INTERVAL="0.2",
    )
    return env


class Pinned(httpx.HTTPTransport):
    """tests/edge.py's PinnedTransport, blocking: connect to 127.0.0.1, keep the URL's host for
    the Host header, SNI and the certificate check."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        request.url = request.url.copy_with(host="127.0.0.1")
        request.extensions = {**request.extensions, "sni_hostname": host}
        return super().handle_request(request)


def peer_serial(port: int, host: str, tls: ssl.SSLContext) -> int:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        tls.wrap_socket(raw, server_hostname=host) as conn,
    ):
        der = conn.getpeercert(binary_form=True)
        assert der is not None
        return int(x509.load_der_x509_certificate(der).serial_number)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_traefik_keeps_the_store_and_the_gateway_serves_https_from_it(tmp_path: Path) -> None:
    with acme_only_traefik(tmp_path) as (traefik, store):
        routers = {r["name"]: r for r in httpx.get(f"{traefik.api_url}/api/http/routers").json()}
        router = routers.pop("certificate@file")
        assert router["status"] == "enabled" and router["service"] == "noop@internal"
        assert router["tls"]["certResolver"] == "letsencrypt"
        assert router["tls"]["domains"] == [{"main": "example.org", "sans": ["*.example.org"]}]
        assert {r["provider"] for r in routers.values()} == {"internal"}  # its API's, no other
        services = httpx.get(f"{traefik.api_url}/api/http/services").json()
        assert [s["name"] for s in services if s["provider"] != "internal"] == []
        assert [e for e in traefik.errors() if "acme" not in e.lower()] == []
        # Traefik creates its store at once, empty until its first certificate (0600).
        deadline = time.monotonic() + 30
        while not store.exists():
            assert time.monotonic() < deadline, traefik.log_text()
            time.sleep(0.05)
        assert store.stat().st_mode & 0o777 == 0o600

        # Bound here, passed as LISTEN_FDS to the gateway that serves: no free-port race.
        public, plain = listening_socket(), listening_socket()
        port, redirect = port_of(public), port_of(plain)
        env = gateway_env(tmp_path, store, port, redirect)
        domain = env["GATEWAY_DOMAIN"]
        # First start, before the certificate: one line saying so, nothing bound.
        refused = subprocess.run(
            [GATEWAY, "serve"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert refused.returncode != 0
        assert f"{store} is empty: Traefik has not stored a certificate yet," in refused.stderr
        assert "Traceback" not in refused.stderr

        # Traefik stores the certificate (as after its DNS-01 challenge); the gateway starts.
        certs, chain, key, serial = acme_support.issue(domain, tmp_path / "ca")
        acme_support.write_in_place(store, acme_support.wildcard_store(domain, chain, key))
        log, access = tmp_path / "gateway.log", tmp_path / "access.log"
        env["GATEWAY_ACCESS_LOG"] = str(access)
        argv, fds = activated([GATEWAY, "serve"], public=public, redirect=plain)
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=out, pass_fds=fds)
        public.close()
        plain.close()
        try:
            tls = ssl.create_default_context(cafile=str(certs.ca))
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, log.read_text()[-3000:]
                try:
                    assert peer_serial(port, domain, tls) == serial
                    break
                except ConnectionRefusedError:
                    assert time.monotonic() < deadline, log.read_text()[-3000:]
                    time.sleep(0.1)
            assert peer_serial(port, f"alpha.{domain}", tls) == serial
            with httpx.Client(transport=Pinned(verify=tls), timeout=30) as client:
                r = client.get(
                    f"https://{domain}:{port}/-/gateway/livez",
                    headers={"x-forwarded-for": "203.0.113.9"},
                )
                assert r.status_code == 200
                assert r.headers["strict-transport-security"].startswith("max-age=")
                r = client.get(f"http://alpha.{domain}:{redirect}/data?x=1")
                assert r.status_code == 308
                assert r.headers["location"] == f"https://alpha.{domain}:{port}/data?x=1"
        finally:
            proc.terminate()
            assert proc.wait(30) == 0, log.read_text()[-3000:]
        # Nobody in front: the client's own X-Forwarded-For is not believed.
        [line] = [json.loads(x) for x in access.read_text().splitlines() if "livez" in x]
        assert line["client"] == "127.0.0.1"
