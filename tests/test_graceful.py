"""An idle keep-alive connection survives the start of a shutdown long enough to be answered."""

from __future__ import annotations

import asyncio

from tests.servers import start_protocol_server


async def app(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    await asyncio.wait_for(reader.readexactly(2), 5)
    return head.lower()


async def test_a_request_on_an_idle_connection_during_shutdown_is_answered() -> None:
    server, task, port = await start_protocol_server(app, log_level="warning")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    first = await exchange(reader, writer)
    assert b"connection: close" not in first  # a normal keep-alive answer

    server.should_exit = True  # shutdown begins while the connection is idle
    # uvicorn closes its listener and tells the connections to stop in one step: once a new
    # connection is refused, this idle one has been told.
    for _ in range(500):  # bounded: 10 s
        try:
            _, probe = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            break
        probe.close()
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the listener never closed")
    second = await exchange(reader, writer)  # plain uvicorn would have cut this connection
    assert second.startswith(b"http/1.1 200")
    assert b"connection: close" in second  # the client is told to reconnect elsewhere
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await asyncio.wait_for(task, 10)
