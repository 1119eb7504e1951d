"""What the admin listener reads and drives: a Protocol, so nothing here imports the app.

The gateway built in ``gateway/app.py`` has all of these attributes; tests and appliances
hand that object to ``build_admin_app``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from gateway.backup.restore import RestoreParts
from gateway.observability.prom import MetricsParts

if TYPE_CHECKING:
    from starlette.templating import Jinja2Templates

    from gateway.deploy.service import Deployer
    from gateway.routing.table import RouteTable


class AdminParts(RestoreParts, MetricsParts, Protocol):
    gateway_id: str
    table: RouteTable
    deployer: Deployer
    templates: Jinja2Templates  # the one Jinja environment (pages/templates.py)

    def problem(self) -> str:
        """Why requests cannot be served now (the runtime, the disk), "" when nothing."""
        ...
