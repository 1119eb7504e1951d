"""Host matching through a live gateway: variants route, bad hosts get clear 4xx answers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.config import Config
from tests.conftest import StartGateway
from tests.servers import Proxied, UvicornUpstream, gateway_for, raw_request, status_line


@pytest.fixture
async def gw(config: Config, start_gateway: StartGateway) -> AsyncIterator[Proxied]:
    up = await UvicornUpstream().start()
    yield await gateway_for(start_gateway, config, {"alpha": [up.address]})
    await up.close()


HOST_VARIANTS = [
    "alpha.localhost",
    "alpha.localhost:{port}",
    "ALPHA.LocalHost:{port}",
    "alpha.localhost.:{port}",
]


async def test_host_variants_route_to_the_team(gw: Proxied) -> None:
    async with gw.client() as client:
        for host in HOST_VARIANTS:
            r = await client.get(
                gw.url("alpha", "/echo"), headers={"host": host.format(port=gw.port)}
            )
            assert r.status_code == 200, (host, r.text)
            assert r.json()["path"] == "/echo"


async def test_unknown_host_is_404_html_or_json_by_accept(gw: Proxied) -> None:
    async with gw.client() as client:
        html = await client.get(gw.url("nosuchteam", "/"), headers={"accept": "text/html"})
        js = await client.get(gw.url("nosuchteam", "/"), headers={"accept": "application/json"})
        other = await client.get(gw.url("alpha", "/"), headers={"host": "alpha.example.org"})
    assert html.status_code == 404
    assert html.headers["content-type"].startswith("text/html")
    assert "<h1>404" in html.text
    assert js.status_code == 404
    assert js.headers["content-type"] == "application/json"
    assert js.json()["status"] == 404
    assert other.status_code == 404


async def test_missing_host_is_400(gw: Proxied) -> None:
    raw = await raw_request(gw.port, b"GET /echo HTTP/1.0\r\n\r\n")
    assert status_line(raw) == 400


MALFORMED_HOSTS = [
    b"alpha.localhost:abc",
    b"alpha_bad!.localhost",
    b"alpha..localhost",
    b"[::1",
    b"\xffalpha",
]


async def test_malformed_host_is_400(gw: Proxied) -> None:
    for host in MALFORMED_HOSTS:
        raw = await raw_request(gw.port, b"GET /echo HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        assert status_line(raw) == 400, host


async def test_two_host_headers_are_400(gw: Proxied) -> None:
    raw = await raw_request(
        gw.port, b"GET /echo HTTP/1.1\r\nHost: alpha.localhost\r\nHost: beta.localhost\r\n\r\n"
    )
    assert status_line(raw) == 400


async def test_absolute_form_request_uri(gw: Proxied) -> None:
    token = gw.tokens["alpha"]
    raw = await raw_request(
        gw.port,
        f"GET http://alpha.localhost:{gw.port}/echo?x=1 HTTP/1.1\r\n"
        f"Host: alpha.localhost:{gw.port}\r\nAuthorization: Bearer {token}\r\n\r\n".encode(),
    )
    assert status_line(raw) == 200, raw[:300]
    body = raw.partition(b"\r\n\r\n")[2]
    assert b'"raw_path": "/echo"' in body  # forwarded in origin form
    assert b'"query": "x=1"' in body


async def test_overlong_request_target_is_414_and_overlong_host_400(
    config: Config, start_gateway: StartGateway
) -> None:
    up = await UvicornUpstream().start()
    try:
        gw = await gateway_for(
            start_gateway, config.replace(max_request_line=200), {"alpha": [up.address]}
        )
        async with gw.client() as client:
            ok = await client.get(gw.url("alpha", "/echo?q=" + "a" * 150))
            long = await client.get(
                gw.url("alpha", "/echo?q=" + "a" * 250), headers={"accept": "application/json"}
            )
            host = await client.get(gw.url("alpha", "/echo"), headers={"host": "a" * 300})
        assert ok.status_code == 200
        assert long.status_code == 414
        assert long.json()["status"] == 414
        assert host.status_code == 400
        assert up.state.paths == ["/echo"]
    finally:
        await up.close()
