"""The short form of the zero-downtime scenario through the real Traefik, with a Traefik
upgrade (``gateway edge upgrade``) among the operations (tests/load/edge.py)."""

from __future__ import annotations

import pytest

from tests.load.edge import scenario
from tests.load.scenario import print_report


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_deploys_restart_and_a_traefik_upgrade_fail_no_request_through_traefik() -> None:
    report = await scenario(rate=120.0, warmup=8.0, cooldown=8.0, deploys=10)
    print_report(report)
    assert [op["op"] for op in report["ops"]][-1] == "traefik upgrade"
    assert [op["rc"] for op in report["ops"]] == [0] * 13, report["ops"]
    assert report["failed_gets"] == 0, report["failures_by_kind"]
    assert set(report["posts"]) <= {"applied once", "failed, never applied"}, report["posts"]
    assert report["posts"].get("applied once", 0) > 0
    assert all(p["requests"] > 0 for p in report["phases"].values())
