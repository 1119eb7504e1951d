"""Datasette plugin loaded into every team instance (``--plugins-dir``).

* ``/-/health`` answers 200 once Datasette can open its databases: the gateway's health check.
* ``asgi_wrapper`` answers 403 to any request without the gateway's signature
  (``x-gateway-signature``, a fresh TimestampSigner value made with this instance's secret;
  gateway/routing/signature.py): a process on the host that finds the port gets nothing.
* ``actor_from_request`` trusts the ``x-gateway-actor`` header only when it is signed with this
  instance's own secret (DATASETTE_SECRET) by the gateway, and fresh. The gateway strips any
  client-sent ``x-gateway-*`` header, so a forged identity never reaches here unsigned.
* Litestream's bookkeeping tables (backups, gateway/backup/) and the imports' publication
  markers (gateway/upload/importer.py) are hidden from the team.
"""

import time

from datasette import hookimpl
from datasette.utils.asgi import Response
from itsdangerous import BadSignature, TimestampSigner, URLSafeTimedSerializer

ACTOR_HEADER = b"x-gateway-actor"
ACTOR_SALT = "gateway-actor"
MAX_AGE = 300
SIGNATURE_HEADER = b"x-gateway-signature"
SIGNATURE_SALT = "gateway-request"
FORBIDDEN = b"403 Forbidden: this Datasette answers only requests through the gateway.\n"


async def health(datasette):
    for db in datasette.databases.values():
        await db.execute("select 1")
    return Response.json({"ok": True})


@hookimpl
def register_routes():
    return [(r"^/-/health$", health)]


LITESTREAM_TABLES = ("_litestream_seq", "_litestream_lock")
# gateway.upload.jobs.IMPORTS_TABLE: this file runs inside the instance, without the gateway.
IMPORTS_TABLE = "_gateway_imports"


@hookimpl
def get_metadata(datasette, key, database, table):
    hidden = {name: {"hidden": True} for name in (*LITESTREAM_TABLES, IMPORTS_TABLE)}
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


class SignedOnly:
    """The ASGI wrapper: a valid gateway signature, or 403. The gateway reuses one value for
    a minute, so a verified value is remembered until it would expire (one HMAC a minute)."""

    def __init__(self, app, secret):
        self.app = app
        self.signer = TimestampSigner(secret, salt=SIGNATURE_SALT)
        self.known = {}  # verified value -> monotonic time it stops being accepted

    def signed(self, scope):
        raw = None
        for name, value in scope.get("headers", []):
            if name == SIGNATURE_HEADER:
                raw = value
        if not raw:
            return False
        now = time.monotonic()
        until = self.known.get(raw)
        if until is not None and now < until:
            return True
        try:
            _, stamp = self.signer.unsign(raw, max_age=MAX_AGE, return_timestamp=True)
        except BadSignature:
            return False
        if len(self.known) > 64:
            self.known.clear()
        self.known[raw] = now + MAX_AGE - (time.time() - stamp.timestamp())
        return True

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.signed(scope):
            await self.app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")],
            }
        )
        await send({"type": "http.response.body", "body": FORBIDDEN})


@hookimpl
def asgi_wrapper(datasette):
    return lambda app: SignedOnly(app, datasette._secret)
