"""One test per retry rule in reliability.md, each against a real misbehaving upstream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol, TypeVar

import httpx
import pytest

from gateway.config import Config
from tests.conftest import Running, StartGateway
from tests.servers import Blackhole, RawUpstream, UvicornUpstream, gateway_for, wait_for

Upstream = TypeVar("Upstream", RawUpstream, UvicornUpstream)


@pytest.fixture
def rconfig(config: Config) -> Config:
    # Health checks pass once (a STARTING target is probed every 100 ms), then stay out of the
    # way: the tests below make healthy-looking targets fail and must see exactly their effect.
    return config.replace(health_interval=60.0, read_timeout=10.0)


class Serve(Protocol):
    async def __call__(self, server: Upstream) -> Upstream: ...


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start an upstream for this test; every one started is closed after it, in order."""
    servers: list[Any] = []

    async def start(server: Upstream) -> Upstream:
        servers.append(server)
        return await server.start()

    yield start
    for server in servers:
        await server.close()


class Front(Protocol):
    async def __call__(self, *upstreams: Any, **changes: Any) -> Running: ...


@pytest.fixture
def front(rconfig: Config, start_gateway: StartGateway, serve: Serve) -> Front:
    """A gateway on ``rconfig`` (with ``changes``) whose team alpha has ``upstreams`` as its
    targets, each started for this test and closed after it."""

    async def start(*upstreams: Any, **changes: Any) -> Running:
        for upstream in upstreams:
            await serve(upstream)
        targets = [upstream.address for upstream in upstreams]
        return await gateway_for(start_gateway, rconfig.replace(**changes), {"alpha": targets})

    return start


async def counters(gw: Running) -> dict[str, Any]:
    async with gw.client() as client:
        r = await client.get(gw.url(None, "/-/gateway/status.json"), headers=gw.admin_headers())
    assert r.status_code == 200
    data: dict[str, Any] = r.json()["counters"]
    return data


async def test_refused_post_is_retried_on_another_target(front: Front) -> None:
    first, second = RawUpstream("ok"), UvicornUpstream()
    gw = await front(first, second)
    await first.stop_listening()  # healthy in the gateway's eyes, but now refuses
    async with gw.client() as client:
        r = await client.post(gw.url("alpha", "/echo"), content=b"payload")
        assert r.status_code == 200, r.text
        assert r.json()["method"] == "POST"
        assert r.json()["body"] == "payload"
    assert (await counters(gw))["retries"] == 1
    assert first.requests == []
    assert second.state.paths == ["/echo"]  # delivered exactly once


async def test_refused_large_post_retry_still_sends_the_whole_body(front: Front) -> None:
    """Nothing was sent, so even a body beyond the replay buffer is safe to send elsewhere."""
    first, second = RawUpstream("ok"), UvicornUpstream()
    gw = await front(first, second)
    await first.stop_listening()
    body = b"b" * (300 * 1024)
    async with gw.client() as client:
        r = await client.post(gw.url("alpha", "/echo"), content=body)
    assert r.status_code == 200, r.text
    assert r.json()["body_bytes"] == len(body)
    assert (await counters(gw))["retries"] == 1


async def test_stale_keepalive_get_is_retried_once(front: Front) -> None:
    up = RawUpstream("stale")
    gw = await front(up)
    async with gw.client() as client:
        assert (await client.get(gw.url("alpha", "/warm"))).status_code == 200
        # The pooled connection is reused; the upstream closes it without answering.
        r = await client.request("GET", gw.url("alpha", "/again"), content=b"q" * 1000)
        assert r.status_code == 200, r.text
        assert r.json() == {"ok": True, "method": "GET", "n": 1000}  # body replayed
    # first on the stale connection, then once more on a fresh one
    again = ("GET", "/again", 1000)
    assert up.requests == [("GET", "/warm", 0), again, again]
    c = await counters(gw)
    assert c["retries"] == 1
    assert c["retry_skipped_method"] == 0


