"""Accounts, teams and single sign-on across every team subdomain (issue 5).

``Auth`` (``service.py``) is the one object the gateway holds: ``authorize`` runs on every
team-host request, the apex pages (``views_*.py``) and the CLI (``cli.py``) use the rest.
"""

from gateway.auth.service import Auth

__all__ = ["Auth"]
