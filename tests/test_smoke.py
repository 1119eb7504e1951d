"""The scenario at the top of the README: two teams, two isolated Datasettes, no Docker."""

from __future__ import annotations

import sqlite3

from gateway.config import Config
from tests.conftest import StartGateway
from tests.servers import TeamTokens, grant_token


async def test_two_teams_two_isolated_datasettes(
    config: Config, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(config, teams=("alpha", "beta"))
    for slug in ("alpha", "beta"):
        db = sqlite3.connect(config.data_dir / "teams" / slug / "data.db")
        db.execute("create table marker (team text)")
        db.execute("insert into marker values (?)", [slug])
        db.commit()
        db.close()
    await gw.wait_healthy("alpha")
    await gw.wait_healthy("beta")
    # Teams are private: the client signs in to each with a team API token (issue 5).
    tokens = {slug: grant_token(gw.app.store, slug) for slug in ("alpha", "beta")}
    async with gw.client(auth=TeamTokens(tokens)) as client:
        for slug in ("alpha", "beta"):
            r = await client.get(gw.url(slug, "/data/marker.json?_shape=array"))
            assert r.status_code == 200, r.text
            assert r.json() == [{"rowid": 1, "team": slug}]
            dbs = (await client.get(gw.url(slug, "/-/databases.json"))).json()
            assert [d["name"] for d in dbs] == ["data"]
        admin = gw.admin_headers()
        status = (await client.get(gw.url(None, "/-/gateway/status.json"), headers=admin)).json()
        assert {t["slug"]: t["state"] for t in status["teams"]} == {"alpha": "up", "beta": "up"}
        page = await client.get(gw.url(None, "/-/gateway/status"), headers=admin)
        assert "alpha" in page.text and "healthy" in page.text


async def test_the_front_page_names_no_team_and_the_status_is_for_operators(
    config: Config, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(config, teams=("secretdesk",))
    async with gw.client() as client:
        home = await client.get(gw.url(None, "/"))
        assert home.status_code == 200
        assert "Create an account" in home.text and "secretdesk" not in home.text
        page = await client.get(gw.url(None, "/-/gateway/status"))
        assert page.status_code == 303 and "/login" in page.headers["location"]
        data = await client.get(
            gw.url(None, "/-/gateway/status.json"), headers={"accept": "application/json"}
        )
        assert data.status_code == 401 and "secretdesk" not in data.text
        forged = await client.get(
            gw.url(None, "/-/gateway/status.json"),
            headers={"authorization": "Bearer not-the-token"},
        )
        assert forged.status_code in (401, 303) and "secretdesk" not in forged.text
