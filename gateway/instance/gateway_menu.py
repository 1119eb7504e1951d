"""Datasette plugin loaded into every team instance: Datasette knows the service around it.

* ``menu_links``: Upload CSV, Dashboard, Members and tokens, the user's other teams, Sign out.
* ``table_actions`` / ``database_actions``: append to or replace a table from a CSV, upload one.
* ``prepare_jinja2_environment``: ``<html lang="en">`` on every Datasette page.

Everything comes from the signed actor (``gateway_plugin.actor_from_request`` verified it): the
gateway adds ``actor["gateway"]`` with the apex URL, this team's slug, the member's role and
their other teams (gateway/auth/gatekeeper.py). No actor (an anonymous reader of a public team), or
an API token's actor without it (a script), means no links: nothing is offered to someone who
cannot use it.
"""

from urllib.parse import urlencode

from datasette import hookimpl
from jinja2 import BaseLoader

UPLOAD = "/-/upload-csv"
# The database uploads go into (the team's data.db, which Datasette names "data").
UPLOAD_DATABASE = "data"


def _info(actor):
    info = (actor or {}).get("gateway")
    if not isinstance(info, dict) or not info.get("apex") or not info.get("slug"):
        return None
    return {**info, "team": team_url(info["apex"], info["slug"])}


def team_url(apex, slug):
    """As the gateway's Config.team_url: the team's host is <slug>.<apex host>."""
    scheme, _, rest = apex.partition("://")
    return f"{scheme}://{slug}.{rest}"


@hookimpl
def menu_links(datasette, actor, request):
    info = _info(actor)
    if info is None:
        return []
    apex, team, slug = info["apex"], info["team"], info.get("slug", "")
    owner = info.get("role") == "owner"
    links = [
        {"href": team + UPLOAD, "label": "Upload CSV"},
        {"href": apex + "/dashboard", "label": "Dashboard"},
        {
            "href": f"{apex}/teams/{slug}",
            "label": "Members and API tokens" if owner else "Your API tokens",
        },
    ]
    for other in info.get("teams") or []:
        links.append({"href": team_url(apex, other) + "/", "label": f"Team {other}"})
    links.append({"href": apex + "/logout", "label": "Sign out"})
    return links


@hookimpl
def table_actions(datasette, actor, database, table, request):
    info = _info(actor)
    if info is None or database != UPLOAD_DATABASE:
        return []

    async def inner():
        db = datasette.get_database(database)
        if table not in await db.table_names():  # a view: nothing to append to
            return []
        base = info["team"] + UPLOAD
        return [
            {
                "href": f"{base}?{urlencode({'table': table, 'mode': 'append'})}",
                "label": "Append a CSV to this table",
            },
            {
                "href": f"{base}?{urlencode({'table': table, 'mode': 'replace'})}",
                "label": "Replace this table from a CSV",
            },
        ]

    return inner


@hookimpl
def database_actions(datasette, actor, database, request):
    info = _info(actor)
    if info is None or database != UPLOAD_DATABASE:
        return []
    return [{"href": info["team"] + UPLOAD, "label": "Upload a CSV into a new table"}]


class _LangLoader(BaseLoader):
    """Datasette's base.html opens with a bare ``<html>``: give it the page's language."""

    def __init__(self, inner):
        self.inner = inner

    def get_source(self, environment, template):
        source, filename, uptodate = self.inner.get_source(environment, template)
        if template == "base.html":
            source = source.replace("<html>", '<html lang="en">', 1)
        return source, filename, uptodate

    def list_templates(self):
        return self.inner.list_templates()


@hookimpl
def prepare_jinja2_environment(env, datasette):
    if env.loader is not None and not isinstance(env.loader, _LangLoader):
        env.loader = _LangLoader(env.loader)
