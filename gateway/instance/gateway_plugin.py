"""Datasette plugin loaded into every team instance (``--plugins-dir``).

* ``/-/health`` answers 200 once Datasette can open its databases: the gateway's health check.
* ``actor_from_request`` trusts the ``x-gateway-actor`` header only when it is signed with this
  instance's own secret (DATASETTE_SECRET) by the gateway, and fresh. The gateway strips any
  client-sent ``x-gateway-*`` header, so a forged identity never reaches here unsigned.
* Litestream's bookkeeping tables (backups, gateway/backup/) are hidden from the team.
"""

from datasette import hookimpl
from datasette.utils.asgi import Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

ACTOR_HEADER = b"x-gateway-actor"
ACTOR_SALT = "gateway-actor"
MAX_AGE = 300


async def health(datasette):
    for db in datasette.databases.values():
        await db.execute("select 1")
    return Response.json({"ok": True})


@hookimpl
def register_routes():
    return [(r"^/-/health$", health)]


LITESTREAM_TABLES = ("_litestream_seq", "_litestream_lock")


@hookimpl
def get_metadata(datasette, key, database, table):
    hidden = {name: {"hidden": True} for name in LITESTREAM_TABLES}
    return {"databases": {name: {"tables": hidden} for name in datasette.databases}}


@hookimpl
def actor_from_request(datasette, request):
    raw = None
    for name, value in request.scope.get("headers", []):
        if name == ACTOR_HEADER:
            raw = value.decode("latin-1")
    if not raw:
        return None
    serializer = URLSafeTimedSerializer(datasette._secret, salt=ACTOR_SALT)
    try:
        actor = serializer.loads(raw, max_age=MAX_AGE)
    except BadSignature:
        return None
    return actor if isinstance(actor, dict) and actor.get("id") else None