async def test_stale_keepalive_post_is_not_retried(front: Front) -> None:
    up = RawUpstream("stale")
    gw = await front(up)
    async with gw.client() as client:
        assert (await client.post(gw.url("alpha", "/warm"), content=b"1")).status_code == 200
        r = await client.post(
            gw.url("alpha", "/pay"), content=b"2", headers={"accept": "application/json"}
        )
    assert r.status_code == 502
    assert r.json()["status"] == 502
    assert up.requests == [("POST", "/warm", 1), ("POST", "/pay", 1)]  # sent once, never twice
    c = await counters(gw)
    assert c["retries"] == 0
    assert c["retry_skipped_method"] == 1


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS"])
async def test_stale_keepalive_head_and_options_are_retried_once(method: str, front: Front) -> None:
    up = RawUpstream("stale")
    gw = await front(up)
    async with gw.client() as client:
        assert (await client.get(gw.url("alpha", "/warm"))).status_code == 200
        r = await client.request(method, gw.url("alpha", "/again"))
        assert r.status_code == 200, r.text
    again = (method, "/again", 0)
    assert up.requests == [("GET", "/warm", 0), again, again]  # stale, then once more
    c = await counters(gw)
    assert (c["retries"], c["retry_skipped_method"]) == (1, 0)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_stale_keepalive_put_delete_patch_are_not_retried(method: str, front: Front) -> None:
    up = RawUpstream("stale")
    gw = await front(up)
    async with gw.client() as client:
        assert (await client.get(gw.url("alpha", "/warm"))).status_code == 200
        r = await client.request(method, gw.url("alpha", "/thing"), content=b"2")
    assert r.status_code == 502, r.text
    assert up.requests == [("GET", "/warm", 0), (method, "/thing", 1)]  # sent once only
    c = await counters(gw)
    assert (c["retries"], c["retry_skipped_method"]) == (0, 1)


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"])
async def test_refused_is_retried_once_for_any_method(method: str, front: Front) -> None:
    first, second = RawUpstream("ok"), RawUpstream("ok")
    gw = await front(first, second)
    await first.stop_listening()
    async with gw.client() as client:
        r = await client.request(method, gw.url("alpha", "/x"))
    assert r.status_code == 200, r.text
    assert (first.requests, second.requests) == ([], [(method, "/x", 0)])
    assert (await counters(gw))["retries"] == 1


async def test_a_refused_retry_is_held_then_answered_503(front: Front) -> None:
    """Nothing was sent to either target: retried once, refused again; both refusing targets
    are out of rotation, so the request is held like any other with no healthy target, then
    answered 503 with Retry-After (never sent anywhere, never 502)."""
    first, second = RawUpstream("ok"), RawUpstream("ok")
    gw = await front(first, second, hold_timeout=1)
    await first.stop_listening()
    await second.stop_listening()
    async with gw.client() as client:
        r = await client.post(
            gw.url("alpha", "/x"), content=b"1", headers={"accept": "application/json"}
        )
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"]
    assert (first.requests, second.requests) == ([], [])
    assert (await counters(gw))["retries"] == 1


async def test_fresh_connection_reset_is_not_retried(front: Front) -> None:
    up = RawUpstream("reset")
    gw = await front(up)
    up.armed = True  # from now on: RST right after accept
    async with gw.client() as client:
        r = await client.get(gw.url("alpha", "/x"))
    assert r.status_code == 502
    assert up.resets == 1
    assert (await counters(gw))["retries"] == 0


async def test_read_timeout_is_504_and_not_retried(front: Front) -> None:
    up = RawUpstream("hang")
    gw = await front(up, read_timeout=0.5)
    async with gw.client() as client:
        r = await client.get(gw.url("alpha", "/slow"), headers={"accept": "application/json"})
    assert r.status_code == 504
    assert up.requests == [("GET", "/slow", 0)]
    assert (await counters(gw))["retries"] == 0


async def test_death_mid_body_is_visible_to_the_client(front: Front) -> None:
    up = RawUpstream("midbody")
    gw = await front(up)
    received = b""
    async with gw.client() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("GET", gw.url("alpha", "/file")) as r:
                assert r.status_code == 200
                async for chunk in r.aiter_raw():
                    received += chunk
    assert received == b"x" * 100  # the part that was sent, and no clean end
    assert up.requests == [("GET", "/file", 0)]  # never retried after a response byte
    assert (await counters(gw))["retries"] == 0


async def test_body_beyond_replay_buffer_is_not_replayed(rconfig: Config, front: Front) -> None:
    up = RawUpstream("stale")
    gw = await front(up)
    big = b"g" * (rconfig.retry_buffer + 1024)
    async with gw.client() as client:
        assert (await client.get(gw.url("alpha", "/warm"))).status_code == 200
        r = await client.request("GET", gw.url("alpha", "/big"), content=big)
    assert r.status_code == 502
    assert [p for _, p, _ in up.requests] == ["/warm", "/big"]
    c = await counters(gw)
    assert c["retries"] == 0
    assert c["retry_skipped_body"] == 1


@pytest.mark.slow
async def test_one_deadline_covers_all_attempts(front: Front) -> None:
    """First attempt: a reused connection dies after 2 s; the retry goes to a target that
    hangs. With one 3 s deadline the client gets 504 after ~3 s, not 2 + 3 s."""
    stale, hang = RawUpstream("stale", stale_delay=2.0), RawUpstream("hang")
    gw = await front(stale, hang, read_timeout=3.0)
    async with gw.client() as client:
        assert (await client.get(gw.url("alpha", "/warm"))).status_code == 200
        started = time.monotonic()
        r = await client.get(gw.url("alpha", "/retry-me"))
        elapsed = time.monotonic() - started
    assert r.status_code == 504
    assert hang.requests == [("GET", "/retry-me", 0)]  # the retry went to the other target
    assert (await counters(gw))["retries"] == 1
    # One 3 s budget in total; a fresh budget per attempt would take 2 + 3 = 5 s. The bound
    # sits midway, so it checks the rule (one deadline), not the machine's speed.
    assert elapsed < 4.0, elapsed


