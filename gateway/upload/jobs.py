"""Import jobs in the control store (migration 3): created by the page, advanced by the worker.

A job moves ``analyzing -> ready -> queued -> importing -> done``; any step may end in
``failed``. ``ready`` waits for the user's choices on the preview page (or goes straight on
when the upload asked for ``auto``). Jobs never live in the team's own database, so a page
reload or a replaced instance loses nothing.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from gateway.store.db import Store

RUNNING = ("analyzing", "queued", "importing")
STAGING_PREFIX = "_gateway_staging_"
# Each import's publication marker, committed with its rows (importer.py); hidden by the
# instance's plugin (instance/gateway_plugin.py names it too).
IMPORTS_TABLE = "_gateway_imports"
# Tables in a team's database that are not the journalist's: SQLite's own, an import's staging
# table, the publication markers, Litestream's bookkeeping (gateway/backup/) and a replaced
# table on its way to the trash (trash.py). Never listed, renamed, dropped or imported into.
SERVICE_TABLES = ("sqlite_", STAGING_PREFIX, IMPORTS_TABLE, "_litestream_", "_gateway_replaced_")


@dataclass
class Job:
    id: str
    team: str
    user_id: str | None
    filename: str
    spool_path: str
    size: int
    state: str
    auto: bool
    bytes_done: int
    rows_done: int
    options: dict[str, Any]
    analysis: dict[str, Any] | None
    result: dict[str, Any] | None
    error: str | None
    pid: int | None
    created_at: float
    updated_at: float

    @property
    def staging_table(self) -> str:
        return STAGING_PREFIX + self.id

    def public(self, base: str) -> dict[str, Any]:
        """The JSON shape clients see; never the spool path or the pid."""
        analysis = self.analysis or {}
        total = self.size or 1
        return {
            "id": self.id,
            "url": f"{base}/-/upload-csv/jobs/{self.id}.json",
            "page": f"{base}/-/upload-csv/jobs/{self.id}",
            "filename": self.filename,
            "size": self.size,
            "state": self.state,
            "progress": round(min(self.bytes_done / total, 1.0), 4),
            "rows_done": self.rows_done,
            "rows_total": analysis.get("rows"),
            "options": self.options,
            "analysis": analysis or None,
            "result": _with_link(self.result, base),
            "error": self.error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def _with_link(result: dict[str, Any] | None, base: str) -> dict[str, Any] | None:
    if not result or not result.get("table"):
        return result
    from datasette.utils import tilde_encode  # only the gateway renders links, not the worker

    return {**result, "table_url": f"{base}/data/{tilde_encode(result['table'])}"}


def new_id() -> str:
    # Hex only: the id ends up inside a staging table name and a file name.
    return secrets.token_hex(8)


class Jobs:
    def __init__(self, store: Store) -> None:
        self.store = store

    def create(
        self,
        *,
        job_id: str,
        team: str,
        user_id: str | None,
        filename: str,
        spool_path: str,
        size: int,
        auto: bool,
        options: dict[str, Any],
    ) -> Job:
        now = time.time()
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO import_jobs (id, team, user_id, filename, spool_path, size, state,"
                " auto, options, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 'analyzing', ?, ?, ?, ?)",
                [job_id, team, user_id, filename, spool_path, size, int(auto),
                 json.dumps(options), now, now],
            )  # fmt: skip
        return self.get(job_id)

    def get(self, job_id: str, team: str | None = None) -> Job:
        rows = self.store.query("SELECT * FROM import_jobs WHERE id = ?", [job_id])
        if not rows or (team is not None and rows[0]["team"] != team):
            raise KeyError(job_id)
        return _job(rows[0])

    def for_team(self, team: str, limit: int = 20) -> list[Job]:
        rows = self.store.query(
            "SELECT * FROM import_jobs WHERE team = ? ORDER BY created_at DESC LIMIT ?",
            [team, limit],
        )
        return [_job(r) for r in rows]

    def unfinished(self) -> list[Job]:
        marks = ",".join("?" * len(RUNNING))
        rows = self.store.query(f"SELECT * FROM import_jobs WHERE state IN ({marks})", RUNNING)
        return [_job(r) for r in rows]

    def open_count(self, team: str) -> int:
        marks = ",".join("?" * (len(RUNNING) + 1))
        rows = self.store.query(
            f"SELECT count(*) FROM import_jobs WHERE team = ? AND state IN ({marks})",
            [team, "ready", *RUNNING],
        )
        return int(rows[0][0])

    def ready(self) -> list[Job]:
        return [
            _job(r) for r in self.store.query("SELECT * FROM import_jobs WHERE state = 'ready'")
        ]

    def update(self, job_id: str, **fields: Any) -> None:
        allowed = {
            "state", "bytes_done", "rows_done", "options", "analysis", "result", "error", "pid",
            "auto",
        }  # fmt: skip
        if set(fields) - allowed:
            raise ValueError(f"cannot update {sorted(set(fields) - allowed)}")
        for key in ("options", "analysis", "result"):
            if key in fields and fields[key] is not None:
                fields[key] = json.dumps(fields[key])
        fields["updated_at"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.store.transaction() as conn:
            conn.execute(f"UPDATE import_jobs SET {cols} WHERE id = ?", [*fields.values(), job_id])

    def transition(self, job_id: str, from_state: str, to_state: str, **fields: Any) -> bool:
        """Move a job on only if it is still in ``from_state`` (one confirm wins, not two)."""
        with self.store.transaction() as conn:
            row = conn.execute("SELECT state FROM import_jobs WHERE id = ?", [job_id]).fetchone()
            if row is None or row["state"] != from_state:
                return False
            conn.execute(
                "UPDATE import_jobs SET state = ?, updated_at = ? WHERE id = ?",
                [to_state, time.time(), job_id],
            )
        if fields:
            self.update(job_id, **fields)
        return True

    def fail(self, job_id: str, message: str) -> None:
        self.update(job_id, state="failed", error=message, pid=None)


def _job(row: Any) -> Job:
    def load(value: str | None) -> Any:
        return json.loads(value) if value else None

    return Job(
        id=row["id"],
        team=row["team"],
        user_id=row["user_id"],
        filename=row["filename"],
        spool_path=row["spool_path"],
        size=row["size"],
        state=row["state"],
        auto=bool(row["auto"]),
        bytes_done=row["bytes_done"],
        rows_done=row["rows_done"],
        options=load(row["options"]) or {},
        analysis=load(row["analysis"]),
        result=load(row["result"]),
        error=row["error"],
        pid=row["pid"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
