"""The short (~60 s) form of the zero-downtime scenario, run in CI.

The full form (`make load`) runs longer phases and prints the same table.
"""

from __future__ import annotations

import pytest

from tests.load.scenario import print_report, scenario


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_deploys_and_a_gateway_restart_fail_no_request_under_load() -> None:
    report = await scenario(rate=120.0, warmup=8.0, cooldown=8.0, deploys=10)
    print_report(report)
    assert [op["rc"] for op in report["ops"]] == [0] * 13, report["ops"]
    assert report["failed_gets"] == 0, report["failures_by_kind"]
    # Every POST was applied exactly once when it succeeded, and never when it failed.
    assert set(report["posts"]) <= {"applied once", "failed, never applied"}, report["posts"]
    assert report["posts"].get("applied once", 0) > 0
    assert all(p["requests"] > 0 for p in report["phases"].values())
