"""Mount point of the account pages on the apex site (``gateway/pages/site.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import Route
from starlette.templating import Jinja2Templates

from gateway.auth import views_account, views_teams
from gateway.auth.web import Web

if TYPE_CHECKING:
    from gateway.auth.gatekeeper import Auth
    from gateway.config import Config
    from gateway.fleet import Fleet
    from gateway.store import Store
    from gateway.upload import UploadApp


def auth_routes(
    auth: Auth,
    config: Config,
    store: Store,
    fleet: Fleet,
    upload: UploadApp,
    templates: Jinja2Templates,
) -> list[Route]:
    web = Web(auth, config, store, fleet, upload, templates)
    return [*views_account.routes(web), *views_teams.routes(web)]