async def test_upstream_5xx_passes_through_untouched(front: Front) -> None:
    up = UvicornUpstream()
    gw = await front(up)
    async with gw.client() as client:
        r = await client.get(gw.url("alpha", "/status?code=503"))
    assert r.status_code == 503
    assert r.json() == {"upstream": True}
    assert up.state.paths == ["/status"]
    assert (await counters(gw))["retries"] == 0


async def test_refused_only_target_holds_the_request_until_it_is_back(
    config: Config, start_gateway: StartGateway
) -> None:
    """A refused connection (say, a killed instance not yet noticed) takes the target out of
    rotation at once: the request is held, not refused twice and answered 502."""
    first = await RawUpstream("ok").start()
    replacement = UvicornUpstream()
    try:
        gw = await gateway_for(
            start_gateway,
            config.replace(health_interval=0.3, hold_timeout=30),
            {"alpha": [first.address]},
        )
        target = gw.app.fleet.service("alpha").targets()[0]  # type: ignore[union-attr]
        await first.stop_listening()
        async with gw.client() as client:
            request = asyncio.ensure_future(client.post(gw.url("alpha", "/echo"), content=b"x"))
            await wait_for(lambda: not target.available)
            assert not request.done()  # held (and answered 200 below, not 502)
            await replacement.start(sock=first.take_port())  # back on its port
            r = await request
        assert r.status_code == 200, r.text
        assert replacement.state.paths == ["/echo"]  # sent exactly once
    finally:
        await first.close()
        await replacement.close()


async def test_connect_timeout_is_504(front: Front) -> None:
    up = RawUpstream("ok")
    gw = await front(up, connect_timeout=0.3)
    await up.stop_listening()
    with Blackhole(sock=up.take_port()):  # the target's port now swallows connections
        async with gw.client() as client:
            r = await client.get(gw.url("alpha", "/x"), headers={"accept": "application/json"})
    assert r.status_code == 504
    assert r.json()["status"] == 504
    assert (await counters(gw))["retries"] == 1  # nothing was sent: one retry, then 504


async def test_death_mid_chunked_body_is_visible_to_the_client(front: Front) -> None:
    up = RawUpstream("chunked_cut")
    gw = await front(up)
    received = b""
    async with gw.client() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("GET", gw.url("alpha", "/file")) as r:
                assert r.status_code == 200
                async for chunk in r.aiter_bytes():
                    received += chunk
    assert received == b"c" * 100
    assert len(up.requests) == 1


async def test_close_delimited_body_ends_cleanly(front: Front) -> None:
    up = RawUpstream("close_delimited")
    gw = await front(up)
    async with gw.client() as client:
        for _ in range(2):
            r = await client.get(gw.url("alpha", "/old"))
            assert r.status_code == 200
            assert r.content == b"d" * 10_000


async def test_interim_responses_are_skipped(front: Front) -> None:
    up = RawUpstream("interim")
    gw = await front(up)
    async with gw.client() as client:
        for _ in range(2):  # and the pooled connection stays in step afterwards
            r = await client.post(gw.url("alpha", "/x"), content=b"abc")
            assert r.status_code == 200
            assert r.json() == {"ok": True, "method": "POST", "n": 3}


async def test_an_early_answer_before_the_body_is_sent_passes_through(front: Front) -> None:
    """An upstream may answer (413) before reading the body and close: that answer counts."""
    up = RawUpstream("early")
    gw = await front(up)
    async with gw.client() as client:
        r = await client.post(gw.url("alpha", "/upload"), content=b"e" * (8 * 1024 * 1024))
    assert r.status_code == 413, r.text
    assert r.json() == {"too": "large"}
    assert (await counters(gw))["retries"] == 0


async def test_a_target_that_stops_reading_the_body_times_out(front: Front) -> None:
    """The body send is bounded too: a target that never reads gives 504, not a hang."""
    up = RawUpstream("stall")
    gw = await front(up, read_timeout=1.0)
    target = gw.app.fleet.service("alpha").targets()[0]  # type: ignore[union-attr]
    async with gw.client() as client:
        r = await client.post(
            gw.url("alpha", "/upload"),
            content=b"s" * (64 * 1024 * 1024),
            headers={"accept": "application/json"},
        )
    assert r.status_code == 504, r.text
    assert up.requests == [("POST", "stall", 0)]
    await wait_for(lambda: target.inflight == 0)
