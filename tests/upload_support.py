"""Helpers for the upload tests: a real gateway with a signed-in member, and job polling."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.auth.accounts import add_member, create_user
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
