"""Helpers for the upload tests: a real gateway with a signed-in member, and job polling."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway.auth.accounts import add_member, create_user
from gateway.upload.source import BATCH
from tests.conftest import Running


@dataclass
class Member:
    running: Running
    token: str
    cookie: str
    team: str = "alpha"

    def url(self, path: str, team: str | None = None) -> str:
        return self.running.url(team or self.team, path)

    def client(self) -> httpx.AsyncClient:
        return self.running.client(headers={"authorization": f"Bearer {self.token}"})

    def browser(self) -> httpx.AsyncClient:
        """Signed in by the session cookie, as a browser is."""
        name = self.running.app.auth.cookie_name
        return self.running.client(headers={"cookie": f"{name}={self.cookie}"})

    async def post(
        self, content: bytes, filename: str = "data.csv", team: str | None = None, **fields: str
    ) -> httpx.Response:
        async with self.client() as c:
            return await c.post(
                self.url("/-/upload-csv", team),
                files={"file": (filename, content, "text/csv")},
                data=fields,
                headers={"accept": "application/json"},
            )

    async def wait(self, job: dict[str, Any], until: tuple[str, ...], timeout: float = 120) -> dict:
        deadline = asyncio.get_running_loop().time() + timeout
        async with self.client() as c:
            while True:
                r = await c.get(job["url"], headers={"accept": "application/json"})
                assert r.status_code == 200, r.text
                data = r.json()
                if data["state"] in until:
                    return data
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"job stuck in {data['state']}: {data}")
                await asyncio.sleep(0.1)

    async def upload(self, content: bytes, filename: str = "data.csv", **fields: str) -> dict:
        """Upload with ``auto`` and wait until the job is done or failed."""
        r = await self.post(content, filename, auto="1", **fields)
        assert r.status_code == 202, r.text
        return await self.wait(r.json()["jobs"][0], ("done", "failed"))

    async def rows(self, table_url: str) -> list[dict[str, Any]]:
        """Read a table back through Datasette's JSON API, through the gateway."""
        async with self.client() as c:
            r = await c.get(table_url + ".json", params={"_shape": "array", "_size": "max"})
            assert r.status_code == 200, r.text
            return r.json()

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.running.config.teams_dir / self.team / "data.db")


async def sign_in(running: Running, team: str = "alpha", email: str = "j@example.org") -> Member:
    store = running.app.store
    user = create_user(store, email, "not-a-real-hash")
    add_member(store, team, user.id)
    token = running.app.auth.tokens.create(team, user.id, "tests")
    cookie, _ = running.app.auth.sessions.create(user.id)
    running.app.auth.changed()
    await running.wait_healthy(team, timeout=60)
    return Member(running, token, cookie, team)


def staging_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE name LIKE '\\_gateway\\_staging%' ESCAPE '\\'"
    )
    return [r[0] for r in rows]


def two_batches(rows: int = BATCH + BATCH // 2) -> bytes:
    """A CSV the importer takes in two batches (source.BATCH rows each at most)."""
    assert BATCH < rows <= 2 * BATCH
    return b"id,name\n" + b"".join(b"%d,row %d\n" % (i, i) for i in range(rows))


def _has_table(db: Path, table: str) -> bool:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", [table]).fetchone()
        return found is not None
    finally:
        conn.close()


def hold_after_publication(
    control_db: Path, team_db: Path, job_id: str, table: str, timeout: float = 120
) -> sqlite3.Connection | None:
    """Stop an import's worker for real between its publication and the record of its end.

    From the worker's first progress report on a ``two_batches`` import, this takes the
    control store's write lock: the worker's next report is a second away, so it imports the
    second batch and publishes (the table appears in ``team_db``), then waits for the lock to
    record ``done``. Returns the connection holding the lock (the caller ends it), or None when
    the worker got past (it finished first, or was slow enough to need a second report before
    publishing, so the lock was let go): try again with another job."""
    deadline = time.monotonic() + timeout
    while (state := job_state(control_db, job_id)) != ("importing", True):
        if state[0] in ("done", "failed", "ready"):
            return None
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} never reported its first batch: {state}")
        time.sleep(0.001)
    conn = sqlite3.connect(control_db, timeout=10, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    row = conn.execute("SELECT state FROM import_jobs WHERE id = ?", [job_id]).fetchone()
    if row[0] != "importing":  # the worker recorded its end before the lock was taken
        conn.execute("ROLLBACK")
        conn.close()
        return None
    # Below the worker's 10 s wait for the store (store/db.py), so a progress report that
    # waits here is let go in time, not failed.
    until = time.monotonic() + 8
    while time.monotonic() < until:
        if _has_table(team_db, table):
            return conn
        time.sleep(0.005)
    conn.execute("ROLLBACK")
    conn.close()
    return None


def job_state(control_db: Path, job_id: str) -> tuple[str, bool]:
    """(state, whether a first batch was reported) of a job, read as another process would."""
    conn = sqlite3.connect(f"file:{control_db}?mode=ro", uri=True, timeout=10)
    try:
        row = conn.execute(
            "SELECT state, rows_done FROM import_jobs WHERE id = ?", [job_id]
        ).fetchone()
        return str(row[0]), int(row[1]) >= BATCH
    finally:
        conn.close()
