"""Issue 13, case 6: self-service sign-up and storage have limits, each with a clear answer.

Sign-ups go through the real /register form of a real gateway; teams run on a real echo
server (StaticRuntime), since these limits are the gateway's own. The quota is proven with
real uploads into a real Datasette team (local runtime).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
from click.testing import CliRunner

from gateway.cli import cli
from gateway.config import Config
from gateway.runtimes.static import StaticRuntime
from tests.auth_support import PASSWORD, Browser, browsers
from tests.conftest import Running, StartGateway
from tests.servers import UvicornUpstream
from tests.upload_support import sign_in

Make = Callable[[Running], Browser]
__all__ = ["browsers"]
SLUGS = [f"team{i}" for i in range(10)]


async def start(start_gateway: StartGateway, config: Config, up: UvicornUpstream) -> Running:
    runtime = StaticRuntime({slug: up.address for slug in [*SLUGS, "alpha"]})
    return await start_gateway(config, runtime=runtime)


async def register(b: Browser, n: int, ip: str | None = None) -> httpx.Response:
    form = {"email": f"user{n}@example.org", "password": PASSWORD, "team": SLUGS[n]}
    headers = {"x-forwarded-for": ip} if ip else None
    return await b.post("/register", form, page="/register", headers=headers)


async def test_the_sixth_signup_from_one_address_in_an_hour_gets_429(
    config: Config, start_gateway: StartGateway, upstream: UvicornUpstream, browsers: Make
) -> None:
    # Traefik in front (trusted_proxies): each X-Forwarded-For is a different client.
    cfg = config.replace(trusted_proxies="127.0.0.1", signups_per_hour=6)
    gw = await start(start_gateway, cfg, upstream)
    for n in range(5):
        r = await register(browsers(gw), n, "198.51.100.7")
        assert r.status_code == 303, (n, r.text[:300])
    r = await register(browsers(gw), 5, "198.51.100.7")
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert "text/html" in r.headers["content-type"]
    assert "Too many new accounts" in r.text and "minutes" in r.text
    users = [row[0] for row in gw.app.store.query("SELECT email FROM users")]
    assert "user5@example.org" not in users and len(users) == 5
    # Another address may still sign up ... until the gateway's hourly total is spent.
    assert (await register(browsers(gw), 6, "203.0.113.9")).status_code == 303
    r = await register(browsers(gw), 7, "192.0.2.44")
    assert r.status_code == 429 and "many sign-ups right now" in r.text


async def test_at_max_teams_signups_are_closed_and_the_cli_needs_force(
    config: Config, start_gateway: StartGateway, upstream: UvicornUpstream, browsers: Make
) -> None:
    gw = await start(start_gateway, config.replace(max_teams=2), upstream)
    gw.app.store.create_team("alpha")
    assert (await register(browsers(gw), 0)).status_code == 303  # the second team
    r = await register(browsers(gw), 1)
    assert r.status_code == 503 and "sign-ups are closed" in r.text
    assert [t.slug for t in gw.app.store.teams()] == ["alpha", SLUGS[0]]
    args = ["--data-dir", str(gw.config.data_dir), "--max-teams", "2", "--no-wait"]
    refused = CliRunner().invoke(cli, ["teams", "create", SLUGS[2], *args])
    assert refused.exit_code == 1 and "--force" in refused.output
    forced = CliRunner().invoke(cli, ["teams", "create", SLUGS[2], "--force", *args])
    assert forced.exit_code == 0, forced.output
    assert len(gw.app.store.teams()) == 3


# -- storage quota ----------------------------------------------------------------------------
def csv_of(size: int) -> bytes:
    row = b"1234567890,abcdefghij,klmnopqrst\n"
    return b"a,b,c\n" + row * (size // len(row))


async def test_an_upload_past_the_team_quota_gets_413_with_the_usage(
    config: Config, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(config.replace(team_quota_bytes=256 * 1024), teams=("alpha",))
    member = await sign_in(gw)
    spool = config.teams_dir / "alpha" / ".spool"
    r = await member.post(csv_of(400 * 1024), "big.csv")
    assert r.status_code == 413, r.text
    detail = r.json()["detail"]
    assert "storage is full" in detail and "MiB of its" in detail and "quota" in detail
    assert not any(spool.glob("*"))  # nothing half-written is left behind
    job = await member.upload(csv_of(20 * 1024), "small.csv")
    assert job["state"] == "done", job

    # Two uploads streaming at once: each fits alone, together they do not.
    first_sent = asyncio.Event()
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        boundary = b"--q\r\n"
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
        yield csv_of(120 * 1024)
        first_sent.set()
        await release.wait()
        yield b"\r\n--q--\r\n"

    async with member.client() as c:
        slow = asyncio.ensure_future(
            c.post(
                member.url("/-/upload-csv"),
                content=slow_body(),
                headers={
                    "content-type": "multipart/form-data; boundary=q",
                    "accept": "application/json",
                },
            )
        )
        await first_sent.wait()
        for _ in range(200):  # until the gateway has spooled the first upload's bytes
            if any(p.stat().st_size > 110 * 1024 for p in spool.glob("*.part")):
                break
            await asyncio.sleep(0.05)
        second = await member.post(csv_of(120 * 1024), "b.csv")
        assert second.status_code == 413, second.text
        assert "uploads in progress included" in second.json()["detail"]
        release.set()
        first = await slow
        assert first.status_code == 202, first.text
