"""Apex pages for teams: the dashboard, members and invitations, API tokens, public flag."""

from __future__ import annotations

import asyncio
import time
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


def routes(web: Web) -> list[Route]:
    auth, config, store, fleet = web.auth, web.config, web.store, web.fleet

    def signed_in(request: Request) -> Session | Response:
        session = web.session(request)
        if session is None:
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return web.redirect(auth.login_url(path))
        return session

    def role_in(session: Session, slug: str, need: str = "member") -> str:
        role = session.teams.get(slug)
        if role is None:
            raise NotFound(f"You are not a member of a team called {slug}.")
        if need == "owner" and role != "owner":
            raise Forbidden("Only the team's owners can do that.")
        return role

    def team_info(slug: str) -> dict[str, Any]:
        service = fleet.service(slug)
        try:
            team = store.team(slug)
        except TeamNotFound as exc:
            raise NotFound(f"There is no team called {slug}.") from exc
        return {
            "slug": slug,
            "state": service.state() if service is not None else "not running",
            "url": config.team_url(slug) + "/",
            "upload_url": config.team_url(slug) + "/-/upload-csv",
            "public": team.public,
        }

    async def dashboard(request: Request) -> Response:
        session = signed_in(request)
        if isinstance(session, Response):
            return session
        teams = [
            team_info(slug)
            | {
                "role": role,
                "home": await web.upload.summary(slug),
                "members": accounts.members(store, slug),
            }
            for slug, role in sorted(session.teams.items())
        ]
        ctx = {"teams": teams, "changed": request.query_params.get("changed") == "1"}
        return web.render(request, "dashboard.html", ctx, session)

    async def team_page(request: Request, extra: dict[str, Any] | None = None) -> Response:
        session = signed_in(request)
        if isinstance(session, Response):
            return session
        slug = request.path_params["slug"]
        role = role_in(session, slug)
        ctx = {
            "team": team_info(slug),
            "role": role,
            "members": accounts.members(store, slug),
            "tokens": auth.tokens.list(slug),
            "now": time.time(),
            "new_token": None,
            "invite_link": None,
            **(extra or {}),
        }
        return web.render(request, "auth_team.html", ctx, session)

    async def team_action(request: Request) -> Response:
        session = signed_in(request)
        if isinstance(session, Response):
            return session
        form = await web.form(request, session)
        slug = request.path_params["slug"]
        action = request.path_params["action"]
        back = f"/teams/{slug}"
        if action == "invite":
            role_in(session, slug, "owner")
            role = _s(form, "role") if _s(form, "role") in accounts.ROLES else "member"
            invite = accounts.create_invite(store, slug, session.user_id, role)
            link = f"{config.base_url}/invite/{auth.signers['invite'].dumps(invite)}"
            return await team_page(request, {"invite_link": link})
        if action == "remove-member":
            if _s(form, "user_id") != session.user_id:
                role_in(session, slug, "owner")  # anyone may leave; only owners remove others
            accounts.remove_member(store, slug, _s(form, "user_id"))
            auth.changed()
            return web.redirect(back if _s(form, "user_id") != session.user_id else "/dashboard")
        if action == "token":
            role_in(session, slug)
            days = _s(form, "expires_days").strip()
            if days and not (days.isdigit() and 0 < int(days) <= 3650):
                raise BadRequest("Expiry must be a whole number of days between 1 and 3650.")
            name = _s(form, "name").strip() or "token"
            raw = auth.tokens.create(
                slug, session.user_id, name, int(days) * 86400.0 if days else None
            )
            return await team_page(request, {"new_token": raw})
        if action == "revoke-token":
            role_in(session, slug)
            auth.tokens.revoke(slug, _s(form, "token_id"))
            return web.redirect(back)
        if action in ("delete-table", "rename-table"):
            role_in(session, slug, "owner")
            team_dir = config.teams_dir / slug
            try:
                if action == "delete-table":
                    await asyncio.to_thread(tables.delete_table, team_dir, _s(form, "table"))
                else:
                    await asyncio.to_thread(
                        tables.rename_table, team_dir, _s(form, "table"), _s(form, "new_name")
                    )
            except ImportFailed as exc:
                raise BadRequest(str(exc)) from None
            return web.redirect(f"/dashboard#team-{slug}")
        if action == "restore-table":
            role_in(session, slug)  # members replace tables, so members may undo a replace
            try:
                await asyncio.to_thread(
                    tables.restore_table, config.teams_dir / slug, _s(form, "entry")
                )
            except ImportFailed as exc:
                raise BadRequest(str(exc)) from None
            return web.redirect(f"/dashboard#team-{slug}")
        if action == "public":
            role_in(session, slug, "owner")
            accounts.set_public(store, slug, _s(form, "public") == "1")
            auth.changed()
            return web.redirect(back)
        raise NotFound("No such action.")

    async def invite(request: Request) -> Response:
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
            limit = config.max_teams_per_user  # an owner invitation may be one too many
            slug = accounts.use_invite(store, found.id, session.user_id, max_owned=limit)
            auth.changed()
            return web.redirect(f"/teams/{slug}")
        # Signed out: name the team and the inviter, and offer both ways in, keeping the link.
        ctx = {"invalid": False, "team": found.team, "role": found.role,
               "inviter": found.inviter, "token": token}  # fmt: skip
        return web.render(request, "auth_invite.html", ctx, session)

    async def table_page(request: Request) -> Response:
        """Rename or delete one table (owners): this page is the confirmation, with counts."""
        session = signed_in(request)
        if isinstance(session, Response):
            return session
        slug = request.path_params["slug"]
        role_in(session, slug, "owner")
        name = request.query_params.get("name", "")
        try:
            rows = await asyncio.to_thread(tables.count_rows, config.teams_dir / slug, name)
        except ImportFailed as exc:
            raise NotFound(str(exc)) from None
        ctx = {"team": team_info(slug), "table": name, "rows": rows}
        return web.render(request, "auth_table.html", ctx, session)

    async def team_get(request: Request) -> Response:
        return await team_page(request)

    return [
        Route("/dashboard", page(web, dashboard)),
        Route("/teams/{slug}", page(web, team_get)),
        Route("/teams/{slug}/table", page(web, table_page)),
        Route("/teams/{slug}/{action}", page(web, team_action), methods=["POST"]),
        Route("/invite/{token}", page(web, invite), methods=["GET", "POST"]),
    ]
