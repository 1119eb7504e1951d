"""Password reset through a real SMTP server, API tokens, invitations and membership changes.

Teams run on a real echo server (StaticRuntime): these tests are about the gateway's answers.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import re
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from click.testing import CliRunner
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from gateway.auth import keys
from gateway.cli import cli
from gateway.config import Config
from tests.auth_support import PASSWORD, Browser, Mailbox, browsers, site, two_teams
from tests.conftest import LoopbackTransport, Running, StartGateway
from tests.servers import UvicornUpstream

Make = Callable[[Running], Browser]
__all__ = ["browsers", "site"]
LINK = re.compile(r"(http\S+/reset/\S+)")


OWNERS = {"ann@example.org": "alpha", "bob@example.org": "beta"}


async def start(start_gateway: StartGateway, config: Config, up: UvicornUpstream) -> Running:
    return await two_teams(start_gateway, config, up, OWNERS)


async def test_reset_by_mail_works_once_and_uses_the_base_url(
    config: Config, start_gateway: StartGateway, upstream: UvicornUpstream, browsers: Make
) -> None:
    with Mailbox() as mailbox:
        cfg = config.replace(smtp_host="127.0.0.1", smtp_port=mailbox.port)
        site = await start(start_gateway, cfg, upstream)
        b = browsers(site)
        token = await b.token("/reset")
        # A spoofed Host (another port) and forwarded host must not leak into the link.
        spoof = {"host": "localhost:1", "x-forwarded-host": "evil.example"}
        r = await b.post("/reset", {"email": "ann@example.org", "csrf_token": token}, headers=spoof)
        assert r.status_code == 200 and "If an account exists" in r.text
        assert await asyncio.to_thread(mailbox.event.wait, 30)
        message = email.message_from_string(mailbox.messages[0], policy=email.policy.default)
        assert message["To"] == "ann@example.org" and message["Subject"] == "Reset your password"
        body = message.get_content()
        link = LINK.search(body)
        assert link, body
        url = link.group(1)
        assert url.startswith(site.config.base_url + "/reset/"), url
        path = url[len(site.config.base_url) :]
        assert (await b.get(site.url(None, path))).status_code == 200
        new = "a brand new passphrase"
        r = await b.post(path, {"new_password": new})
        assert r.status_code == 303 and r.headers["location"] == "/login?reset=1"
        assert (await b.login("ann@example.org", password=new)).status_code == 303
        # Single use: the token was bound to the old password hash.
        r = await b.post(path, {"new_password": "yet another passphrase"}, page="/reset")
        assert r.status_code == 400 and "invalid, has expired or was already used" in r.text
        assert len(mailbox.messages) == 1


class LinkLogged(logging.Handler):
    """Set once a reset link is logged (the unsent mail's one line)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "/reset/" in record.getMessage():
            self.event.set()


async def test_reset_token_expires_and_unknown_addresses_get_no_mail(
    config: Config,
    start_gateway: StartGateway,
    upstream: UvicornUpstream,
    browsers: Make,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Without SMTP the link is logged only when the operator turned that on (unsent_mail).
    site = await start(start_gateway, config.replace(unsent_mail="log"), upstream)
    b = browsers(site)
    logged = LinkLogged()
    mail_log = logging.getLogger("gateway.mail")
    mail_log.addHandler(logged)
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.mail"):
            await b.post("/reset", {"email": "nobody@example.org"})
            await b.post("/reset", {"email": "bob@example.org"})
            # The mail task runs in the background: wait for its line (bounded), not a while.
            assert await asyncio.to_thread(logged.event.wait, 30), "bob's reset link never logged"
    finally:
        mail_log.removeHandler(logged)
    # Without SMTP configured, the link is logged (docs/auth.md says so); only bob's.
    assert caplog.text.count("/reset/") == 1 and "bob@example.org" in caplog.text
    assert len([r for r in caplog.records if "/reset/" in r.getMessage()]) == 1
    assert "\n" not in next(r.getMessage() for r in caplog.records if "/reset/" in r.getMessage())
    user = site.app.store.query("SELECT * FROM users WHERE email = 'ann@example.org'")[0]
    from gateway.auth.accounts import user_by_id
    from gateway.auth.views_account import password_fingerprint

    ann = user_by_id(site.app.store, user["id"])
    assert ann is not None

    class Old(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 3601  # signed just over an hour ago

    old = URLSafeTimedSerializer(
        keys.load_keys(site.app.store), salt=keys.SALTS["reset"], signer=Old
    )
    token = old.dumps({"u": ann.id, "h": password_fingerprint(ann)})
    r = await b.get(site.url(None, f"/reset/{token}"))
    assert r.status_code == 400
    fresh = URLSafeTimedSerializer(keys.load_keys(site.app.store), salt=keys.SALTS["reset"])
    ok = fresh.dumps({"u": ann.id, "h": password_fingerprint(ann)})
    assert (await b.get(site.url(None, f"/reset/{ok}"))).status_code == 200
    session_salted = URLSafeTimedSerializer(
        keys.load_keys(site.app.store), salt=keys.SALTS["session"]
    ).dumps({"u": ann.id, "h": password_fingerprint(ann)})
    assert (await b.get(site.url(None, f"/reset/{session_salted}"))).status_code == 400


async def test_api_tokens_create_use_revoke_expire(site: Running, browsers: Make) -> None:
    b = browsers(site)
    await b.login("ann@example.org")
    r = await b.post("/teams/alpha/token", {"name": "ci", "expires_days": ""}, page="/teams/alpha")
    assert r.status_code == 200
    match = re.search(r'value="(gwt_[^"]+)"', r.text)
    assert match
    raw = match.group(1)
    async with httpx.AsyncClient(
        transport=LoopbackTransport()
    ) as api:  # a plain API client, no cookies
        ok = await api.get(site.url("alpha", "/echo"), headers={"authorization": f"Bearer {raw}"})
        assert ok.status_code == 200
        other = await api.get(site.url("beta", "/"), headers={"authorization": f"Bearer {raw}"})
        assert other.status_code == 401 and other.json()["status"] == 401
        bogus = await api.get(site.url("alpha", "/echo"), headers={"authorization": "Bearer gwt_x"})
        assert bogus.status_code == 401
    row = site.app.store.query("SELECT * FROM api_tokens WHERE name = 'ci'")[0]
    assert row["last_used"] is not None
    page = await b.get(site.url(None, "/teams/alpha"))
    assert "ci" in page.text and raw not in page.text  # shown once, never again
    r = await b.post("/teams/alpha/revoke-token", {"token_id": row["id"]}, page="/teams/alpha")
    assert r.status_code == 303
    async with httpx.AsyncClient(transport=LoopbackTransport()) as api:
        gone = await api.get(site.url("alpha", "/echo"), headers={"authorization": f"Bearer {raw}"})
        assert gone.status_code == 401
        expired = site.app.auth.tokens.create("alpha", row["user_id"], "old", expires_in=-1)
        r = await api.get(
            site.url("alpha", "/echo"), headers={"authorization": f"Bearer {expired}"}
        )
        assert r.status_code == 401
    r = await b.post("/teams/alpha/token", {"name": "x", "expires_days": "-3"}, page="/teams/alpha")
    assert r.status_code == 400


async def test_invite_works_once_and_owner_removes_member(site: Running, browsers: Make) -> None:
    ann, bob = browsers(site), browsers(site)
    await ann.login("ann@example.org")
    await bob.login("bob@example.org")
    assert (await bob.get(site.url("alpha", "/echo"))).status_code == 403
    r = await ann.post("/teams/alpha/invite", {"role": "member"}, page="/teams/alpha")
    link = re.search(r'value="(http[^"]+/invite/[^"]+)"', r.text)
    assert link and link.group(1).startswith(site.config.base_url)
    path = link.group(1)[len(site.config.base_url) :]
    # Bob cannot use ann's invite page to remove people: members are not owners.
    r = await bob.post(path, {})
    assert r.status_code == 303 and r.headers["location"] == "/teams/alpha"
    assert (await bob.get(site.url("alpha", "/echo"))).status_code == 200  # next request: member
    r = await bob.post(path, {}, page="/dashboard")
    assert r.status_code == 400  # used once already
    bob_id = site.app.store.query("SELECT id FROM users WHERE email='bob@example.org'")[0][0]
    ann_id = site.app.store.query("SELECT id FROM users WHERE email='ann@example.org'")[0][0]
    r = await bob.post("/teams/alpha/remove-member", {"user_id": ann_id}, page="/teams/alpha")
    assert r.status_code == 403
    r = await ann.post("/teams/alpha/remove-member", {"user_id": bob_id}, page="/teams/alpha")
    assert r.status_code == 303
    assert (await bob.get(site.url("alpha", "/echo"))).status_code == 403  # on the next request
    # The fixture's API-token user is alpha's other owner; once it is gone, ann is the last.
    tests_id = site.app.store.query("SELECT id FROM users WHERE email LIKE 'tests@alpha%'")[0][0]
    r = await ann.post("/teams/alpha/remove-member", {"user_id": tests_id}, page="/teams/alpha")
    assert r.status_code == 303
    r = await ann.post("/teams/alpha/remove-member", {"user_id": ann_id}, page="/teams/alpha")
    assert r.status_code == 400 and "at least one owner" in r.text


async def test_an_invitation_expires_after_seven_days(site: Running, browsers: Make) -> None:
    """docs/auth.md: an invitation link is signed, valid 7 days, single use. Past 7 days it is
    refused, whether the signature or the store's record says so, and nobody joins."""
    from gateway.auth import accounts

    ann, bob = browsers(site), browsers(site)
    await ann.login("ann@example.org")
    await bob.login("bob@example.org")
    store = site.app.store
    ann_id = store.query("SELECT id FROM users WHERE email='ann@example.org'")[0][0]
    week = 7 * 86400

    class Old(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - week - 60  # signed just over 7 days ago

    def link(invite_id: str, signer: type[TimestampSigner] = TimestampSigner) -> str:
        keys_ = keys.load_keys(store)
        serializer = URLSafeTimedSerializer(keys_, salt=keys.SALTS["invite"], signer=signer)
        return f"/invite/{serializer.dumps(invite_id)}"

    # A fresh record, but a signature older than 7 days.
    stale_signature = accounts.create_invite(store, "alpha", ann_id)
    (row,) = store.query("SELECT * FROM invites WHERE id = ?", [stale_signature])
    assert row["expires_at"] - row["created_at"] == week
    r = await bob.post(link(stale_signature, Old), {}, page="/dashboard")
    assert r.status_code == 400 and "expired" in r.text
    # A fresh signature, but a record past its 7 days (as the store holds it a week later).
    stale_record = accounts.create_invite(store, "alpha", ann_id)
    with store.transaction() as conn:
        conn.execute(
            "UPDATE invites SET created_at = created_at - ?, expires_at = expires_at - ?"
            " WHERE id = ?",
            [week + 60, week + 60, stale_record],
        )
    r = await bob.post(link(stale_record), {}, page="/dashboard")
    assert r.status_code == 400 and "expired" in r.text
    assert (await bob.get(site.url("alpha", "/echo"))).status_code == 403  # never joined
    # The same invitation, fresh on both counts, works: the refusals were the expiry.
    fresh = accounts.create_invite(store, "alpha", ann_id)
    r = await bob.post(link(fresh), {})
    assert r.status_code == 303
    assert (await bob.get(site.url("alpha", "/echo"))).status_code == 200


async def test_cli_membership_changes_apply_on_the_next_request(
    site: Running, browsers: Make
) -> None:
    bob = browsers(site)
    await bob.login("bob@example.org")
    args = ["--data-dir", str(site.config.data_dir)]

    def run(*cmd: str) -> str:
        result = CliRunner().invoke(cli, [*cmd, *args])
        assert result.exit_code == 0, result.output
        return result.output

    run("teams", "add-member", "alpha", "bob@example.org")
    assert (await bob.get(site.url("alpha", "/echo"))).status_code == 200
    run("teams", "remove-member", "alpha", "bob@example.org")
    assert (await bob.get(site.url("alpha", "/echo"))).status_code == 403
    result = CliRunner().invoke(cli, ["teams", "add-member", "alpha", "nobody@example.org", *args])
    assert result.exit_code == 1 and "no user" in result.output
    result = CliRunner().invoke(
        cli,
        ["users", "create", "weak@example.org", *args],
        env={"GATEWAY_NEW_PASSWORD": "password1"},
    )
    assert result.exit_code == 1 and "common" in result.output
    out = CliRunner().invoke(
        cli,
        ["users", "create", "cli@example.org", "--team", "alpha", *args],
        env={"GATEWAY_NEW_PASSWORD": PASSWORD},
    )
    assert out.exit_code == 0, out.output
    cli_user = browsers(site)
    await cli_user.login("cli@example.org")
    assert (await cli_user.get(site.url("alpha", "/echo"))).status_code == 200
