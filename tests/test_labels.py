"""Labels -> routes, table-driven with no Docker (Traefik's provider tests do the same)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gateway.runtimes.docker.labels import LabelError, build_snapshot, route_from_container

GW = "gw-id-1"
DOMAIN = "example.org"


def container(
    cid: str = "c1",
    *,
    state: str = "running",
    status: str = "Up 3 seconds (healthy)",
    ports: list[dict[str, Any]] | None = None,
    **overrides: str | None,
) -> dict[str, Any]:
    labels: dict[str, str] = {
        "gateway.team": "alpha",
        "gateway.host": "alpha.example.org",
        "gateway.port": "8001",
        "gateway.version": "gateway-datasette:0.65.5-abc",
        "gateway.instance": "alpha-0001",
        "gateway.managed-by": GW,
    }
    for key, value in overrides.items():
        name = "gateway." + key.replace("_", "-")
        if value is None:
            labels.pop(name, None)
        else:
            labels[name] = value
    if ports is None:
        ports = [{"IP": "127.0.0.1", "PrivatePort": 8001, "PublicPort": 49153, "Type": "tcp"}]
    return {
        "Id": cid,
        "Names": [f"/gateway-{labels.get('gateway.instance')}"],
        "State": state,
        "Status": status,
        "Labels": labels,
        "Ports": ports,
    }


GOOD = [
    ("healthy", container(), "running", "healthy", ("127.0.0.1", 49153)),
    (
        "starting health",
        container(status="Up 1 second (health: starting)"),
        "running",
        "starting",
        ("127.0.0.1", 49153),
    ),
    ("no healthcheck", container(status="Up 2 minutes"), "running", "", ("127.0.0.1", 49153)),
    ("exited", container(state="exited", status="Exited (137)", ports=[]), "exited", "", None),
    (
        "published on all interfaces is not routable",
        container(ports=[{"IP": "0.0.0.0", "PrivatePort": 8001, "PublicPort": 5, "Type": "tcp"}]),
        "running",
        "healthy",
        None,
    ),
    (
        "other port ignored",
        container(
            ports=[
                {"IP": "127.0.0.1", "PrivatePort": 9000, "PublicPort": 5, "Type": "tcp"},
                {"IP": "127.0.0.1", "PrivatePort": 8001, "PublicPort": 6, "Type": "tcp"},
            ]
        ),
        "running",
        "healthy",
        ("127.0.0.1", 6),
    ),
]


@pytest.mark.parametrize(
    ("info", "state", "health", "published"),
    [case[1:] for case in GOOD],
    ids=[case[0] for case in GOOD],
)
def test_good_labels(
    info: dict[str, Any], state: str, health: str, published: tuple[str, int] | None
) -> None:
    route = route_from_container(info, GW, DOMAIN)
    assert (route.team, route.host, route.port, route.instance) == (
        "alpha",
        "alpha.example.org",
        8001,
        "alpha-0001",
    )
    assert (route.state, route.health, route.published) == (state, health, published)
    assert route.running is (state == "running")


BAD = [
    ("missing team", {"team": None}, "missing label(s): gateway.team"),
    ("missing port and host", {"port": None, "host": None}, "gateway.host, gateway.port"),
    ("bad slug", {"team": "Alpha_1"}, "gateway.team"),
    ("reserved slug", {"team": "admin", "host": "admin.example.org"}, "reserved"),
    ("host of another team", {"host": "beta.example.org"}, "is not alpha.example.org"),
    ("host of another domain", {"host": "alpha.evil.org"}, "is not alpha.example.org"),
    ("port not a number", {"port": "80a"}, "not a port number"),
    ("port zero", {"port": "0"}, "not a port number"),
    ("port too big", {"port": "65536"}, "not a port number"),
    ("instance of another team", {"instance": "beta-0001"}, "not an instance of team alpha"),
    ("instance with a slash", {"instance": "alpha-../x"}, "not an instance"),
    ("empty version", {"version": ""}, "gateway.version"),
]


def test_a_copy_under_another_name_is_rejected() -> None:
    info = container()
    info["Names"] = ["/my-copy"]
    with pytest.raises(LabelError, match="is not gateway-alpha-0001"):
        route_from_container(info, GW, DOMAIN)


@pytest.mark.parametrize(("overrides", "message"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_labels(overrides: dict[str, str | None], message: str) -> None:
    with pytest.raises(LabelError, match=re.escape(message)):
        route_from_container(container(**overrides), GW, DOMAIN)


def test_snapshot_skips_bad_and_forged_containers_but_loads_the_rest() -> None:
    containers = [
        container("good"),
        container("bad", port="nope", instance="alpha-0002"),
        container("forged", managed_by="someone-else", instance="alpha-0003"),
        {"Id": "unrelated", "Names": ["/db"], "State": "running", "Labels": {"app": "x"}},
        container(
            "beta",
            team="beta",
            host="beta.example.org",
            instance="beta-0001",
            ports=[{"IP": "127.0.0.1", "PrivatePort": 8001, "PublicPort": 49200, "Type": "tcp"}],
        ),
        {**container("dup"), "Names": ["/copy-of-good"]},  # same labels, another name
    ]
    snap = build_snapshot(containers, GW, DOMAIN)
    assert [r.container for r in snap.routes] == ["good", "beta"]
    assert snap.by_instance()["beta-0001"].published == ("127.0.0.1", 49200)
    rejected = {r.container: r for r in snap.rejected}
    assert set(rejected) == {"bad", "forged", "dup"}
    # Named as its labels say: another gateway's own container on a shared engine, not ours.
    assert rejected["forged"].other_gateway and "someone-else" in rejected["forged"].reason
    assert not rejected["bad"].forged and "gateway.port" in rejected["bad"].reason
    assert "is not gateway-alpha-0001" in rejected["dup"].reason


def test_no_labels_at_all_is_an_empty_snapshot() -> None:
    snap = build_snapshot([{"Id": "x", "Labels": None}], GW, DOMAIN)
    assert snap.routes == [] and snap.rejected == []
