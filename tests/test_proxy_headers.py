"""Header hygiene through the proxy, against a real uvicorn upstream that echoes what it got."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from itsdangerous import URLSafeTimedSerializer

from gateway.config import Config
from gateway.instance.gateway_plugin import ACTOR_SALT
from tests.conftest import Running, StartGateway
from tests.servers import UvicornUpstream, gateway_for, raw_request, status_line


async def echo(gw: Running, headers: dict[str, str] | list[tuple[str, str]]) -> dict[str, Any]:
    async with gw.client() as client:
        r = await client.get(gw.url("alpha", "/echo?x=1"), headers=headers)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def values(data: dict[str, Any], name: str) -> list[str]:
    return [v for n, v in data["headers"] if n == name]


async def test_hop_by_hop_request_headers_are_stripped(
    config: Config, start_gateway: StartGateway, upstream: UvicornUpstream
) -> None:
    gw = await gateway_for(start_gateway, config, {"alpha": [upstream.address]})
    data = await echo(
        gw,
        [
            ("connection", "x-private, keep-alive"),
            ("x-private", "secret"),
            ("keep-alive", "timeout=100"),
            ("te", "trailers"),
            ("trailer", "x-foo"),
            ("upgrade", "foo/1"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("proxy-connection", "keep-alive"),
            ("x-gateway-actor", "forged"),
            ("x-gateway-user", "forged"),
            ("x-kept", "yes"),
        ],
    )
    names = {n for n, _ in data["headers"]}
    for gone in (
        "x-private",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "x-gateway-user",
    ):
        assert gone not in names, gone
    # Exactly one actor header reaches the instance: the gateway's own, signed with the
    # instance's secret (as the instance plugin checks it), naming the token's user.
    (actor,) = values(data, "x-gateway-actor")
    secret = gw.app.instance_secret("alpha")
    signed = URLSafeTimedSerializer(secret, salt=ACTOR_SALT).loads(actor, max_age=60)
    assert isinstance(signed, dict) and signed.get("id"), signed
    assert values(data, "x-kept") == ["yes"]
    assert values(data, "connection") in ([], ["keep-alive"])  # the gateway's own, if any


async def test_hop_by_hop_response_headers_are_stripped(
    config: Config, start_gateway: StartGateway, upstream: UvicornUpstream
) -> None:
    gw = await gateway_for(start_gateway, config, {"alpha": [upstream.address]})
    async with gw.client() as client:
        r = await client.get(gw.url("alpha", "/hop"))
    assert r.status_code == 200
    for gone in ("x-secret-hop", "keep-alive", "proxy-authenticate"):
        assert gone not in r.headers, gone
    assert r.headers["x-kept"] == "1"


async def test_spoofed_forwarding_headers_are_replaced(
    config: Config, start_gateway: StartGateway, upstream: UvicornUpstream
) -> None:
    gw = await gateway_for(start_gateway, config, {"alpha": [upstream.address]})
    data = await echo(
        gw,
        {
            "x-forwarded-for": "6.6.6.6",
            "x-forwarded-proto": "https",
            "x-forwarded-host": "evil.example",
            "forwarded": "for=6.6.6.6",
            "x-real-ip": "6.6.6.6",
        },
    )
    assert values(data, "x-forwarded-for") == ["127.0.0.1"]
    assert values(data, "x-forwarded-proto") == ["http"]
    assert values(data, "x-forwarded-host") == [f"alpha.localhost:{gw.port}"]
    assert values(data, "host") == [f"alpha.localhost:{gw.port}"]
    assert values(data, "forwarded") == []
    assert values(data, "x-real-ip") == []


async def test_forwarding_headers_appended_from_a_trusted_proxy(
    config: Config, start_gateway: StartGateway, upstream: UvicornUpstream
) -> None:
    config = config.replace(trusted_proxies="127.0.0.1")
    gw = await gateway_for(start_gateway, config, {"alpha": [upstream.address]})
    data = await echo(gw, {"x-forwarded-for": "203.0.113.9", "x-forwarded-proto": "https"})
    assert values(data, "x-forwarded-for") == ["203.0.113.9, 127.0.0.1"]
    assert values(data, "x-forwarded-proto") == ["https"]


async def test_request_id_kept_when_valid_generated_otherwise(
    config: Config, start_gateway: StartGateway, upstream: UvicornUpstream
) -> None:
    gw = await gateway_for(start_gateway, config, {"alpha": [upstream.address]})
    kept = await echo(gw, {"x-request-id": "req-12345678"})
    assert values(kept, "x-request-id") == ["req-12345678"]
    bad = await echo(gw, {"x-request-id": "no spaces allowed <script>"})
    missing = await echo(gw, {})
    generated = values(bad, "x-request-id") + values(missing, "x-request-id")
    assert len(generated) == 2
    for rid in generated:
        assert re.fullmatch(r"[0-9a-f]{32}", rid), rid
    assert generated[0] != generated[1]


AMBIGUOUS_FRAMING = [
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    b"Content-Length: 5\r\nContent-Length: 6\r\n",
    b"Content-Length: 5, 5\r\n",
    b"Content-Length: +5\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
]


async def test_ambiguous_framing_is_rejected(
    config: Config, start_gateway: StartGateway, upstream: UvicornUpstream
) -> None:
    gw = await gateway_for(start_gateway, config, {"alpha": [upstream.address]})
    auth = b"Authorization: Bearer " + gw.tokens["alpha"].encode() + b"\r\n"
    for framing in AMBIGUOUS_FRAMING:
        raw = await raw_request(
            gw.port,
            b"POST /echo HTTP/1.1\r\nHost: alpha.localhost\r\n"
            + auth
            + framing
            + b"\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        assert status_line(raw) == 400, (framing, raw[:200])
    assert upstream.state.paths == []  # never reached the team


async def test_repeated_set_cookie_passes_and_apex_or_session_cookies_are_dropped(
    config: Config, start_gateway: StartGateway, upstream: UvicornUpstream
) -> None:
    gw = await gateway_for(start_gateway, config, {"alpha": [upstream.address]})
    async with gw.client() as client:
        r = await client.get(gw.url("alpha", "/cookies"))
    assert r.status_code == 200
    assert r.headers.get_list("set-cookie") == [
        "a=1; Path=/",
        "b=2; Path=/; HttpOnly",
        "own=ok; Domain=alpha.localhost; Path=/",
    ]


async def test_head_passes_through(
    config: Config, start_gateway: StartGateway, upstream: UvicornUpstream
) -> None:
    gw = await gateway_for(start_gateway, config, {"alpha": [upstream.address]})
    async with gw.client() as client:
        for _ in range(2):  # the pooled connection stays framed correctly after a HEAD
            r = await client.head(gw.url("alpha", "/head"))
            assert r.status_code == 200
            assert r.headers["content-length"] == "1234"
            assert r.headers["x-head"] == "yes"
            assert r.content == b""
            g = await client.get(gw.url("alpha", "/head"))
            assert g.content == b"h" * 1234


async def test_redirects_pass_untouched(
    config: Config, start_gateway: StartGateway, upstream: UvicornUpstream
) -> None:
    gw = await gateway_for(start_gateway, config, {"alpha": [upstream.address]})
    cases = [(302, "/echo?from=redirect"), (301, "http://elsewhere.example/x?y=1"), (307, "../up")]
    async with gw.client() as client:
        for status, location in cases:
            r = await client.get(
                gw.url("alpha", "/redirect"), params={"status": status, "to": location}
            )
            assert r.status_code == status
            assert r.headers["location"] == location


async def test_expect_100_continue(
    config: Config, start_gateway: StartGateway, upstream: UvicornUpstream
) -> None:
    gw = await gateway_for(start_gateway, config, {"alpha": [upstream.address]})
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(
            b"POST /echo HTTP/1.1\r\nHost: alpha.localhost\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\nAuthorization: Bearer "
            + gw.tokens["alpha"].encode()
            + b"\r\n\r\n"
        )
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert interim.startswith(b"HTTP/1.1 100")
        writer.write(b"hello")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = json.loads(await asyncio.wait_for(reader.readexactly(length), 10))
        assert body["body"] == "hello"
    finally:
        writer.close()
