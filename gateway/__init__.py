"""gateway: the public entrypoint of a hosted-Datasette service.

from gateway import create_app, Config
app = create_app(Config(domain="example.org", data_dir="/var/lib/gateway"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway import native

# Before any hot module is imported: use the mypyc build when it matches the sources.
native.activate()

if TYPE_CHECKING:
    from gateway.app import create_app
    from gateway.config import Config

__all__ = ["Config", "create_app"]


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): every `gateway` CLI command imports this package, and importing the
    # whole app here would slow every `gateway teams create` by the app's import time.
    if name == "create_app":
        from gateway.app import create_app

        return create_app
    if name == "Config":
        from gateway.config import Config

        return Config
    raise AttributeError(f"module 'gateway' has no attribute {name!r}")
