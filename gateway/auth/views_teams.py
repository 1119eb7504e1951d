"""Apex pages for teams: the dashboard, members and invitations, API tokens, public flag."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth import accounts, invites
from gateway.auth.sessions import Session
from gateway.auth.web import Web, page
from gateway.errors import BadRequest, Forbidden, NotFound, TeamNotFound
from gateway.upload import tables
from gateway.upload.errors import ImportFailed


def _s(form: Any, key: str) -> str:
    value = form.get(key)
    return value if isinstance(value, str) else ""


# An action on a team: (request, signed-in session, form, team slug) -> the answer.
Action = Callable[["TeamPages", Request, Session, Any, str], Awaitable[Response]]


class TeamPages:
    """The team views, sharing the parts they use (``routes`` maps URLs onto them)."""

    def __init__(self, web: Web) -> None:
        self.web = web
        self.auth, self.config, self.store, self.fleet = web.auth, web.config, web.store, web.fleet

    def signed_in(self, request: Request) -> Session | Response:
        session = self.web.session(request)
        if session is None:
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return self.web.redirect(self.auth.login_url(path))
        return session

    def team_info(self, slug: str) -> dict[str, Any]:
        config = self.config
        service = self.fleet.service(slug)
        try:
            team = self.store.team(slug)
        except TeamNotFound as exc:
            raise NotFound(f"There is no team called {slug}.") from exc
        return {
            "slug": slug,
            "state": service.state() if service is not None else "not running",
            "url": config.team_url(slug) + "/",
            "upload_url": config.team_url(slug) + "/-/upload-csv",
            "public": team.public,
        }

    async def dashboard(self, request: Request) -> Response:
        session = self.signed_in(request)
        if isinstance(session, Response):
            return session
        teams = [
            self.team_info(slug)
            | {
                "role": role,
                "home": await self.web.upload.summary(slug),
                "members": accounts.members(self.store, slug),
            }
            for slug, role in sorted(session.teams.items())
        ]
        ctx = {"teams": teams, "changed": request.query_params.get("changed") == "1"}
        return self.web.render(request, "dashboard.html", ctx, session)

    async def team_get(self, request: Request) -> Response:
        return await self.team_page(request)

    async def team_page(self, request: Request, extra: dict[str, Any] | None = None) -> Response:
        session = self.signed_in(request)
        if isinstance(session, Response):
            return session
        slug = request.path_params["slug"]
        role = role_in(session, slug)
        ctx = {
            "team": self.team_info(slug),
            "role": role,
            "members": accounts.members(self.store, slug),
            "tokens": self.auth.tokens.list(slug),
            "now": time.time(),
            "new_token": None,
            "invite_link": None,
            **(extra or {}),
        }
        return self.web.render(request, "auth_team.html", ctx, session)

    async def team_action(self, request: Request) -> Response:
        session = self.signed_in(request)
        if isinstance(session, Response):
            return session
        form = await self.web.form(request, session)
        action = ACTIONS.get(request.path_params["action"])
        if action is None:
            raise NotFound("No such action.")
        return await action(self, request, session, form, request.path_params["slug"])

    # -- the actions (POST /teams/{slug}/{action}) --------------------------------------------
    async def invite_member(
        self, request: Request, session: Session, form: Any, slug: str
    ) -> Response:
        role_in(session, slug, "owner")
        role = _s(form, "role") if _s(form, "role") in accounts.ROLES else "member"
        invite = accounts.create_invite(self.store, slug, session.user_id, role)
        link = f"{self.config.base_url}/invite/{self.auth.signers['invite'].dumps(invite)}"
        return await self.team_page(request, {"invite_link": link})

    async def remove_member(
        self, request: Request, session: Session, form: Any, slug: str
    ) -> Response:
        if _s(form, "user_id") != session.user_id:
            role_in(session, slug, "owner")  # anyone may leave; only owners remove others
        accounts.remove_member(self.store, slug, _s(form, "user_id"))
        self.auth.changed()
        leaving = _s(form, "user_id") == session.user_id
        return self.web.redirect("/dashboard" if leaving else f"/teams/{slug}")

    async def create_token(
        self, request: Request, session: Session, form: Any, slug: str
    ) -> Response:
        role_in(session, slug)
        days = _s(form, "expires_days").strip()
        if days and not (days.isdigit() and 0 < int(days) <= 3650):
            raise BadRequest("Expiry must be a whole number of days between 1 and 3650.")
        name = _s(form, "name").strip() or "token"
        raw = self.auth.tokens.create(
            slug, session.user_id, name, int(days) * 86400.0 if days else None
        )
        return await self.team_page(request, {"new_token": raw})

    async def revoke_token(
        self, request: Request, session: Session, form: Any, slug: str
    ) -> Response:
        role_in(session, slug)
        self.auth.tokens.revoke(slug, _s(form, "token_id"))
        return self.web.redirect(f"/teams/{slug}")

    async def delete_table(
        self, request: Request, session: Session, form: Any, slug: str
    ) -> Response:
        role_in(session, slug, "owner")
        team_dir = self.config.teams_dir / slug
        await _table_change(tables.delete_table, team_dir, _s(form, "table"))
        return self.web.redirect(f"/dashboard#team-{slug}")

    async def rename_table(
        self, request: Request, session: Session, form: Any, slug: str
    ) -> Response:
        role_in(session, slug, "owner")
        team_dir = self.config.teams_dir / slug
        await _table_change(tables.rename_table, team_dir, _s(form, "table"), _s(form, "new_name"))
        return self.web.redirect(f"/dashboard#team-{slug}")

    async def restore_table(
        self, request: Request, session: Session, form: Any, slug: str
    ) -> Response:
        role_in(session, slug)  # members replace tables, so members may undo a replace
        team_dir = self.config.teams_dir / slug
        await _table_change(tables.restore_table, team_dir, _s(form, "entry"))
        return self.web.redirect(f"/dashboard#team-{slug}")

    async def set_public(
        self, request: Request, session: Session, form: Any, slug: str
    ) -> Response:
        role_in(session, slug, "owner")
        accounts.set_public(self.store, slug, _s(form, "public") == "1")
        self.auth.changed()
        return self.web.redirect(f"/teams/{slug}")

    # -- invitation links and the table page --------------------------------------------------
    async def invite(self, request: Request) -> Response:
        web, auth, store = self.web, self.auth, self.store
        session = web.session(request)
        token = request.path_params["token"]
        found = invites.pending(store, auth.signers["invite"], token)
        if found is None:
            ctx: dict[str, Any] = {"invalid": True, "team": None}
            return web.render(request, "auth_invite.html", ctx, session, status=400)
        if request.method == "POST":
            if session is None:
                return web.redirect(auth.login_url(request.url.path))
            await web.form(request, session)
            limit = self.config.max_teams_per_user  # an owner invitation may be one too many
            slug = accounts.use_invite(store, found.id, session.user_id, max_owned=limit)
            auth.changed()
            return web.redirect(f"/teams/{slug}")
        # Signed out: name the team and the inviter, and offer both ways in, keeping the link.
        ctx = {"invalid": False, "team": found.team, "role": found.role,
               "inviter": found.inviter, "token": token}  # fmt: skip
        return web.render(request, "auth_invite.html", ctx, session)

    async def table_page(self, request: Request) -> Response:
        """Rename or delete one table (owners): this page is the confirmation, with counts."""
        session = self.signed_in(request)
        if isinstance(session, Response):
            return session
        slug = request.path_params["slug"]
        role_in(session, slug, "owner")
        name = request.query_params.get("name", "")
        try:
            rows = await asyncio.to_thread(tables.count_rows, self.config.teams_dir / slug, name)
        except ImportFailed as exc:
            raise NotFound(str(exc)) from None
        ctx = {"team": self.team_info(slug), "table": name, "rows": rows}
        return self.web.render(request, "auth_table.html", ctx, session)


ACTIONS: dict[str, Action] = {
    "invite": TeamPages.invite_member,
    "remove-member": TeamPages.remove_member,
    "token": TeamPages.create_token,
    "revoke-token": TeamPages.revoke_token,
    "delete-table": TeamPages.delete_table,
    "rename-table": TeamPages.rename_table,
    "restore-table": TeamPages.restore_table,
    "public": TeamPages.set_public,
}


def role_in(session: Session, slug: str, need: str = "member") -> str:
    role = session.teams.get(slug)
    if role is None:
        raise NotFound(f"You are not a member of a team called {slug}.")
    if need == "owner" and role != "owner":
        raise Forbidden("Only the team's owners can do that.")
    return role


async def _table_change(change: Callable[..., object], team_dir: Path, *args: str) -> None:
    """Run a table change off the loop; its ImportFailed is the user's mistake (400)."""
    try:
        await asyncio.to_thread(change, team_dir, *args)
    except ImportFailed as exc:
        raise BadRequest(str(exc)) from None


def routes(web: Web) -> list[Route]:
    views = TeamPages(web)
    return [
        Route("/dashboard", page(web, views.dashboard)),
        Route("/teams/{slug}", page(web, views.team_get)),
        Route("/teams/{slug}/table", page(web, views.table_page)),
        Route("/teams/{slug}/{action}", page(web, views.team_action), methods=["POST"]),
        Route("/invite/{token}", page(web, views.invite), methods=["GET", "POST"]),
    ]
