"""The gateway's HTTP/1.1 protocol (gateway/http/protocol.py) over real sockets, for the promises
the proxy tests do not reach on their own: pipelined requests, a head never held back behind a
slow body, and a malformed request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.servers import start_protocol_server

GATE: dict[str, asyncio.Event] = {}  # made by the test that uses it, in its own loop


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        # The status goes out now; the body only once the test releases it.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await GATE["release"].wait()
        await send({"type": "http.response.body", "body": b"late"})
        return
    body = scope["path"].encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def port() -> AsyncIterator[int]:
    server, task, port = await start_protocol_server(app)
    yield port
    server.should_exit = True
    await asyncio.wait_for(task, 10)


async def test_pipelined_requests_are_answered_in_order(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /third HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    raw = await asyncio.wait_for(reader.read(), 5)  # the server closes after the third
    writer.close()
    assert raw.count(b"HTTP/1.1 200") == 3
    assert raw.index(b"/first") < raw.index(b"/second") < raw.index(b"/third")


async def test_a_head_is_not_held_back_behind_a_slow_body(port: int) -> None:
    release = GATE["release"] = asyncio.Event()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)  # before any body
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding: chunked" in head  # no length given: chunked, as uvicorn does
    release.set()
    assert await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5) == b"4\r\nlate\r\n0\r\n\r\n"
    writer.close()


async def test_a_malformed_request_gets_400_and_the_connection_closes(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost x\r\n\r\n")  # a header line without a colon
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert raw.startswith(b"HTTP/1.1 400")
    assert b"connection: close" in raw
    assert raw.endswith(b"Invalid HTTP request received.")
