"""certs/: Traefik's files must agree with the gateway's own settings (certs/gateway.env).

The real Traefik runs these files in tests/test_traefik_https.py and tests/test_edge_upgrade.py
(what Traefik itself accepts and does). What only a cross-check can see stays here: that the
files agree with certs/gateway.env and docker-compose.yml (domain, port, trusted proxies,
timeouts against the gateway's own settings, the Docker socket). ``problems`` lists every
disagreement; the shipped files must have none, and changing one file without the other must
produce one (the mutation tests below).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import Config, from_env
from gateway.edge.traefik_config import EdgeConfigError, check_upgradable
from gateway.server import uvicorn_config

CERTS = Path(__file__).resolve().parent.parent / "certs"
UPLOAD_BYTES = 1024**3
SLOW_LINK = 10e6 / 8  # bytes/s: a 1 GiB upload must survive a 10 Mbit/s link
# The gateway's own keep-alive, read from the uvicorn settings it runs with (not a copy).
UVICORN_KEEPALIVE = float(uvicorn_config(None, Config()).timeout_keep_alive)


def load() -> dict[str, Any]:
    env = {}
    for line in (CERTS / "gateway.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return {
        "env": env,
        "static": yaml.safe_load((CERTS / "traefik.yml").read_text()),
        "dynamic": yaml.safe_load((CERTS / "dynamic.yml").read_text()),
        "compose": yaml.safe_load((CERTS / "docker-compose.yml").read_text()),
    }


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(value))
    assert m, f"not a duration: {value!r}"
    return float(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m[2]]


def problems(files: dict[str, Any]) -> list[str]:
    env, static, dynamic, compose = (files[k] for k in ("env", "static", "dynamic", "compose"))
    out: list[str] = []
    config = from_env(env)  # the gateway accepts every setting given to it
    domain = config.domain
    http = dynamic["http"]
    [(_name, router)] = http["routers"].items()
    esc = re.escape(domain)

    # Routing: the apex and every subdomain, on the TLS entrypoint, to the gateway.
    rule = router["rule"]
    if f"Host(`{domain}`)" not in rule:
        out.append(f"router rule does not match the apex {domain}")
    regexps = re.findall(r"HostRegexp\(`([^`]+)`\)", rule)
    probe = f"alpha.{domain}"
    if not any(re.fullmatch(rx, probe) for rx in regexps) or any(
        re.fullmatch(rx, f"alpha.{domain}.evil.org") for rx in regexps
    ):
        out.append(f"router rule must match <team>.{domain} and nothing else ({esc})")
    entry = static["entryPoints"]
    if router["entryPoints"] != ["websecure"] or entry["websecure"]["address"] != ":443":
        out.append("the router must listen on websecure (:443) only")
    redirect = entry["web"]["http"]["redirections"]["entryPoint"]
    if entry["web"]["address"] != ":80" or redirect["to"] != "websecure":
        out.append("web (:80) must redirect to websecure")
    if config.base_url != f"https://{domain}":
        out.append(f"GATEWAY_PUBLIC_URL must be https://{domain}")

    # The wildcard certificate, by DNS-01 with DigitalOcean.
    tls = router["tls"]
    resolvers = static["certificatesResolvers"]
    if tls["domains"] != [{"main": domain, "sans": [f"*.{domain}"]}]:
        out.append(f"certificate domains must be {domain} + *.{domain}")
    acme = resolvers[tls["certResolver"]]["acme"]
    if acme["dnsChallenge"]["provider"] != "digitalocean":
        out.append("the default DNS-01 provider is digitalocean")
    if "DO_AUTH_TOKEN" not in compose["services"]["traefik"]["environment"]:
        out.append("Traefik needs DO_AUTH_TOKEN from the environment")

    # Traefik -> gateway: the gateway's own address, and the gateway trusts only Traefik.
    service = http["services"][router["service"]]["loadBalancer"]
    urls = [s["url"] for s in service["servers"]]
    if urls != [f"http://{config.host}:{config.port}"]:
        out.append(f"Traefik sends to {urls}, the gateway listens on {config.host}:{config.port}")
    traefik_ip = "127.0.0.1" if compose["services"]["traefik"].get("network_mode") == "host" else ""
    if config.trusted_proxy_set != {traefik_ip}:
        out.append(f"GATEWAY_TRUSTED_PROXIES must be exactly Traefik's address {traefik_ip}")
    if entry["websecure"].get("forwardedHeaders", {}).get("trustedIPs"):
        out.append("Traefik must not trust client-sent forwarded headers")
    if not service["passHostHeader"]:
        out.append("the gateway routes by Host: passHostHeader must be true")

    # Retry on network errors only, and only on this hop: one retry.
    mws = router.get("middlewares", [])
    retries = [m for m in mws if "retry" in http["middlewares"][m]]
    if len(retries) != 1 or http["middlewares"][retries[0]]["retry"]["attempts"] != 2:
        out.append("exactly one retry middleware (attempts: 2) on the gateway router")

    # Timeouts sized for 1 GiB uploads; keep-alive below the gateway's.
    timeouts = entry["websecure"]["transport"]["respondingTimeouts"]
    if config.upload_max_bytes > UPLOAD_BYTES or seconds(timeouts["readTimeout"]) < (
        config.upload_max_bytes / SLOW_LINK
    ):
        out.append("websecure readTimeout is too short for the largest upload")
    fwd = http["serversTransports"][service["serversTransport"]]["forwardingTimeouts"]
    if seconds(fwd["responseHeaderTimeout"]) <= config.read_timeout:
        out.append("responseHeaderTimeout must exceed the gateway's read_timeout")
    if seconds(fwd["idleConnTimeout"]) >= UVICORN_KEEPALIVE:
        out.append(
            f"idleConnTimeout must be below the gateway's {UVICORN_KEEPALIVE:g} s keep-alive"
        )

    # In-place upgrades (gateway edge upgrade): shared ports, and a container stop that
    # waits for in-flight requests (graceTimeOut) rather than killing them.
    try:
        check_upgradable(static)
    except EdgeConfigError as exc:
        out.append(str(exc))
    web_grace = grace_seconds(static)
    stop = compose["services"]["traefik"].get("stop_grace_period", "10s")
    if seconds(stop) <= web_grace:
        out.append(f"traefik's stop_grace_period must exceed its lifeCycle ({web_grace:.0f} s)")

    # Containers: never exposed by Traefik; the Docker socket only in the gateway.
    docker = static["providers"].get("docker")
    if docker is not None and docker.get("exposedByDefault") is not False:
        out.append("a Docker provider must have exposedByDefault: false")
    for svc_name, svc in compose["services"].items():
        has_socket = any("docker.sock" in v for v in svc.get("volumes", []))
        if has_socket != (svc_name == "gateway"):
            out.append(f"the Docker socket must be mounted into the gateway only ({svc_name})")
    if compose["services"]["gateway"]["env_file"] != "gateway.env":
        out.append("the gateway must read certs/gateway.env")
    return out


def grace_seconds(static: dict[str, Any]) -> float:
    """The longest requestAcceptGraceTimeout + graceTimeOut of the entrypoints."""
    out = 0.0
    for ep in static["entryPoints"].values():
        life = ep.get("transport", {}).get("lifeCycle", {})
        total = seconds(life.get("requestAcceptGraceTimeout", "0s"))
        out = max(out, total + seconds(life.get("graceTimeOut", "10s")))
    return out


def test_shipped_files_agree() -> None:
    assert problems(load()) == []


def _set_env(files: dict[str, Any], key: str, value: str) -> None:
    files["env"][key] = value


MUTATIONS = {
    "domain only in gateway.env": lambda f: (
        _set_env(f, "GATEWAY_DOMAIN", "other.org"),
        _set_env(f, "GATEWAY_PUBLIC_URL", "https://other.org"),
    ),
    "gateway port only": lambda f: _set_env(f, "GATEWAY_PORT", "9000"),
    "trusted proxies widened": lambda f: _set_env(f, "GATEWAY_TRUSTED_PROXIES", "0.0.0.0,1.2.3.4"),
    "traefik backend moved": lambda f: f["dynamic"]["http"]["services"]["gateway"]["loadBalancer"][
        "servers"
    ][0].update(url="http://127.0.0.1:8080"),
    "entrypoint port": lambda f: f["static"]["entryPoints"]["websecure"].update(address=":8443"),
    "short upload timeout": lambda f: f["static"]["entryPoints"]["websecure"]["transport"][
        "respondingTimeouts"
    ].update(readTimeout="60s"),
    "socket in traefik": lambda f: f["compose"]["services"]["traefik"]["volumes"].append(
        "/var/run/docker.sock:/var/run/docker.sock"
    ),
    "docker provider exposed": lambda f: f["static"]["providers"].update(docker={}),
    "no wildcard": lambda f: f["dynamic"]["http"]["routers"]["gateway"]["tls"]["domains"][0].update(
        sans=[]
    ),
    "no reusePort": lambda f: f["static"]["entryPoints"]["web"].pop("reusePort"),
    "short stop grace": lambda f: f["compose"]["services"]["traefik"].update(
        stop_grace_period="30s"
    ),
    "long idle": lambda f: f["dynamic"]["http"]["serversTransports"]["gateway"][
        "forwardingTimeouts"
    ].update(idleConnTimeout="90s"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_changing_one_side_only_fails(name: str) -> None:
    files = copy.deepcopy(load())
    MUTATIONS[name](files)
    assert problems(files), f"{name}: the check did not notice"
