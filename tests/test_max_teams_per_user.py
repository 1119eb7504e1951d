"""Issue 13: each user may own at most ``max_teams_per_user`` teams.

Every way a user becomes an owner goes through the real CLI or the real web forms of a real
gateway; teams run on a real echo server (StaticRuntime), since the limit is the gateway's own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner, Result

from gateway.auth import accounts
from gateway.cli import cli
from gateway.config import Config
from gateway.store import open_store
from tests.auth_support import PASSWORD, Browser, browsers, make_user
from tests.conftest import Running, StartGateway
from tests.servers import UvicornUpstream, gateway_for

Make = Callable[[Running], Browser]
__all__ = ["browsers"]


def run(data_dir: Path, *args: str) -> Result:
    env = {"GATEWAY_NEW_PASSWORD": PASSWORD}
    return CliRunner().invoke(cli, [*args, "--data-dir", str(data_dir)], env=env)


def owned(data_dir: Path, email: str) -> list[str]:
    store = open_store(data_dir / "control.db")
    user = accounts.user_by_email(store, email)
    assert user is not None
    return sorted(t for t, role in accounts.memberships(store, user.id).items() if role == "owner")


def test_the_cli_refuses_an_owner_beyond_the_cap_unless_forced(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for slug in ("alpha", "beta", "gamma", "delta"):
        assert run(data, "teams", "create", slug).exit_code == 0
    cap = ("--max-teams-per-user", "2")
    # A new account owns no team yet: `users create --role owner` is within any cap.
    ann = ("ann@example.org", "--team", "alpha", "--role", "owner")
    made = run(data, "users", "create", *ann, *cap)
    assert made.exit_code == 0, made.output
    added = run(data, "teams", "add-member", "beta", "ann@example.org", "--role", "owner", *cap)
    assert added.exit_code == 0, added.output
    assert owned(data, "ann@example.org") == ["alpha", "beta"]

    refused = run(data, "teams", "add-member", "gamma", "ann@example.org", "--role", "owner", *cap)
    assert refused.exit_code == 1
    assert refused.output.strip().count("\n") == 0  # one line
    assert "already owns 2 teams" in refused.output
    assert "max_teams_per_user is 2" in refused.output and "--force" in refused.output
    assert owned(data, "ann@example.org") == ["alpha", "beta"]  # nothing written

    # Membership does not count; a promotion does. Owning a team already is no new team.
    assert run(data, "teams", "add-member", "gamma", "ann@example.org", *cap).exit_code == 0
    promote = run(data, "teams", "add-member", "gamma", "ann@example.org", "--role", "owner", *cap)
    assert promote.exit_code == 1 and "max_teams_per_user" in promote.output
    again = run(data, "teams", "add-member", "beta", "ann@example.org", "--role", "owner", *cap)
    assert again.exit_code == 0, again.output

    # The default (5) applies without the flag; --force and 0 (no limit) exceed it.
    forced = run(
        data, "teams", "add-member", "gamma", "ann@example.org", "--role", "owner", "--force", *cap
    )
    assert forced.exit_code == 0, forced.output
    unlimited = run(
        data, "teams", "add-member", "delta", "ann@example.org", "--role", "owner",
        "--max-teams-per-user", "0",
    )  # fmt: skip
    assert unlimited.exit_code == 0, unlimited.output
    assert owned(data, "ann@example.org") == ["alpha", "beta", "delta", "gamma"]


def test_the_cap_defaults_to_five(tmp_path: Path) -> None:
    data = tmp_path / "data"
    slugs = [f"team{i}" for i in range(6)]
    for slug in slugs:
        assert run(data, "teams", "create", slug).exit_code == 0
    assert run(data, "users", "create", "ann@example.org").exit_code == 0
    for slug in slugs[:5]:
        r = run(data, "teams", "add-member", slug, "ann@example.org", "--role", "owner")
        assert r.exit_code == 0, r.output
    sixth = run(data, "teams", "add-member", slugs[5], "ann@example.org", "--role", "owner")
    assert sixth.exit_code == 1 and "max_teams_per_user is 5" in sixth.output


# -- the web: an owner invitation ---------------------------------------------------------------
async def owner_invite(ann: Browser, site: Running) -> str:
    r = await ann.post("/teams/alpha/invite", {"role": "owner"}, page="/teams/alpha")
    link = re.search(r'value="(http[^"]+/invite/[^"]+)"', r.text)
    assert link, r.text[:300]
    return link.group(1)[len(site.config.base_url) :]


async def test_an_owner_invitation_beyond_the_cap_gets_the_error_page(
    config: Config, start_gateway: StartGateway, upstream: UvicornUpstream, browsers: Make
) -> None:
    cfg = config.replace(max_teams_per_user=1)
    addresses = {slug: [upstream.address] for slug in ("alpha", "beta")}
    site = await gateway_for(start_gateway, cfg, addresses)
    make_user(site, "ann@example.org", {"alpha": "owner"})
    make_user(site, "bob@example.org", {"beta": "owner"})
    ann, bob = browsers(site), browsers(site)
    await ann.login("ann@example.org")
    await bob.login("bob@example.org")

    path = await owner_invite(ann, site)
    r = await bob.post(path, {})
    assert r.status_code == 400 and "text/html" in r.headers["content-type"]
    assert "already owns 1 team," in r.text and "the most one account may own" in r.text
    assert (await bob.get(site.url("alpha", "/echo"))).status_code == 403  # not a member
    (row,) = site.app.store.query("SELECT used_at FROM invites")
    assert row["used_at"] is None  # the link was not spent

    # A member invitation is no ownership; and a new account through an owner invitation
    # owns one team, within the cap.
    r = await ann.post("/teams/alpha/invite", {"role": "member"}, page="/teams/alpha")
    link = re.search(r'value="(http[^"]+/invite/[^"]+)"', r.text)
    assert link
    r = await bob.post(link.group(1)[len(site.config.base_url) :], {})
    assert r.status_code == 303, r.text[:300]
    assert (await bob.get(site.url("alpha", "/echo"))).status_code == 200
    token = path.rsplit("/", 1)[1]
    form = {"email": "cy@example.org", "password": PASSWORD, "team": ""}
    r = await browsers(site).post(f"/register?invite={token}", form)
    assert r.status_code == 303, r.text[:300]
    cy = accounts.user_by_email(site.app.store, "cy@example.org")
    assert cy is not None and accounts.memberships(site.app.store, cy.id) == {"alpha": "owner"}
