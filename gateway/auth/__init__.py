"""Accounts, teams and single sign-on across every team subdomain.

``Auth`` (``gatekeeper.py``) is the one object the gateway holds: ``authorize`` runs on every
team-host request, the apex pages (``views_*.py``) and the CLI (``cli.py``) use the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.auth.gatekeeper import Auth

__all__ = ["Auth"]


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): the CLI imports gateway.auth.accounts without loading the web stack.
    if name == "Auth":
        from gateway.auth.gatekeeper import Auth

        return Auth
    raise AttributeError(name)
