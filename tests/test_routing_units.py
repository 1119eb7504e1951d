"""Unit tests of the routing model: host normalisation, balancing, target states, slugs."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.errors import InvalidSlug
from gateway.routing.balancer import LoadBalancer
from gateway.routing.service import Service
from gateway.routing.table import RouteTable, normalize_host
from gateway.routing.target import State, Target
from gateway.slugs import RESERVED, validate_slug
from tests.servers import wait_for


@pytest.mark.parametrize(
    ("raw", "host"),
    [
        (b"alpha.localhost", "alpha.localhost"),
        (b"alpha.localhost:8000", "alpha.localhost"),
        (b"ALPHA.LocalHost", "alpha.localhost"),
        (b"alpha.localhost.", "alpha.localhost"),
        (b"Alpha.Localhost.:443", "alpha.localhost"),
        (b"[::1]:8000", "[::1]"),
        (b"127.0.0.1:80", "127.0.0.1"),
    ],
)
def test_normalize_host(raw: bytes, host: str) -> None:
    assert normalize_host(raw) == host


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"alpha.localhost:",
        b"alpha.localhost:http",
        b"alpha.localhost:123456",
        b"alpha..localhost",
        b".",
        b":80",
        b"al pha.localhost",
        b"alpha_1.localhost",
        b"user@alpha.localhost",
        b"alpha.localhost/x",
        b"[::1",
        b"[::1]x",
        "älpha.localhost".encode(),
        b"a" * 256,
    ],
)
def test_normalize_host_rejects_malformed(raw: bytes) -> None:
    assert normalize_host(raw) is None


def test_route_table_is_exact() -> None:
    alpha = Service("alpha", hosts=["alpha.localhost"])
    table = RouteTable({"alpha": alpha})
    assert table.lookup("alpha.localhost") is alpha
    assert table.lookup("x.alpha.localhost") is None
    assert table.lookup("alpha.localhost.evil") is None
    assert table.lookup("lpha.localhost") is None
    table.replace({})
    assert table.lookup("alpha.localhost") is None


def healthy(name: str) -> Target:
    t = Target(name, "127.0.0.1", 1)
    t.report_health(True)
    return t


def test_balancer_picks_the_healthy_target_with_fewest_in_flight() -> None:
    a, b, c = healthy("a"), healthy("b"), Target("c", "127.0.0.1", 1)  # c is still starting
    lb = LoadBalancer([a, b, c])
    assert lb.pick() is a
    a.start_request()
    assert lb.pick() is b
    b.start_request()
    b.start_request()
    assert lb.pick() is a
    assert lb.pick(exclude=a) is b
    a.start_request()
    a.start_request()
    assert lb.pick() is b  # 2 vs 3
    for _ in range(3):
        a.end_request()
    assert lb.pick() is a
    a.report_health(False, "exited")
    assert lb.pick() is b
    b.report_health(False, "exited")
    assert lb.pick() is None  # the STARTING target never gets traffic
    assert not any(t.state is State.HEALTHY for t in lb.targets)


def test_a_new_target_stays_down_until_its_first_success() -> None:
    t = Target("t", "127.0.0.1", 1)
    assert t.state is State.STARTING and not t.available
    for _ in range(5):
        t.report_health(False, "connection refused")
    assert t.state is State.STARTING
    t.report_health(True)
    assert t.state is State.HEALTHY and t.available


def test_only_health_and_drain_change_state() -> None:
    changes: list[State] = []
    t = Target("t", "127.0.0.1", 1, on_change=lambda target: changes.append(target.state))
    t.report_health(True)
    assert t.start_request()
    t.end_request()
    assert t.state is State.HEALTHY  # requests never change the state
    t.report_health(False, "timeout")
    assert t.state is State.HEALTHY  # one lost probe does not flap the only target
    t.report_health(False, "timeout")
    assert t.state is State.UNHEALTHY
    assert LoadBalancer([t]).pick() is None
    t.report_health(True)
    assert t.state is State.HEALTHY
    t.report_health(False, "exited")  # the process died: at once
    assert t.state is State.UNHEALTHY
    t.report_health(True)
    assert changes == [
        State.HEALTHY,
        State.UNHEALTHY,
        State.HEALTHY,
        State.UNHEALTHY,
        State.HEALTHY,
    ]


async def test_drain_refuses_new_requests_waits_then_stops() -> None:
    t = healthy("t")
    assert t.start_request()
    drain = asyncio.ensure_future(t.drain(timeout=30))
    await wait_for(lambda: t.state is State.DRAINING)  # the drain task has begun
    assert not t.start_request()  # refused while draining
    t.report_health(True)
    assert t.state is State.DRAINING  # health no longer matters
    assert not drain.done()
    t.end_request()
    result = await drain
    assert (result.completed, result.cancelled) == (1, 0)
    assert t.state is State.STOPPED
    assert not t.start_request()
    t.report_health(True)
    assert t.state is State.STOPPED


async def test_drain_of_an_idle_target_is_immediate() -> None:
    t = healthy("t")
    result = await t.drain(timeout=30)
    assert result.completed == 0 and result.cancelled == 0
    assert t.state is State.STOPPED


async def test_service_holds_until_a_target_is_healthy() -> None:
    service = Service("alpha", hosts=["alpha.localhost"])
    t = Target("t", "127.0.0.1", 1, on_change=lambda _: service.notify())
    service.add_target(t)
    waiter = asyncio.ensure_future(service.wait_for_target(_deadline(30)))
    await wait_for(lambda: service.holding == 1)  # it is waiting...
    assert not waiter.done()  # ...and got no target
    t.report_health(True)
    assert await asyncio.wait_for(waiter, 5) is t
    assert await service.wait_for_target(_deadline(0)) is t


async def test_service_hold_gives_up_at_the_deadline() -> None:
    service = Service("alpha")
    service.add_target(Target("t", "127.0.0.1", 1))
    assert await service.wait_for_target(_deadline(0.1)) is None


def _deadline(seconds: float) -> float:
    return time.monotonic() + seconds


@pytest.mark.parametrize("slug", ["a", "alpha", "team-42", "x1", "a" * 63, " Alpha "])
def test_valid_slugs(slug: str) -> None:
    assert validate_slug(slug) == slug.strip().lower()


@pytest.mark.parametrize(
    "slug",
    ["", "-a", "a-", "a_b", "a.b", "a b", "é", "a" * 64, "xn--abc", "ab--c", "a/b", "../x"],
)
def test_invalid_slugs(slug: str) -> None:
    with pytest.raises(InvalidSlug):
        validate_slug(slug)


@pytest.mark.parametrize("slug", ["www", "admin", "api", "gateway", "Status"])
def test_reserved_slugs(slug: str) -> None:
    assert slug.lower() in RESERVED
    with pytest.raises(InvalidSlug, match="reserved"):
        validate_slug(slug)
