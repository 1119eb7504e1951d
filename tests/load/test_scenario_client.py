"""The load proof's own client and verdict can fail: a resend is allowed only on a reused
keep-alive connection closed before any response byte (RFC 9112 section 9.3.1), and is then
counted apart; anything else is a failed request. Real misbehaving servers on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.load.scenario import Run, get, verdict

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def read_request(reader: asyncio.StreamReader) -> bool:
    try:
        await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    return True


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Any]


async def serve(handler: Handler) -> AsyncIterator[str]:
    connections = 0

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            await handler(reader, writer, connections)
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def closes_second_request() -> AsyncIterator[str]:
    """Answers the first request of a connection, then closes it when the second arrives
    (an idle keep-alive connection closed under the client); every new connection works."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if await read_request(reader):
            writer.write(OK)
            await writer.drain()
        await read_request(reader)  # the second request is never answered

    async for url in serve(handler):
        yield url


@pytest.fixture
async def closes_at_once() -> AsyncIterator[str]:
    """Reads the request and closes the connection with no answer, every time."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)

    async for url in serve(handler):
        yield url


@pytest.fixture
async def cuts_mid_answer() -> AsyncIterator[str]:
    """Sends the head and part of the body, then closes: the answer began, so it failed."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if await read_request(reader):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok")
            await writer.drain()

    async for url in serve(handler):
        yield url


async def test_a_reused_connection_closed_before_any_byte_is_resent_and_counted(
    closes_second_request: str,
) -> None:
    run = Run()
    async with httpx.AsyncClient() as client:
        first = await get(client, closes_second_request, {}, {}, run)
        second = await get(client, closes_second_request, {}, {}, run)
    assert (first.status_code, second.status_code) == (200, 200)
    assert run.reused_resends == 1
    assert verdict(report(run), max_resends=0) == ["1 GETs resent on a reused connection"]
    assert verdict(report(run), max_resends=1) == []


async def test_a_fresh_connection_closed_before_any_byte_is_a_failure(closes_at_once: str) -> None:
    run = Run()
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await get(client, closes_at_once, {}, {}, run)
    assert run.reused_resends == 0


async def test_an_answer_cut_after_it_began_is_a_failure(cuts_mid_answer: str) -> None:
    run = Run()
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await get(client, cuts_mid_answer, {}, {}, run)
    assert run.reused_resends == 0


def report(run: Run, **changes: Any) -> dict[str, Any]:
    """A report of a run that proved the promise, with ``changes`` applied."""
    phase = {"requests": 5, "failures": 0, "p50_ms": 1.0, "p99_ms": 1.0}
    base: dict[str, Any] = {
        "ops": [{"op": "deploy", "rc": 0, "seconds": 1.0}],
        "failures": 0,
        "failures_by_kind": {},
        "posts": {"applied once": 3},
        "reused_resends": run.reused_resends,
        "phases": {"before": phase, "during": phase, "after": phase},
    }
    return {**base, **changes}


def test_the_verdict_passes_only_a_run_with_no_failure_of_any_kind() -> None:
    run = Run()
    assert verdict(report(run)) == []
    failed_op = report(run, ops=[{"op": "gateway restart", "rc": 1, "seconds": 1.0}])
    assert verdict(failed_op)[0].startswith("operations failed")
    # A POST that failed and was never applied is still a failed request.
    failed_post = report(
        run,
        failures=1,
        failures_by_kind={"post ReadError": 1},
        posts={"applied once": 3, "failed, never applied": 1},
    )
    assert len(verdict(failed_post)) == 2
    twice = report(run, posts={"applied once": 3, "succeeded but applied 2x": 1})
    assert verdict(twice) == ["POSTs not all applied exactly once: " + str(twice["posts"])]
    idle = report(run, phases={"before": {"requests": 0}, "during": {"requests": 1}})
    assert verdict(idle)[0].startswith("a phase saw no request")
