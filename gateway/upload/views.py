"""``/-/upload-csv`` on every team host, served by the gateway itself (never proxied).

    GET  /-/upload-csv                 the page: drop files, see this team's recent jobs
    POST /-/upload-csv                 multipart upload -> jobs (JSON 202, or 303 to the job)
    GET  /-/upload-csv/jobs.json       recent jobs
    GET  /-/upload-csv/jobs/<id>[.json] one job: progress, preview form, result or error
    POST /-/upload-csv/jobs/<id>       confirm the preview (import) or re-analyse

Every answer has an HTML and a JSON form; errors are raised as ``HTTPError`` and rendered by
``gateway/responses.py``. A user's mistake is a 4xx with a message, never a 500.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from gateway.context import context_of
from gateway.errors import BadRequest, Forbidden, NotFound, PayloadTooLarge, Unauthorized
from gateway.responses import wants_json
from gateway.routing.headers import private_cache
from gateway.upload import trash
from gateway.upload.columns import check_table_name, table_name_from_file
from gateway.upload.convert import CONVERSIONS
from gateway.upload.encodings import COMMON as COMMON_ENCODINGS
from gateway.upload.encodings import check as check_encoding
from gateway.upload.errors import ImportFailed
from gateway.upload.importer import check_target
from gateway.upload.inventory import Inventories
from gateway.upload.jobs import Job, Jobs, new_id
from gateway.upload.options import resolve
from gateway.upload.quota import Quota
from gateway.upload.receive import receive_upload, remove_quietly
from gateway.upload.runner import Runner
from gateway.upload.sniff import check_delimiter

if TYPE_CHECKING:
    from starlette.templating import Jinja2Templates

    from gateway.config import Config
    from gateway.routing.service import Service
    from gateway.store.db import Store

PAGES = Path(__file__).resolve().parent.parent / "pages"
STATIC = {"upload.js": "text/javascript", "upload.css": "text/css"}
PREFIX = "/-/upload-csv"
MAX_OPEN_JOBS = 20
DASHBOARD_TABLES = 100  # the largest tables named on the dashboard; Datasette lists them all
DASHBOARD_IMPORTS = 5
UPLOAD_FIELDS = ("encoding", "delimiter", "table", "mode", "pk", "empty_null")
# What the upload templates use besides each page's own context.
PAGE_NAMES = {
    "default_table": table_name_from_file,
    "encodings": COMMON_ENCODINGS,
    "conversions": CONVERSIONS,
}


class UploadApp:
    def __init__(self, config: Config, store: Store, templates: Jinja2Templates) -> None:
        self.config = config
        self.jobs = Jobs(store)
        self.runner = Runner(config, store)
        self.quota = Quota(config.team_quota_bytes)
        self.inventories = Inventories()
        self.env = templates.env  # the one environment (pages/templates.py), its filters

    async def __call__(
        self, scope: dict[str, Any], receive: Any, send: Any, service: Service
    ) -> None:
        response = await self.dispatch(scope, receive, service.name)
        if context_of(scope).private:  # a member's page of a private team (auth/gatekeeper.py)
            response.raw_headers = private_cache(response.raw_headers)
        await response(scope, receive, send)

    async def dispatch(self, scope: dict[str, Any], receive: Any, team: str) -> Response:
        method, rest = scope["method"], scope["path"][len(PREFIX) :]
        if rest.startswith("/static/") and method in ("GET", "HEAD"):
            return self.static(rest[len("/static/") :])
        user = self.member(scope)
        if method not in ("GET", "HEAD", "POST"):
            _not_allowed()
        if method == "POST":
            self.check_origin(scope, team)
        request = Request(scope, receive)
        if rest in ("", "/"):
            if method == "POST":
                return await self.upload(scope, receive, team, user)
            return self.index(team, request)
        if rest == "/jobs.json" and method != "POST":
            base = self.config.team_url(team)
            return JSONResponse({"jobs": [j.public(base) for j in self.jobs.for_team(team)]})
        if rest.startswith("/jobs/"):
            job_id, as_json = rest[len("/jobs/") :], False
            if job_id.endswith(".json"):
                job_id, as_json = job_id[:-5], True
            job = self.job(job_id, team)
            if method == "POST":
                return await self.confirm(scope, request, job, team)
            if as_json:
                return JSONResponse(job.public(self.config.team_url(team)))
            context = await self.job_context(job, team)
            return self.render("upload_job.html", job=job, **context)
        raise NotFound("There is no such upload page.")

    async def summary(self, team: str, tables: int = DASHBOARD_TABLES) -> dict[str, Any]:
        """A team's home on the dashboard: its largest tables, storage and last imports."""
        from datasette.utils import tilde_encode

        inventory = await asyncio.to_thread(self.inventories.get, self._db(team))
        base = self.config.team_url(team)
        shown = [
            {"name": t.name, "rows": t.rows, "size": human_bytes(t.bytes),
             "url": f"{base}/data/{tilde_encode(t.name)}"}
            for t in inventory.largest(tables)
        ]  # fmt: skip
        return {
            "tables": shown,
            "table_count": len(inventory.tables),
            "disk": human_bytes(inventory.disk_bytes),
            "error": inventory.error,
            "database_url": f"{base}/data",
            "imports": [j.public(base) for j in self.jobs.for_team(team, DASHBOARD_IMPORTS)],
            "kept": await asyncio.to_thread(
                trash.entries, self.config.teams_dir / team, self.config.replaced_table_days
            ),
        }

    # -- checks ---------------------------------------------------------------------------
    def member(self, scope: dict[str, Any]) -> dict[str, Any]:
        # The auth step has run: anyone here who is not a member was already refused,
        # except anonymous readers of a public team, who may not upload.
        user = context_of(scope).user
        if not user:
            raise Unauthorized("Sign in as a member of this team to upload CSV files.")
        return dict(user)

    def check_origin(self, scope: dict[str, Any], team: str) -> None:
        """Browsers send Origin on every POST: a sibling team's page must not post here."""
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        expected = self.config.team_url(team).lower().encode()
        if origin is not None and origin.lower() != expected:
            raise Forbidden("This upload came from another site and was refused.")
        if headers.get(b"sec-fetch-site", b"").lower() in (b"same-site", b"cross-site"):
            raise Forbidden("This upload came from another site and was refused.")

    def job(self, job_id: str, team: str) -> Job:
        try:
            return self.jobs.get(job_id, team)
        except KeyError:
            raise NotFound("There is no such import job for this team.") from None

    # -- pages ----------------------------------------------------------------------------
    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        html = self.env.get_template(template).render({**PAGE_NAMES, **context})
        return HTMLResponse(html, status, headers={"cache-control": "no-store"})

    def index(self, team: str, request: Request) -> Response:
        jobs = self.jobs.for_team(team)
        return self.render(
            "upload.html",
            team=team,
            jobs=jobs,
            max_bytes=self.config.upload_max_bytes,
            target=_target(request),
        )

    def static(self, name: str) -> Response:
        if name not in STATIC:
            raise NotFound("No such file.")
        body = (PAGES / "static" / name).read_bytes()
        return Response(body, media_type=STATIC[name], headers={"cache-control": "max-age=300"})

    async def job_context(self, job: Job, team: str) -> dict[str, Any]:
        data = job.public(self.config.team_url(team))
        table_url = (data["result"] or {}).get("table_url")
        context = {"team": team, "table_url": table_url, "data": data,
                   "kept_days": self.config.replaced_table_days,
                   "kept_url": f"{self.config.base_url}/dashboard#kept-{team}"}  # fmt: skip
        if job.state == "ready":  # offer the existing tables, and warn when a name is taken
            # In a thread: a cold read of a large database must not hold the event loop.
            inventory = await asyncio.to_thread(self.inventories.get, self._db(team))
            context["existing"] = [t.name for t in inventory.tables]
        if job.state == "queued":
            context["waiting"] = any(
                j.state == "importing" and j.id != job.id for j in self.jobs.for_team(team)
            )
        return context

    def _db(self, team: str) -> Path:
        return self.config.teams_dir / team / "data.db"

    def _existing_rows(self, team: str, options: dict[str, Any]) -> int | None:
        db = self._db(team)
        if not db.exists():
            if options["mode"] == "append":
                raise ImportFailed(f"There is no table {options['table']!r} to append to.")
            return None
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return check_target(conn, options)
        finally:
            conn.close()

    # -- actions --------------------------------------------------------------------------
    async def upload(
        self, scope: dict[str, Any], receive: Any, team: str, user: dict[str, Any]
    ) -> Response:
        spool_dir = self.config.teams_dir / team / ".spool"
        # Each open job holds a spool file of up to upload_max_bytes: bound the disk a team uses.
        if self.jobs.open_count(team) >= MAX_OPEN_JOBS:
            raise BadRequest(
                f"This team already has {MAX_OPEN_JOBS} uploads waiting or running. "
                "Import or discard some first."
            )
        team_dir = self.config.teams_dir / team
        with self.quota.metered(team, team_dir) as meter:  # 413 with the usage, as it streams
            upload = await receive_upload(
                scope, receive, spool_dir, self.config.upload_max_bytes, meter.add
            )
        fields = {
            k: v
            for k, v in upload.fields.items()
            if k in UPLOAD_FIELDS or k.startswith(("type.", "name.", "drop."))
        }
        auto = upload.fields.get("auto", "").lower() in ("1", "true", "on", "yes")
        try:  # refuse a bad name or option now, not after the file was analysed
            if auto:  # the import's table takes about as much room again
                self.quota.check(team, team_dir, sum(f.size for f in upload.files))
            if "table" in fields:
                check_table_name(fields["table"])
            if fields.get("encoding"):
                check_encoding(fields["encoding"])
            if fields.get("delimiter"):
                check_delimiter(fields["delimiter"])
        except ImportFailed as exc:
            upload.discard()
            raise BadRequest(str(exc)) from None
        except PayloadTooLarge:
            upload.discard()
            raise
        created = []
        for spooled in upload.files:
            job_id = new_id()
            final = spooled.path.with_name(f"{job_id}.upload")
            spooled.path.rename(final)
            options = {
                "encoding": fields.get("encoding", ""),
                "delimiter": fields.get("delimiter", ""),
                "form": fields,
            }
            created.append(self.jobs.create(
                job_id=job_id, team=team, user_id=user.get("id"), filename=spooled.filename,
                spool_path=str(final), size=spooled.size, auto=auto, options=options,
            ))  # fmt: skip
            self.runner.start(job_id)
        if wants_json(scope):
            base = self.config.team_url(team)
            return JSONResponse({"ok": True, "jobs": [j.public(base) for j in created]}, 202)
        where = f"{PREFIX}/jobs/{created[0].id}" if len(created) == 1 else PREFIX
        return RedirectResponse(where, 303)

    async def confirm(
        self, scope: dict[str, Any], request: Request, job: Job, team: str
    ) -> Response:
        try:
            raw = await request.form(max_files=0, max_fields=2200)
        except (HTTPException, MultiPartException) as exc:  # a field over 1 MB, too many fields
            why = exc.detail if isinstance(exc, HTTPException) else exc.message
            raise BadRequest(f"This form could not be read: {why}") from None
        form = {k: str(v) for k, v in raw.items()}
        action = form.get("action", "import")
        if action == "discard":
            if not self.jobs.transition(job.id, "ready", "failed", error="Discarded.", pid=None):
                raise BadRequest(f"This job is {job.state}; only a job waiting for review can go.")
            remove_quietly(Path(job.spool_path))
            if wants_json(scope):
                return JSONResponse(self.jobs.get(job.id).public(self.config.team_url(team)))
            return RedirectResponse(PREFIX, 303)
        if action == "reanalyze":
            options = {
                **job.options,
                "encoding": form.get("encoding", ""),
                "delimiter": form.get("delimiter", ""),
            }
            if not self.jobs.transition(
                job.id, "ready", "analyzing", options=options, analysis=None
            ):
                raise BadRequest(
                    f"This job is {self.jobs.get(job.id).state}; it cannot be analysed again."
                )
        else:
            if job.state != "ready" or job.analysis is None:
                raise BadRequest(
                    f"This job is {job.state}; only a job waiting for review can be imported."
                )
            self.quota.check(team, self.config.teams_dir / team, job.size)
            try:
                options = resolve(form, job.analysis, job.filename)
                # The choice is checked against the database now: a mistake is fixed here,
                # with the spooled file kept, instead of failing the job after the upload.
                existing = await asyncio.to_thread(self._existing_rows, team, options)
            except ImportFailed as exc:
                return await self.invalid(scope, job, team, str(exc))
            if (
                options["mode"] == "replace"
                and existing is not None
                and form.get("confirm_replace") != "1"
                and not wants_json(scope)
            ):
                replace = {"table": options["table"], "old": existing, "new": job.analysis["rows"],
                           "days": self.config.replaced_table_days}  # fmt: skip
                context = await self.job_context(job, team)
                fields = {k: v for k, v in form.items() if k not in ("action", "confirm_replace")}
                return self.render(
                    "upload_job.html", job=job, confirm=replace, fields=fields, **context
                )
            if not self.jobs.transition(job.id, "ready", "queued", options=options, error=None):
                raise BadRequest("This job was already confirmed.")
        self.runner.start(job.id)
        if wants_json(scope):
            return JSONResponse(self.jobs.get(job.id).public(self.config.team_url(team)), 202)
        return RedirectResponse(f"{PREFIX}/jobs/{job.id}", 303)

    async def invalid(self, scope: dict[str, Any], job: Job, team: str, message: str) -> Response:
        if wants_json(scope):
            return JSONResponse(
                {"ok": False, "status": 400, "error": "Invalid options", "detail": message}, 400
            )
        context = await self.job_context(job, team)
        return self.render("upload_job.html", 400, job=job, form_error=message, **context)


def human_bytes(n: int) -> str:
    if n < 1000:
        return f"{n} bytes"
    size = float(n)
    for unit in ("KB", "MB", "GB"):
        size /= 1000
        if size < 1000:
            return f"{size:.1f} {unit}"
    return f"{size / 1000:.1f} TB"


def _target(request: Request) -> dict[str, str] | None:
    """``?table=t&mode=append|replace`` (Datasette's table actions): the table to import into."""
    table, mode = request.query_params.get("table", ""), request.query_params.get("mode", "")
    if mode not in ("append", "replace"):
        return None
    try:
        return {"table": check_table_name(table), "mode": mode}
    except ImportFailed:
        return None


def _not_allowed() -> Response:
    raise BadRequest("Use GET or POST here.")
