"""The admin listener: a JSON API, Prometheus metrics and the operator dashboard, on
127.0.0.1 or a unix socket, in the gateway's own process and event loop."""

from __future__ import annotations

from typing import Any

__all__ = ["admin_listener", "build_admin_app"]

_LAZY = {
    "admin_listener": "gateway.admin.listener",
    "build_admin_app": "gateway.admin.listener_app",
}


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): CLI commands import gateway.admin.discovery without the web stack.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
