"""CSRF, open redirects, enumeration, throttling and over-long passwords on the real gateway.

These need no Datasette behind a team, so teams run on a real echo server (StaticRuntime).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from gateway.config import Config
from tests.auth_support import PASSWORD, Browser, browsers, make_user, site, two_teams
from tests.conftest import Running, StartGateway
from tests.servers import UvicornUpstream

Make = Callable[[Running], Browser]
__all__ = ["browsers", "site"]


OWNERS = {"ann@example.org": "alpha"}


async def start(start_gateway: StartGateway, config: Config, up: UvicornUpstream) -> Running:
    return await two_teams(start_gateway, config, up, OWNERS)


async def test_csrf_variants_on_login_and_logout(site: Running, browsers: Make) -> None:
    b = browsers(site)
    form = {"email": "ann@example.org", "password": PASSWORD}
    sibling = site.url("beta", "").rstrip("/")
    refused = [
        {"origin": None},
        {"origin": "null"},
        {"origin": "http://evil.example"},
        {"origin": sibling},  # same-site, but not same-origin
        {"origin": site.url(None, "").rstrip("/").replace("http:", "https:")},
        {"origin": "same", "headers": {"sec-fetch-site": "same-site"}},
        {"origin": "same", "headers": {"sec-fetch-site": "cross-site"}},
    ]
    for variant in refused:
        r = await b.post("/login", form, **variant)  # type: ignore[arg-type]
        assert r.status_code == 403, variant
        assert b.cookie("gateway_session") is None
    r = await b.post("/login", {**form, "csrf_token": "forged"})
    assert r.status_code == 403
    other = browsers(site)  # a token minted for another browser's anonymous binding
    r = await b.post("/login", {**form, "csrf_token": await other.token("/login")})
    assert r.status_code == 403
    r = await b.post("/login", form, headers={"sec-fetch-site": "same-origin"})
    assert r.status_code == 303 and b.cookie("gateway_session")
    # Signed in, the token is bound to the session: a pre-login token no longer works.
    r = await b.post("/logout", {"csrf_token": await other.token("/login")})
    assert r.status_code == 403
    r = await b.post("/logout", {}, page="/dashboard", origin=sibling)
    assert r.status_code == 403
    r = await b.post("/logout", {}, page="/dashboard")
    assert r.status_code == 303


async def test_open_redirect_variants_are_refused(site: Running, browsers: Make) -> None:
    b = browsers(site)
    port = site.port
    refused = [
        "//evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "https:evil.example",
        "http:evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        " //evil.example",
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "data:text/html,hi",
        "http://evil.example/",
        f"http://evil.example:{port}/",
        f"http://localhost.evil.example:{port}/",
        f"http://ann@evil.example:{port}/",
        f"http://localhost:{port}@evil.example/",
        f"http://beta.localhost:{port}/",  # a team ann is not a member of
        f"https://alpha.localhost:{port}/",  # wrong scheme
        f"http://alpha.localhost:{port + 1}/",  # wrong port
    ]
    for target in refused:
        r = await b.login("ann@example.org", next_url=target)
        assert r.status_code == 303, target
        assert r.headers["location"] == "/dashboard", target
    allowed = ["/teams/alpha?x=1", f"http://alpha.localhost:{port}/data?y=2", site.url(None, "/")]
    for target in allowed:
        r = await b.login("ann@example.org", next_url=target)
        assert r.headers["location"] == target


def _strip_token(html: str) -> str:
    return re.sub(r'name="csrf_token" value="[^"]+"', "", html)


async def test_known_and_unknown_emails_get_identical_answers(
    site: Running, browsers: Make
) -> None:
    passwords = site.app.auth.passwords
    answers = {}
    for email in ("ann@example.org", "nobody@example.org"):
        b = browsers(site)
        before = passwords.hashes
        login = await b.login(email, password="wrong password here")
        login_work = passwords.hashes - before
        reset = await b.post("/reset", {"email": email})
        answers[email] = (
            login.status_code,
            _strip_token(login.text).replace(email, "EMAIL"),
            login_work,
            reset.status_code,
            _strip_token(reset.text),
        )
    assert answers["ann@example.org"] == answers["nobody@example.org"]
    assert answers["ann@example.org"][2] == 1  # one argon2 verification either way
    # Registration: the same work (one hash) for a known address, and the page does not
    # say that it exists. (Its status differs: a new address lands signed in on the
    # dashboard; hiding that needs email verification, see docs/auth.md.)
    regs = {}
    for email in ("ann@example.org", "new@example.org"):
        b = browsers(site)
        before = passwords.hashes
        r = await b.post(
            "/register", {"email": email, "password": "a fine passphrase", "team": "zeta"}
        )
        regs[email] = (r.status_code, passwords.hashes - before, r.text.lower())
    assert regs["ann@example.org"][:2] == (400, 1) and regs["new@example.org"][:2] == (303, 1)
    assert "we could not create an account with these details" in regs["ann@example.org"][2]
    assert "already an account for" not in regs["ann@example.org"][2]


async def test_over_long_password_is_refused_without_hashing(site: Running, browsers: Make) -> None:
    b = browsers(site)
    passwords = site.app.auth.passwords
    before = passwords.hashes
    huge = "p" * 2048
    r = await b.login("ann@example.org", password=huge)
    assert r.status_code == 400
    r = await b.post("/register", {"email": "x@example.org", "password": huge, "team": "omega"})
    assert r.status_code == 400 and "at most 1024 bytes" in r.text
    assert passwords.hashes == before  # nothing was hashed


async def test_account_throttle_bans_after_three_failures(site: Running, browsers: Make) -> None:
    b = browsers(site)
    for _ in range(3):
        r = await b.login("ann@example.org", password="wrong password!")
        assert r.status_code == 400
    r = await b.login("ann@example.org")  # even the right password is refused while banned
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) > 0 and "Too many" in r.text
    assert b.cookie("gateway_session") is None
    # Another account from the same address is not affected by ann's ban.
    make_user(site, "bob@example.org", {"beta": "owner"})
    assert (await b.login("bob@example.org")).status_code == 303


async def test_ip_throttle_uses_forwarded_for_only_from_trusted_proxies(
    config: Config, start_gateway: StartGateway, upstream: UvicornUpstream, browsers: Make
) -> None:
    site = await start(start_gateway, config.replace(trusted_proxies="127.0.0.1"), upstream)
    attacker = {"x-forwarded-for": "203.0.113.9"}
    b = browsers(site)
    limit = site.app.auth.throttle.rules["ip"][0].failures
    for i in range(limit):  # a different account each time: only the IP rule can trip
        r = await b.post(
            "/login", {"email": f"u{i}@example.org", "password": "nope nope"}, headers=attacker
        )
        assert r.status_code == 400
    r = await b.post("/login", {"email": "ann@example.org", "password": PASSWORD}, headers=attacker)
    assert r.status_code == 429
    r = await b.post(
        "/login",
        {"email": "ann@example.org", "password": PASSWORD},
        headers={"x-forwarded-for": "203.0.113.10"},
    )
    assert r.status_code == 303  # another client behind the same proxy is not banned


async def test_no_handoff_on_a_real_domain(
    config: Config, start_gateway: StartGateway, upstream: UvicornUpstream, browsers: Make
) -> None:
    """With a dotted domain the Domain cookie works, so the ticket handoff (and the login
    CSRF it would allow) is off: straight to the login page, and the landing path is not
    the gateway's (it reaches the team's upstream like any other path)."""
    site = await start(start_gateway, config.replace(domain="gateway.test"), upstream)
    b = browsers(site)
    r = await b.get(site.url("alpha", "/x"))
    assert r.status_code == 302
    assert r.headers["location"].startswith(site.config.base_url + "/login?next=")
    await b.login("ann@example.org")
    r = await b.get(site.url("alpha", "/-/gateway/sso?ticket=anything"))
    assert r.status_code == 404 and r.json() == {"error": "no such path"}  # the echo upstream
    r = await b.get(site.url(None, "/-/sso?next=" + site.url("alpha", "/echo")))
    assert r.status_code == 303 and r.headers["location"] == site.url("alpha", "/echo")
