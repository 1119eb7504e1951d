"""``Auth``: the one auth object the gateway holds (built in ``gateway/app.py``).

It owns the signing keys, the session and token caches, the password hasher, the throttle and
the mailer, and answers the per-request question for team hosts (``authorize``). Everything
that changes who may see what calls ``changed()``, which empties the caches, so the very next
request sees the change; writes by another process (the CLI) are caught by comparing SQLite's
``data_version`` on each request (one cheap PRAGMA on an open connection).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from itsdangerous import URLSafeTimedSerializer

from gateway.auth import handoff, keys
from gateway.auth.authorize import ACTOR_TTL, scan_headers
from gateway.auth.mail import Mailer
from gateway.auth.passwords import Passwords
from gateway.auth.sessions import REMEMBER_ABSOLUTE, Session, Sessions
from gateway.auth.signups import Signups
from gateway.auth.throttle import Throttle
from gateway.auth.tokens import Tokens
from gateway.config import Config
from gateway.context import RequestContext
from gateway.errors import Forbidden, SignInHandoff, SignInRequired, Unauthorized
from gateway.routing.signature import RequestSigner
from gateway.store import Store

if TYPE_CHECKING:
    from gateway.routing.service import Service

READ_ONLY = frozenset({"GET", "HEAD"})
ACTOR_SALT = "gateway-actor"  # gateway/instance/gateway_plugin.py verifies with this salt
MENU_TEAMS = 20  # other teams named in Datasette's menu (the actor travels on every request)
VERSION_EVERY = 0.001  # seconds between data_version checks (see _check_version)


class Auth:
    def __init__(
        self,
        config: Config,
        store: Store,
        signer: RequestSigner,
        instance_secret: Callable[[str], str],
    ) -> None:
        self.config = config
        self.store = store
        self.signer = signer  # the gateway's signature on requests to instances
        self.instance_secret = instance_secret  # a team's instance secret signs its actors
        https = self.config.base_url.startswith("https://")
        self.cookie_name = ("__Secure-" if https else "") + "gateway_session"
        self.secure = https
        self._cookie_bytes = self.cookie_name.encode()
        self.signers = keys.serializers(keys.load_keys(self.store))
        self.sessions = Sessions(self.store, self.signers["session"])
        self.tokens = Tokens(self.store)
        self.passwords = Passwords()
        self.throttle = Throttle()
        self.signups = Signups(self.config.signups_per_ip_hour, self.config.signups_per_hour)
        self.mailer = Mailer(self.config)
        self.tickets = handoff.Tickets()
        # Only a single-label domain (localhost) needs the handoff: browsers keep its Domain
        # cookies host-only. Elsewhere it stays off, which also rules out a member planting
        # their own session on a team host through a ticket (a login CSRF).
        self.handoff = "." not in self.config.domain
        self._public: dict[str, bool] | None = None
        self._actor_signers: dict[str, URLSafeTimedSerializer] = {}
        self._version = self.store.data_version()
        self._version_checked = 0.0
        self._token_actors: dict[str, tuple[float, bytes]] = {}

    async def prepare(self) -> None:
        """At startup: make the dummy hash now, so the first unknown-email login is not faster."""
        await self.passwords.verify(None, "warm-up")

    # -- cache coherence ----------------------------------------------------------------------
    def changed(self) -> None:
        """Call after any write that changes sessions, users, memberships, tokens or keys."""
        self.signers = keys.serializers(keys.load_keys(self.store))
        self.sessions.set_signer(self.signers["session"])
        self.tokens.clear()
        self._token_actors.clear()
        # A deleted team's name may come back with a new instance secret.
        self._actor_signers.clear()
        self.signer.forget()
        self._public = None
        self._version = self.store.data_version()

    def _check_version(self) -> None:
        # PRAGMA data_version costs a query and two fcntl() lock syscalls: run it at most once
        # per VERSION_EVERY. Writes by this process clear the caches at once (``changed``); a
        # CLI's write is seen by the first request after VERSION_EVERY (1 ms) has passed:
        # `gateway users disable` ends sessions for the very next request, as promised.
        now = time.monotonic()
        if now < self._version_checked + VERSION_EVERY:
            return
        self._version_checked = now
        version = self.store.data_version()
        if version != self._version:
            self.changed()

    def is_public(self, slug: str) -> bool:
        if self._public is None:
            self._public = {t.slug: t.public for t in self.store.teams()}
        return self._public.get(slug, False)

    # -- cookies ------------------------------------------------------------------------------
    def session_cookie(self, value: str, max_age: float | None, *, host_only: bool = False) -> str:
        parts = [f"{self.cookie_name}={value}", "Path=/", "HttpOnly", "SameSite=Lax"]
        if not host_only:
            parts.append(f"Domain={self.config.domain}")
        if max_age is not None:
            parts.append(f"Max-Age={int(max_age)}")
        if self.secure:
            parts.append("Secure")
        return "; ".join(parts)

    def clear_cookie(self) -> str:
        return self.session_cookie("", 0)

    def session_from_cookies(self, cookies: dict[str, str]) -> Session | None:
        self._check_version()
        value = cookies.get(self.cookie_name)
        return self.sessions.get(value) if value else None

    def login_url(self, next_url: str) -> str:
        return f"{self.config.base_url}/login?next={quote(next_url, safe='')}"

    def sso_url(self, next_url: str) -> str:
        """Where a team host sends an anonymous browser: the apex hands over its session if
        it has one (see handoff.py), else shows the login page."""
        return f"{self.config.base_url}/-/sso?next={quote(next_url, safe='')}"

    # -- the per-request check on team hosts --------------------------------------------------
    def authorize(
        self, scope: dict[str, Any], ctx: RequestContext, service: Service
    ) -> list[tuple[bytes, bytes]]:
        """Who is this, and may they reach this team? Returns extra upstream headers: the
        gateway's signature (the instance answers nothing else) and the signed actor.

        Strips the gateway's session cookie and client ``x-gateway-*`` headers from the scope
        first, whatever the outcome.
        """
        self._check_version()
        slug = service.name
        cookie, bearer = scan_headers(scope, self._cookie_bytes)
        if self.handoff and scope["path"] == handoff.PATH:
            self._land(scope, slug)
        if bearer is not None:
            ctx.api = True
            token = self.tokens.check(bearer, slug)
            if token is None:
                raise Unauthorized(
                    "This API token is unknown, revoked, expired or for another team."
                )
            ctx.user = {"id": token.user_id, "email": token.email}
            now = time.monotonic()
            cached = self._token_actors.get(token.id)
            if cached is None or cached[0] <= now:
                cached = (now + ACTOR_TTL, self._sign_actor(slug, token.user_id, token.email))
                self._token_actors[token.id] = cached
            if not self.is_public(slug):
                ctx.private = True  # the proxy answers Cache-Control: private
            return [self.signer.header(slug), (b"x-gateway-actor", cached[1])]
        session = self.sessions.get(cookie) if cookie else None
        if session is not None and slug in session.teams:
            ctx.user = {"id": session.user_id, "email": session.email}
            if not self.is_public(slug):
                ctx.private = True
            return [self.signer.header(slug), (b"x-gateway-actor", self._actor(session, slug))]
        if scope["method"] in READ_ONLY and self.is_public(slug):
            return [self.signer.header(slug)]  # a public team: read-only, with no actor
        if session is not None:
            raise Forbidden(f"Your account is not a member of the team {slug}.")
        path = scope.get("raw_path") or scope["path"].encode()
        target = path.decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        back = self.config.team_url(slug) + target
        raise SignInRequired(location=self.sso_url(back) if self.handoff else self.login_url(back))

    def _land(self, scope: dict[str, Any], slug: str) -> None:
        """``<team>/-/gateway/sso?ticket=...``: set this host's session cookie, go on."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        taken = self.tickets.take(query.get("ticket", [""])[0], slug)
        session = self.sessions.get(taken[0]) if taken else None
        if taken is None or session is None:
            raise SignInRequired(location=self.login_url(self.config.team_url(slug) + "/"))
        max_age = REMEMBER_ABSOLUTE if session.remember else None
        cookie = self.session_cookie(taken[0], max_age, host_only=True)
        raise SignInHandoff(taken[1], cookie)

    def _actor(self, session: Session, slug: str) -> bytes:
        # Signing costs more than the rest of the check: a signed actor is reused for ACTOR_TTL
        # (the plugin allows 300 s).
        now = time.monotonic()
        cached = session.actors.get(slug)
        if cached is not None and cached[0] > now:
            return cached[1]
        value = self._sign_actor(slug, session.user_id, session.email, self._around(session, slug))
        session.actors[slug] = (now + ACTOR_TTL, value)
        return value

    def _around(self, session: Session, slug: str) -> dict[str, Any]:
        """The service around Datasette, for its menu (gateway/instance/gateway_menu.py)."""
        # Compact: it travels on every request. Team URLs are derived from the apex exactly as
        # Config.team_url does (scheme://<slug>.<apex host and port>).
        return {
            "apex": self.config.base_url,
            "slug": slug,
            "role": session.teams.get(slug, "member"),
            "teams": sorted(s for s in session.teams if s != slug)[:MENU_TEAMS],
        }

    def _sign_actor(
        self, slug: str, user_id: str, email: str, around: dict[str, Any] | None = None
    ) -> bytes:
        signer = self._actor_signers.get(slug)
        if signer is None:
            signer = URLSafeTimedSerializer(self.instance_secret(slug), salt=ACTOR_SALT)
            self._actor_signers[slug] = signer
        # "display": Datasette's navigation shows it, so people see their email, not an id.
        actor: dict[str, Any] = {"id": user_id, "email": email, "display": email}
        if around is not None:
            actor["gateway"] = around
        return signer.dumps(actor).encode()
