"""Apex pages for one's own account: register, sign in/out, change and reset password."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from itsdangerous import BadData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth import accounts, handoff, invites
from gateway.auth.passwords import policy_error
from gateway.auth.sessions import Session
from gateway.auth.signups import sign_ups_closed
from gateway.auth.web import Web, page
from gateway.errors import Forbidden, GatewayError, TooManyRequests
from gateway.slugs import validate_slug

if TYPE_CHECKING:
    from gateway.auth.accounts import User
    from gateway.auth.invites import Invite

RESET_MAX_AGE = 3600  # reliability.md: reset links live at most an hour
BAD_LOGIN = "The email or password is incorrect."
CLOSED = (
    "Sorry, sign-ups are closed for now: this service is full. Please try again later, "
    "or ask the team you work with to invite you."
)
TAKEN = (
    "We could not create an account with these details. If you already have an account, "
    "sign in or reset your password; otherwise the team name may be taken: try another, or, "
    "to join that team, ask one of its owners for an invitation link."
)


def _s(form: object, key: str) -> str:
    value = form.get(key)  # type: ignore[attr-defined]
    return value if isinstance(value, str) else ""


def password_fingerprint(user: User) -> str:
    """Django's design: a reset token is bound to the current hash, so using it kills it."""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:24]


class AccountPages:
    """The account views, sharing the parts they use (``routes`` maps URLs onto them)."""

    def __init__(self, web: Web) -> None:
        self.web = web
        self.auth, self.config, self.store, self.fleet = web.auth, web.config, web.store, web.fleet

    async def sign_in(self, user_id: str, remember: bool, old: Session | None, to: str) -> Response:
        web, auth = self.web, self.auth
        if old is not None:  # a new id at every login: never keep a pre-login session
            auth.sessions.revoke(old.id_hash)
        value, max_age = auth.sessions.create(user_id, remember)
        return web.redirect(to, auth.session_cookie(value, max_age))

    def throttled(self, email: str, request: Request) -> None:
        web, auth = self.web, self.auth
        wait = auth.throttle.retry_after(email, web.ip(request))
        if wait:
            raise TooManyRequests(
                f"Too many failed attempts. Please wait {wait} seconds and try again.",
                retry_after=wait,
            )

    # -- register ---------------------------------------------------------------------------
    async def register(self, request: Request) -> Response:
        web, auth, store, config = self.web, self.auth, self.store, self.config
        session = web.session(request)
        # Through an invitation: join that team and create none (gateway/auth/invites.py).
        token = request.query_params.get("invite", "")
        invite = invites.pending(store, auth.signers["invite"], token) if token else None
        ctx: dict[str, object] = {"email": "", "team": "", "error": None, "invite": invite,
                                  "invite_token": token}  # fmt: skip
        if request.method != "POST":
            return web.render(request, "auth_register.html", ctx, session)
        form = await web.form(request, session)
        ctx.update(email=_s(form, "email"), team=_s(form, "team"))
        ip = web.ip(request)
        try:
            self.throttled(_s(form, "email"), request)
            auth.signups.check(ip)  # 429: this network's or the hour's sign-ups are spent
            if not token and sign_ups_closed(len(store.teams()), config.max_teams):
                ctx["error"] = CLOSED
                return web.render(request, "auth_register.html", ctx, session, status=503)
            user, slug = await self.create_account(form, token, invite, ip)
        except (accounts.AccountError, GatewayError) as err:
            if isinstance(err, TooManyRequests):
                raise
            ctx["error"] = str(err)
            return web.render(request, "auth_register.html", ctx, session, status=400)
        auth.signups.record(ip)
        auth.changed()
        await self.fleet.reconcile()  # the running fleet starts the team's instance now
        return await self.sign_in(
            user.id, False, session, f"/teams/{slug}" if invite else "/dashboard"
        )

    async def create_account(
        self, form: object, token: str, invite: Invite | None, ip: str
    ) -> tuple[User, str]:
        """The new user and the team it joined or created; AccountError says why not."""
        auth, store = self.auth, self.store
        email = accounts.normalize_email(_s(form, "email"))
        if token and invite is None:
            raise accounts.AccountError(
                "This invitation link has expired or was already used; ask for a new one."
            )
        slug = invite.team if invite else validate_slug(_s(form, "team"))
        password = _s(form, "password")
        why = policy_error(password, email)
        if why:
            raise accounts.AccountError(why)
        # Same answer, same work, for a taken email, a taken team or both: one hash
        # always, one failure counted, one body (docs/auth.md, "enumeration").
        hashed = await auth.passwords.hash(password)
        known = accounts.user_by_email(store, email) is not None
        # (An invitation's team exists by design: only a new team's name can be taken.)
        taken = not invite and store.query("SELECT 1 FROM teams WHERE slug = ?", [slug])
        if known or taken:
            auth.throttle.failed(email, ip)
            raise accounts.AccountError(TAKEN)
        try:
            user = accounts.create_user(store, email, hashed, team=None if invite else slug)
        except accounts.AccountError as err:  # taken in the meantime: same answer
            raise accounts.AccountError(TAKEN) from err
        if invite:
            limit = self.config.max_teams_per_user  # a new account owns none: always within
            accounts.use_invite(store, invite.id, user.id, max_owned=limit)
        return user, slug

    # -- login / logout -----------------------------------------------------------------------
    async def login(self, request: Request) -> Response:
        web, auth, store = self.web, self.auth, self.store
        session = web.session(request)
        ctx: dict[str, object] = {
            "email": "",
            "error": None,
            "next": request.query_params.get("next", ""),
        }
        if request.method == "POST":
            form = await web.form(request, session)
            raw_email = _s(form, "email").strip()
            ctx.update(email=raw_email, next=_s(form, "next"))
            self.throttled(raw_email, request)
            password = _s(form, "password")
            user = accounts.user_by_email(store, raw_email)
            stored = user.password_hash if user is not None else None
            ok, new_hash = await auth.passwords.verify(stored, password)
            if not ok or user is None or user.disabled:
                auth.throttle.failed(raw_email, web.ip(request))
                ctx["error"] = BAD_LOGIN
                return web.render(request, "auth_login.html", ctx, session, status=400)
            auth.throttle.succeeded(raw_email)
            if new_hash is not None:  # argon2 parameters changed since this hash was made
                accounts.set_password(store, user.id, new_hash, revoke=False)
            target = web.next_url(_s(form, "next"), self.auth_view(user.id))
            return await self.sign_in(user.id, _s(form, "remember") == "on", session, target)
        return web.render(request, "auth_login.html", ctx, session)

    async def sso(self, request: Request) -> Response:
        web, auth, config = self.web, self.auth, self.config
        """A team host could not see the session: hand it over (handoff.py) or sign in."""
        session = web.session(request)
        raw = request.query_params.get("next", "")
        if session is None:
            return web.redirect(auth.login_url(raw))
        target = web.next_url(raw, session)
        parts = urlsplit(target)
        slug, dot, rest = (parts.hostname or "").lower().partition(".")
        if auth.handoff and dot and rest == config.domain and slug in session.teams:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            if not path.startswith("/") or path.startswith("//"):
                path = "/"
            nonce = auth.tickets.issue(request.cookies.get(auth.cookie_name, ""), slug, path)
            return web.redirect(f"{config.team_url(slug)}{handoff.PATH}?ticket={nonce}")
        wanted, dot, rest = (urlsplit(raw).hostname or "").lower().partition(".")
        if dot and rest == config.domain and wanted not in session.teams:
            # A signed-in non-member gets the team host's own answer, not a silent
            # trip to the dashboard: the same 403 as when the Domain cookie reaches the team.
            raise Forbidden(f"Your account is not a member of the team {wanted}.")
        return web.redirect(target)

    def auth_view(self, user_id: str) -> Session:
        store = self.store
        # The memberships of the user who just signed in decide where ``next`` may go.
        return Session("", user_id, "", accounts.memberships(store, user_id), 0, 0, 0, False)

    async def logout(self, request: Request) -> Response:
        web, auth = self.web, self.auth
        session = web.session(request)
        if request.method == "GET":  # a plain link (Datasette's menu) asks first: no GET effects
            return web.render(request, "auth_logout.html", {}, session)
        await web.form(request, session)
        if session is not None:
            auth.sessions.revoke(session.id_hash)
        return web.redirect("/login", auth.clear_cookie())

    async def logout_everywhere(self, request: Request) -> Response:
        web, auth = self.web, self.auth
        session = web.session(request)
        await web.form(request, session)
        if session is not None:
            auth.sessions.revoke_user(session.user_id)
        return web.redirect("/login?everywhere=1", auth.clear_cookie())

    # -- change password ----------------------------------------------------------------------
    async def change_password(self, request: Request) -> Response:
        web, auth, store = self.web, self.auth, self.store
        session = web.session(request)
        if session is None:
            return web.redirect(auth.login_url("/password"))
        ctx: dict[str, object] = {"error": None}
        if request.method == "POST":
            form = await web.form(request, session)
            self.throttled(session.email, request)
            user = accounts.user_by_id(store, session.user_id)
            new = _s(form, "new_password")
            why = policy_error(new, session.email)
            if user is None:
                return web.redirect("/login", auth.clear_cookie())
            ok, _ = await auth.passwords.verify(user.password_hash, _s(form, "password"))
            if not ok:
                auth.throttle.failed(session.email, web.ip(request))
                why = "Your current password is incorrect."
            if why:
                ctx["error"] = why
                return web.render(request, "auth_password.html", ctx, session, status=400)
            accounts.set_password(store, user.id, await auth.passwords.hash(new))
            auth.changed()  # every session of this user is gone; this browser gets a new one
            return await self.sign_in(user.id, session.remember, None, "/dashboard?changed=1")
        return web.render(request, "auth_password.html", ctx, session)

    # -- reset --------------------------------------------------------------------------------
    async def reset_request(self, request: Request) -> Response:
        web, auth, config, store = self.web, self.auth, self.config, self.store
        session = web.session(request)
        if request.method != "POST":
            return web.render(request, "auth_reset_request.html", {"sent": False}, session)
        form = await web.form(request, session)
        raw_email = _s(form, "email").strip()
        self.throttled(raw_email, request)
        auth.throttle.failed(raw_email, web.ip(request))  # bounds reset mail per address/IP
        user = accounts.user_by_email(store, raw_email)
        if user is not None and not user.disabled:
            token = auth.signers["reset"].dumps({"u": user.id, "h": password_fingerprint(user)})
            link = f"{config.base_url}/reset/{token}"
            # Sent in the background: waiting for SMTP would make known addresses slower.
            asyncio.get_running_loop().create_task(
                auth.mailer.send(
                    user.email,
                    "Reset your password",
                    f"Someone asked to reset the password of {user.email}.\n\n"
                    f"To choose a new password, open this link within an hour:\n{link}\n\n"
                    "If it was not you, ignore this message; your password is unchanged.\n",
                )
            )
        ctx = {"sent": True, "email": raw_email}
        return web.render(request, "auth_reset_request.html", ctx, session)

    def reset_user(self, token: str) -> User | None:
        auth, store = self.auth, self.store
        try:
            data = auth.signers["reset"].loads(token, max_age=RESET_MAX_AGE)
        except (BadData, UnicodeError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        user = accounts.user_by_id(store, str(data.get("u")))
        if user is None or user.disabled:
            return None
        if not hmac.compare_digest(str(data.get("h")), password_fingerprint(user)):
            return None  # already used: the password (and so the hash) has changed
        return user

    async def reset_confirm(self, request: Request) -> Response:
        web, auth, store = self.web, self.auth, self.store
        session = web.session(request)
        token = request.path_params["token"]
        user = self.reset_user(token)
        if user is None:
            return web.render(
                request, "auth_reset.html", {"invalid": True, "error": None}, session, status=400
            )
        ctx: dict[str, object] = {"invalid": False, "error": None}
        if request.method == "POST":
            form = await web.form(request, session)
            new = _s(form, "new_password")
            why = policy_error(new, user.email)
            if why:
                ctx["error"] = why
                return web.render(request, "auth_reset.html", ctx, session, status=400)
            accounts.set_password(store, user.id, await auth.passwords.hash(new))
            auth.changed()
            auth.throttle.succeeded(user.email)
            return web.redirect("/login?reset=1", auth.clear_cookie())
        return web.render(request, "auth_reset.html", ctx, session)


def routes(web: Web) -> list[Route]:
    views = AccountPages(web)
    both = ["GET", "POST"]
    return [
        Route("/register", page(web, views.register), methods=both),
        Route("/login", page(web, views.login), methods=both),
        Route("/-/sso", page(web, views.sso)),
        Route("/logout", page(web, views.logout), methods=both),
        Route("/logout-everywhere", page(web, views.logout_everywhere), methods=["POST"]),
        Route("/password", page(web, views.change_password), methods=both),
        Route("/reset", page(web, views.reset_request), methods=both),
        Route("/reset/{token}", page(web, views.reset_confirm), methods=both),
    ]
