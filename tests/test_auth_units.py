"""The pure parts of auth, table-driven: password policy, header scan, client IP, throttle."""

from __future__ import annotations

import pytest

from gateway.app import create_app
from gateway.auth.authorize import scan_headers, take_cookie
from gateway.auth.passwords import MAX_BYTES, Passwords, policy_error
from gateway.auth.throttle import Rule, Throttle, client_ip
from gateway.config import Config
from gateway.runtimes.static import StaticRuntime


@pytest.mark.parametrize(
    ("password", "refused"),
    [
        ("short", True),
        ("password", True),  # in zxcvbn's common list
        ("iloveyou123", True),
        ("ann@example.org", True),  # the email address itself
        ("x" * (MAX_BYTES + 1), True),
        ("\u00e9" * (MAX_BYTES // 2 + 1), True),  # bytes, not characters, are counted
        ("correct horse battery staple", False),
        ("x" * 64, False),  # long passwords are welcome
        ("eight ch", False),
    ],
)
def test_password_policy(password: str, refused: bool) -> None:
    assert (policy_error(password, "ann@example.org") is not None) is refused


async def test_hashing_rehashes_old_parameters_and_refuses_huge_input() -> None:
    from argon2 import PasswordHasher

    old = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("a fine passphrase")
    pw = Passwords()
    ok, new = await pw.verify(old, "a fine passphrase")
    assert ok and new is not None and new != old  # upgraded to the current parameters
    assert (await pw.verify(new, "a fine passphrase")) == (True, None)
    assert (await pw.verify(new, "wrong")) == (False, None)
    before = pw.hashes
    assert (await pw.verify(new, "x" * 5000)) == (False, None)
    with pytest.raises(ValueError):
        await pw.hash("x" * 5000)
    assert pw.hashes == before


def test_scan_strips_session_cookie_token_and_identity_headers() -> None:
    scope = {
        "headers": [
            (b"host", b"alpha.localhost"),
            (b"cookie", b"a=1; gateway_session=SID; ds_actor=keep; gateway_session=SID2"),
            (b"x-gateway-actor", b"forged"),
            (b"X-Gateway-Actor".lower(), b"forged2"),
            (b"authorization", b"Bearer gwt_abc"),
            (b"accept", b"*/*"),
        ]
    }
    cookie, bearer = scan_headers(scope, b"gateway_session")
    assert cookie == "SID2" and bearer == "gwt_abc"
    assert scope["headers"] == [
        (b"host", b"alpha.localhost"),
        (b"cookie", b"a=1; ds_actor=keep"),
        (b"accept", b"*/*"),
    ]
    only = {"headers": [(b"cookie", b"gateway_session=X")]}
    assert scan_headers(only, b"gateway_session") == ("X", None) and only["headers"] == []
    other = {"headers": [(b"authorization", b"Bearer dstok_datasette")]}
    assert scan_headers(other, b"gateway_session") == (None, None)
    assert other["headers"] == [(b"authorization", b"Bearer dstok_datasette")]  # not ours
    assert take_cookie(b"xgateway_session=1; b=2", b"gateway_session") == (
        None,
        b"xgateway_session=1; b=2",
    )


def test_client_ip_trusts_forwarded_for_only_from_trusted_peers() -> None:
    headers = [(b"x-forwarded-for", b"198.51.100.7, 10.0.0.2")]
    scope = {"client": ("10.0.0.1", 5555), "headers": headers}
    assert client_ip(scope, frozenset()) == "10.0.0.1"
    assert client_ip(scope, frozenset({"10.0.0.1"})) == "10.0.0.2"
    assert client_ip(scope, frozenset({"10.0.0.1", "10.0.0.2"})) == "198.51.100.7"


def test_throttle_rules() -> None:
    t = Throttle(account_rules=(Rule(3, 120, 300),), ip_rules=(Rule(5, 600, 600),))
    for _ in range(2):
        t.failed("Ann@Example.org", "1.2.3.4")
    assert t.retry_after("ann@example.org", "1.2.3.4") == 0
    t.failed("ann@example.org", "1.2.3.4")
    assert 290 < t.retry_after("ann@example.org", "9.9.9.9") <= 300  # the account is banned
    assert t.retry_after("bob@example.org", "1.2.3.4") == 0  # the IP is not, yet
    for i in range(2):
        t.failed(f"u{i}@example.org", "1.2.3.4")
    assert t.retry_after("bob@example.org", "1.2.3.4") > 0  # 5 failures from one IP
    t.succeeded("u0@example.org")
    assert t.retry_after("u0@example.org", "5.5.5.5") == 0


def test_https_base_url_gives_a_secure_prefixed_cookie(config: Config) -> None:
    app = create_app(config.replace(public_url="https://example.org"), runtime=StaticRuntime({}))
    try:
        assert app.auth.cookie_name == "__Secure-gateway_session"
        cookie = app.auth.session_cookie("v", None)
        assert cookie.startswith("__Secure-gateway_session=v;")
        assert "; Secure" in cookie and "Domain=localhost" in cookie and "HttpOnly" in cookie
    finally:
        app.store.close()
