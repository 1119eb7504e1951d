"""The short form of the zero-downtime scenario through the real Traefik, with a Traefik
upgrade (``gateway edge upgrade``) among the operations (tests/load/edge.py)."""

from __future__ import annotations

import pytest

from tests.load.edge import ThroughTraefik
from tests.load.scenario import SLEEPER, print_report, scenario, verdict


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_deploys_restart_and_a_traefik_upgrade_fail_no_request_through_traefik() -> None:
    report = await scenario(rate=120.0, warmup=8.0, cooldown=8.0, deploys=10, edge=ThroughTraefik())
    print_report(report)
    ops = [op["op"] for op in report["ops"]]
    assert ops[-4:-2] == ["gateway restart", "old gateway exited"], ops
    assert ops[-1] == "traefik upgrade" and ops[-2].startswith("restore "), ops
    assert ops[0] == f"wake {SLEEPER} under load", ops
    assert len(ops) == 16, ops
    # 0 failed requests and every POST applied exactly once. A retiring Traefik closes its
    # idle keep-alive client connections (Go's Server.Shutdown), so a GET may race that close
    # on a reused connection and be resent as RFC 9112 9.3.1 allows: counted, and bounded.
    assert verdict(report, max_resends=3) == []
    assert report["posts"]["applied once"] > 0
