"""The same traffic mix as scenario.py, for locust (`pip install -e '.[load]'`).

Prepare the teams first: each needs an ``events`` table, the writable canned query
``add_event`` (the POSTs fail with 500 without it) and a token. One command does it and prints
the exact gateway, locust and ab command lines:

    python -m tests.load.prep --data-dir load-data --port 8000

Run `gateway deploy --all` or `gateway restart` in another terminal while it runs; locust's
failure table must stay empty (and it exits 1 otherwise). tests/load/test_load_tools.py runs
a short headless form with a deploy in the middle.
"""

from __future__ import annotations

import os
import random
import uuid

from locust import HttpUser, between, task  # type: ignore[import-not-found]

PORT = os.environ.get("PORT", "8000")
TEAMS = [t.split(":", 1) for t in os.environ.get("LOAD_TEAMS", "").split(",") if ":" in t]


class Journalist(HttpUser):  # type: ignore[misc]
    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        if not TEAMS:
            raise SystemExit("set LOAD_TEAMS=team:token,...")
        team, token = random.choice(TEAMS)
        self.team = team
        self.headers = {"Host": f"{team}.localhost:{PORT}", "Authorization": f"Bearer {token}"}

    @task(3)
    def html(self) -> None:
        self.client.get("/data/events?_size=20", headers=self.headers, name="html")

    @task(3)
    def json(self) -> None:
        self.client.get("/data/events.json?_size=20", headers=self.headers, name="json")

    @task(2)
    def sql(self) -> None:
        self.client.get(
            "/data.json",
            params={"sql": "select count(*) from events"},
            headers=self.headers,
            name="sql",
        )

    @task(2)
    def post(self) -> None:
        self.client.post(
            "/data/add_event?_json=1",
            data={"uid": uuid.uuid4().hex, "team": self.team},
            headers=self.headers,
            name="post",
        )
