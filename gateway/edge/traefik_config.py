"""Traefik's static configuration as ``gateway edge upgrade`` needs it.

The upgrade starts the new Traefik on the operator's own static file with one addition: the
API on a loopback-only entrypoint at a free port (``traefik``, the name Traefik's
``api.insecure`` serves on), which is how the upgrade learns that the new process has built
its routers. Nothing else changes, so the new process serves exactly what the old one did.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from gateway.errors import GatewayError

API_ENTRYPOINT = "traefik"


class EdgeConfigError(GatewayError):
    """The static configuration cannot be upgraded in place (the message says why)."""


def load_static(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise EdgeConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise EdgeConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("entryPoints"), dict):
        raise EdgeConfigError(f"{path} has no entryPoints: not a Traefik static configuration")
    return data


def duration(value: object) -> float:
    """Traefik's durations: ``2s``, ``100ms``, ``1h``, or a bare number of seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", str(value).strip())
    if not m:
        raise EdgeConfigError(f"not a duration: {value!r}")
    return float(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m[2]]


def served_entrypoints(static: dict[str, Any]) -> dict[str, int]:
    """The TCP entrypoints the handover moves (name -> port), the API's own excluded."""
    out = {}
    for name, ep in static["entryPoints"].items():
        address = str((ep or {}).get("address", ""))
        if name == API_ENTRYPOINT or address.endswith("/udp"):
            continue
        m = re.fullmatch(r"(.*):(\d+)(/tcp)?", address)
        if not m:
            raise EdgeConfigError(f"entrypoint {name}: cannot read the port of {address!r}")
        out[name] = int(m[2])
    return out


def check_upgradable(static: dict[str, Any]) -> None:
    """Every moved entrypoint must share its port (reusePort) and keep accepting for a
    while after SIGTERM (requestAcceptGraceTimeout), or the handover would lose requests."""
    for name in served_entrypoints(static):
        ep = static["entryPoints"][name]
        if ep.get("reusePort") is not True:
            raise EdgeConfigError(
                f"entrypoint {name} has no 'reusePort: true': the running Traefik cannot share "
                "its port (restart it once with that setting; docs/production.md)"
            )
        life = ((ep.get("transport") or {}).get("lifeCycle")) or {}
        if duration(life.get("requestAcceptGraceTimeout", 0)) <= 0:
            raise EdgeConfigError(
                f"entrypoint {name} needs transport.lifeCycle.requestAcceptGraceTimeout > 0: "
                "the old Traefik must accept the connections already queued for it"
            )


def accept_grace(static: dict[str, Any]) -> float:
    """How long the old process keeps its listeners after SIGTERM (the longest of them)."""
    longest = 0.0
    for name in served_entrypoints(static):
        life = ((static["entryPoints"][name].get("transport") or {}).get("lifeCycle")) or {}
        longest = max(longest, duration(life.get("requestAcceptGraceTimeout", 0)))
    return longest


def with_api(static: dict[str, Any], api_port: int) -> dict[str, Any]:
    """The operator's configuration plus Traefik's API on 127.0.0.1:``api_port`` only.

    ``reusePort`` lets Traefik join a port held for it (``upgrade.reserve_port``)."""
    out = copy.deepcopy(static)
    out["entryPoints"][API_ENTRYPOINT] = {"address": f"127.0.0.1:{api_port}", "reusePort": True}
    out["api"] = {**(out.get("api") or {}), "insecure": True, "dashboard": False}
    return out


def write(config: dict[str, Any], path: Path) -> None:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
