"""The short (~60 s) form of the zero-downtime scenario, run in CI.

The full form (`make load`) runs longer phases and prints the same table.
"""

from __future__ import annotations

import pytest

from tests.load.scenario import TEAMS, print_report, scenario, verdict


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_deploys_and_a_gateway_restart_fail_no_request_under_load() -> None:
    report = await scenario(rate=120.0, warmup=8.0, cooldown=8.0, deploys=10)
    print_report(report)
    ops = [op["op"] for op in report["ops"]]
    assert ops[-4:] == [
        "deploy --all",
        "gateway restart",
        "old gateway exited",
        f"restore {TEAMS[0]} to now",
    ], ops
    assert len(ops) == 14, ops
    # Zero failed requests: every GET and every POST succeeded (a POST applied exactly once),
    # and every phase (before, during, after the operations) had load. A GET resent because the
    # server closed a REUSED idle keep-alive connection just as it was sent (RFC 9112 9.3.1: the
    # keep-alive close race) is not a failure; it is counted and bounded (seen: 0-1 a run).
    assert verdict(report, max_resends=2) == []
    assert report["posts"]["applied once"] > 0
