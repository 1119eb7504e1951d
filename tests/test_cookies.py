"""Upstream Set-Cookie read as a browser reads it (gateway/routing/cookies.py): a table of the
variants that a prefix test on the raw header let through, and the ones that must pass."""

from __future__ import annotations

import pytest

from gateway.routing.cookies import cookie_domain, cookie_name, refused, reserved_names
from gateway.routing.exchange import ProxySettings
from gateway.routing.headers import RESERVED_COOKIES, fix_link
from gateway.routing.proxy import Proxy

APEX = b"gateway.test"

REFUSED = [
    # reserved names, spelled the ways browsers still store them
    b"gateway_session=X",
    b"gateway_session =X",
    b"gateway_session\t=X; Path=/",
    b" gateway_session=X",
    b"\tgateway_session = X ; Path=/",
    b"__Secure-gateway_session=X; Secure",
    b"__Secure-gateway_session =X; Secure",
    b"__secure-gateway_session=X; Secure",
    b"__Host-gateway_session=X; Secure; Path=/",
    b"__HOST-gateway_session=X; Secure; Path=/",
    b"GATEWAY_SESSION=X",
    # the apex or a parent of it as Domain
    b"a=1; Domain=gateway.test",
    b"a=1; Domain=.gateway.test",
    b"a=1; domain=GATEWAY.TEST",
    b"a=1; Domain =gateway.test",
    b"a=1; Domain\t=gateway.test",
    b"a=1;Domain= gateway.test ;Path=/",
    b"a=1; DOMAIN=.Gateway.Test.",
    b"a=1; Domain=test",
    b"a=1; Domain=alpha.gateway.test; Domain=gateway.test",  # the last Domain wins
    b"a=1; Domain=gateway.test; Domain=",  # an empty Domain is ignored, not a reset
]

PASSED = [
    b"a=1; Path=/",
    b"ds_actor=x; Path=/; HttpOnly",
    b"a=1; Domain=alpha.gateway.test",
    b"a=1; Domain=.alpha.gateway.test",
    b"a=1; Domain=gateway.test; Domain=alpha.gateway.test",  # the last Domain wins
    b"a=1; Domain=evilgateway.test",  # not a parent: the browser refuses it anyway
    b"gateway_sessions=1",
    b"my_gateway_session=1",
    b"a=gateway_session; Path=/",
    b"a=1; Path=/; x-domain=gateway.test",
    b"gateway_session",  # no "=": a nameless cookie (RFC 6265bis), not gateway_session
]


@pytest.mark.parametrize("header", REFUSED)
def test_dangerous_cookies_are_refused(header: bytes) -> None:
    assert refused(header, RESERVED_COOKIES, APEX) is not None


@pytest.mark.parametrize("header", PASSED)
def test_ordinary_cookies_pass(header: bytes) -> None:
    assert refused(header, RESERVED_COOKIES, APEX) is None


def test_the_parts_as_a_browser_reads_them() -> None:
    assert cookie_name(b" a b =1; x") == b"a b"
    assert cookie_name(b"novalue") == b""
    assert cookie_domain(b"a=1") is None
    assert cookie_domain(b"a=1; Domain=.X.Org; Domain=") == b"x.org"
    assert reserved_names(b"S") == {b"s", b"__secure-s", b"__host-s"}


def test_the_proxy_drops_them_from_a_response() -> None:
    proxy = Proxy(ProxySettings(cookie_domain=APEX))
    headers = [(b"set-cookie", h) for h in REFUSED + PASSED]
    kept = [v for n, v in proxy.headers.response(headers) if n == b"set-cookie"]
    assert kept == PASSED


def test_the_upstream_server_header_is_hidden_and_datasette_links_get_brackets() -> None:
    proxy = Proxy(ProxySettings())
    out = proxy.headers.response(
        [
            (b"server", b"uvicorn"),
            (b"link", b'http://a.x/db/t.json; rel="alternate"; type="application/json+datasette"'),
            (b"x-other", b"1"),
        ]
    )
    assert out == [
        (b"link", b'<http://a.x/db/t.json>; rel="alternate"; type="application/json+datasette"'),
        (b"x-other", b"1"),
    ]


@pytest.mark.parametrize(
    "value",
    [
        b"<http://a/x>; rel=preload",
        b"<http://a/x>; rel=a, <http://a/y>; rel=b",
        b"http://a/x",  # no parameters: not the pattern, left alone
        b"http://a/x, http://a/y; rel=a",  # two targets: ambiguous, left alone
    ],
)
def test_other_links_are_left_alone(value: bytes) -> None:
    assert fix_link(value) == value
