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
    await shutdown_began(port)
    second = await exchange(reader, writer)  # plain uvicorn would have cut this connection
    assert second.startswith(b"http/1.1 200")
    assert b"connection: close" in second  # the client is told to reconnect elsewhere
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await asyncio.wait_for(task, 10)


async def shutdown_began(port: int) -> None:
    """uvicorn closes its listener and tells the connections to stop in one step: once a new
    connection is refused, every open one has been told."""
    for _ in range(500):  # bounded: 10 s
        try:
            _, probe = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return
        probe.close()
        await asyncio.sleep(0.02)  # a poll interval; the refusal is what is waited on
    raise AssertionError("the listener never closed")


async def test_a_shutdown_keeps_an_idle_connection_until_its_keep_alive_deadline() -> None:
    """A correct client keeps an idle connection for less than the server's keep-alive
    timeout, then may reuse it. Had the shutdown closed it sooner, the request would meet the
    close on the wire (the failure, or the RFC 9112 9.3.1 resend, the load test counted). It
    keeps its keep-alive deadline instead, and the request is answered."""
    keep_alive = 30
    server, task, port = await start_protocol_server(
        app, log_level="warning", timeout_keep_alive=keep_alive
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await exchange(reader, writer)
    server.should_exit = True
    await shutdown_began(port)
    # The client's idle period, well inside the keep-alive timeout: what is tested is that the
    # connection is still there after it (the old 1 s shutdown grace had closed it by then).
    await asyncio.sleep(3)
    second = await exchange(reader, writer)
    assert second.startswith(b"http/1.1 200")
    assert b"connection: close" in second
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await asyncio.wait_for(task, 10)


async def test_a_shutdown_closes_an_idle_connection_at_its_keep_alive_deadline() -> None:
    """The other side: an idle connection does not hold the shutdown past its deadline."""
    server, task, port = await start_protocol_server(app, log_level="warning", timeout_keep_alive=1)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await exchange(reader, writer)
    server.should_exit = True
    # Closed by the server within its keep-alive timeout, without a request (bounded: 10 s,
    # far below uvicorn's default graceful-shutdown timeout, which is none).
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    await asyncio.wait_for(task, 10)


async def test_a_response_begun_before_the_shutdown_keeps_its_promise_of_keep_alive() -> None:
    """A response whose head went out before the shutdown said nothing of a close. Closing the
    connection right after its body (the old behaviour) was a close the client could not see
    coming: it reused the connection and met the close with no answer (CI's load test counted
    one such resend over the gateway's TLS). The connection goes idle instead, and the next
    request on it is answered with ``Connection: close``."""
    head_sent = asyncio.Event()
    finish = asyncio.Event()

    async def slow(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        if scope["path"] != "/slow":
            await app(scope, receive, send)
            return
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
        )
        await send({"type": "http.response.body", "body": b"o", "more_body": True})
        head_sent.set()
        await finish.wait()
        await send({"type": "http.response.body", "body": b"k"})

    server, task, port = await start_protocol_server(slow, log_level="warning")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    first = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).lower()
    await asyncio.wait_for(head_sent.wait(), 5)
    server.should_exit = True
    await shutdown_began(port)
    finish.set()
    assert await asyncio.wait_for(reader.readexactly(2), 5) == b"ok"
    assert b"connection: close" not in first  # the promise: this connection may be reused
    second = await exchange(reader, writer)  # the old code had closed it: IncompleteReadError
    assert second.startswith(b"http/1.1 200")
    assert b"connection: close" in second
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await asyncio.wait_for(task, 10)
