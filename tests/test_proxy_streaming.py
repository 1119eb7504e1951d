"""Bodies stream both ways with flat memory; a client that leaves frees everything upstream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.config import Config
from tests.conftest import StartGateway
from tests.servers import RawUpstream, UvicornUpstream, gateway_for, wait_for

GiB = 1024**3
MiB = 1024**2
# Bodies are 1 GiB / 300 MB; the whole test process (client, gateway and upstream alike) may
# grow by at most this much while they pass through it.
MAX_GROWTH = 96 * MiB


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing from /proc/self/status")


def reset_peak() -> int:
    """Reset VmHWM to the current RSS (Linux clear_refs "5"); returns that RSS in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS") * 1024


def peak() -> int:
    return _status_kib("VmHWM") * 1024


@pytest.mark.slow
async def test_one_gib_response_streams_with_flat_memory(
    config: Config, start_gateway: StartGateway, upstream: UvicornUpstream
) -> None:
    gw = await gateway_for(start_gateway, config, {"alpha": [upstream.address]})
    received = 0
    async with gw.client() as client:
        base = reset_peak()
        async with client.stream("GET", gw.url("alpha", f"/stream?n={GiB}")) as r:
            assert r.status_code == 200
            assert r.headers["content-length"] == str(GiB)
            async for chunk in r.aiter_raw():
                received += len(chunk)
        growth = peak() - base
    assert received == GiB
    print(f"1 GiB response: RSS peak grew by {growth / MiB:.1f} MiB")
    assert growth < MAX_GROWTH, f"RSS grew by {growth / MiB:.0f} MiB for a 1 GiB body"


@pytest.mark.slow
async def test_large_chunked_request_streams_with_flat_memory(
    config: Config, start_gateway: StartGateway, upstream: UvicornUpstream
) -> None:
    size = 300 * MiB
    piece = b"u" * MiB

    async def body() -> AsyncIterator[bytes]:
        for _ in range(size // MiB):
            yield piece

    gw = await gateway_for(start_gateway, config, {"alpha": [upstream.address]})
    async with gw.client() as client:
        base = reset_peak()
        r = await client.post(gw.url("alpha", "/echo"), content=body())
        growth = peak() - base
    assert r.status_code == 200, r.text
    assert r.json()["body_bytes"] == size
    assert ["transfer-encoding", "chunked"] in r.json()["headers"]
    print(f"300 MiB upload: RSS peak grew by {growth / MiB:.1f} MiB")
    assert growth < MAX_GROWTH, f"RSS grew by {growth / MiB:.0f} MiB for a 300 MB upload"


async def test_sized_request_body_streams_through(
    config: Config, start_gateway: StartGateway, upstream: UvicornUpstream
) -> None:
    gw = await gateway_for(start_gateway, config, {"alpha": [upstream.address]})
    body = b"s" * (5 * MiB + 7)
    async with gw.client() as client:
        r = await client.put(gw.url("alpha", "/echo"), content=body)
    assert r.status_code == 200
    assert r.json()["body_bytes"] == len(body)
    assert ["content-length", str(len(body))] in r.json()["headers"]


async def test_client_disconnect_cancels_upstream_and_frees_the_slot(
    config: Config, start_gateway: StartGateway
) -> None:
    hang = await RawUpstream("hang").start()
    try:
        gw = await gateway_for(start_gateway, config, {"alpha": [hang.address]})
        target = gw.app.fleet.service("alpha").targets()[0]  # type: ignore[union-attr]
        async with gw.client(timeout=httpx.Timeout(30, read=0.5)) as client:
            with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes
                await client.get(gw.url("alpha", "/wait"))
        await wait_for(lambda: hang.peer_closed == 1)  # the upstream saw the close
        await wait_for(lambda: target.inflight == 0)
        assert hang.hanging == 0
        assert target.pool.connections() == 0
    finally:
        await hang.close()


async def test_client_disconnect_during_upload_frees_the_slot(
    config: Config, start_gateway: StartGateway
) -> None:
    hang = await RawUpstream("hang").start()

    class Gone(Exception):
        pass

    async def body() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"p" * (64 * 1024)
            await asyncio.sleep(0.05)
        raise Gone()  # the client dies halfway through its upload

    try:
        gw = await gateway_for(start_gateway, config, {"alpha": [hang.address]})
        target = gw.app.fleet.service("alpha").targets()[0]  # type: ignore[union-attr]
        async with gw.client() as client:
            with pytest.raises(Gone):
                await client.post(gw.url("alpha", "/upload"), content=body())
        await wait_for(lambda: target.inflight == 0)
        await wait_for(lambda: target.pool.connections() == 0)
    finally:
        await hang.close()


async def test_client_disconnect_mid_response_frees_the_slot(
    config: Config, start_gateway: StartGateway, upstream: UvicornUpstream
) -> None:
    gw = await gateway_for(start_gateway, config, {"alpha": [upstream.address]})
    target = gw.app.fleet.service("alpha").targets()[0]  # type: ignore[union-attr]
    got = 0
    async with (
        gw.client() as client,
        client.stream("GET", gw.url("alpha", f"/stream?n={GiB}")) as r,
    ):
        async for chunk in r.aiter_raw():
            got += len(chunk)
            if got > 4 * MiB:
                break  # leaving the block closes the connection mid-body
    await wait_for(lambda: target.inflight == 0)
    await wait_for(lambda: target.pool.connections() == 0)  # the upstream exchange was cut
