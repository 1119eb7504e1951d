"""The short (~60 s) form of the zero-downtime scenario, run in CI.

The full form (`make load`) runs longer phases and prints the same table.
"""

from __future__ import annotations

import pytest

from tests.load.scenario import SLEEPER, TEAMS, print_report, scenario, verdict


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_deploys_and_a_gateway_restart_fail_no_request_under_load() -> None:
    report = await scenario(rate=120.0, warmup=8.0, cooldown=8.0, deploys=10)
    print_report(report)
    ops = [op["op"] for op in report["ops"]]
    assert ops[0] == f"wake {SLEEPER} under load", ops  # asleep, then woken: held, not failed
    assert ops[-4:] == [
        "deploy --all",
        "gateway restart",
        "old gateway exited",
        f"restore {TEAMS[0]} to now",
    ], ops
    assert len(ops) == 15, ops
    # Zero failed requests: every GET and every POST succeeded (a POST applied exactly once),
    # and every phase (before, during, after the operations) had load. And no GET resent: the
    # server never closes a reused idle connection as a request arrives on it (RFC 9112 9.3.1's
    # race), because the client expires idle connections before the gateway's keep-alive
    # timeout, and a restarting gateway keeps that timeout for idle connections (no early close).
    assert verdict(report, max_resends=0) == []
    assert report["posts"]["applied once"] > 0
    woken = [s for s in report["sleeper"] if s["outcome"] == "ok"]
    assert len(woken) == len(report["sleeper"]) > 0  # the burst's requests, all served
