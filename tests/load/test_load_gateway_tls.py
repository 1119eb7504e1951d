"""The short form of the zero-downtime scenario in the fast shape: HTTPS served by the gateway
from Traefik's ACME store, with a certificate renewal among the operations
(tests/load/gateway_tls.py)."""

from __future__ import annotations

import pytest

from tests.load.gateway_tls import GatewayTls
from tests.load.scenario import SLEEPER, print_report, scenario, verdict


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_deploys_restart_and_a_renewal_fail_no_request_over_the_gateways_tls() -> None:
    report = await scenario(rate=120.0, warmup=8.0, cooldown=8.0, deploys=10, edge=GatewayTls())
    print_report(report)
    ops = [op["op"] for op in report["ops"]]
    assert ops[-4:-2] == ["gateway restart", "old gateway exited"], ops
    assert ops[-1] == "certificate renewal" and ops[-2].startswith("restore "), ops
    assert ops[0] == f"wake {SLEEPER} under load", ops
    assert len(ops) == 16, ops
    # 0 failed requests, 0 GETs resent, every POST applied exactly once, load in every phase.
    assert verdict(report, max_resends=0) == []
    assert report["posts"]["applied once"] > 0
