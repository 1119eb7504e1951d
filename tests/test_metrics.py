"""Prometheus /metrics on the admin listener and the JSON access log, from real traffic."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gateway.config import Config
from gateway.context import RequestContext
from gateway.observability.accesslog import open_access_log
from gateway.observability.stats import HISTORY, SLOT, RequestStats
from tests.edge import run_edge


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_count_real_requests(config: Config) -> None:
    async with run_edge(config, teams=("alpha",)) as gw:
        await gw.wait_healthy("alpha")
        gw.app.stats.event("login_failures", 1)  # any part may report events too
        async with gw.client() as client:
            for _ in range(5):
                r = await client.get(gw.url("alpha", "/-/versions.json"))
                assert r.status_code == 200
            assert (await client.get(gw.url("alpha", "/nope-404"))).status_code == 404
            assert (await client.get(gw.url("ghost", "/"))).status_code == 404
            # A failed sign-in on the apex, through the real form and its CSRF token.
            form = await client.get(gw.url(None, "/login"))
            token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
            assert token, form.text
            failed = await client.post(
                gw.url(None, "/login"),
                data={
                    "email": "nobody@example.org",
                    "password": "wrong-password",
                    "csrf_token": token[1],
                },
                headers={
                    "origin": gw.config.base_url,
                    # The test transport dials 127.0.0.1, so pass the form's cookie by hand.
                    "cookie": "; ".join(
                        c.split(";")[0] for c in form.headers.get_list("set-cookie")
                    ),
                },
            )
            assert failed.status_code == 400, failed.text
        async with gw.admin() as admin:
            r = await admin.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        m = samples(r.text)
        assert m[("gateway_requests_total", (("status", "200"), ("team", "alpha")))] == 5
        assert m[("gateway_requests_total", (("status", "404"), ("team", "alpha")))] == 1
        assert m[("gateway_requests_total", (("status", "404"), ("team", "-")))] == 1
        count = m[("gateway_request_duration_seconds_count", (("team", "alpha"),))]
        inf = m[("gateway_request_duration_seconds_bucket", (("le", "+Inf"), ("team", "alpha")))]
        assert count == inf == 6
        assert m[("gateway_request_duration_seconds_sum", (("team", "alpha"),))] > 0
        assert m[("gateway_targets", (("state", "healthy"),))] == 1
        assert m[("gateway_targets", (("state", "draining"),))] == 0
        assert m[("gateway_inflight", (("team", "alpha"),))] == 0
        assert m[("gateway_teams", ())] == 1
        assert m[("gateway_ready", ())] == 1
        assert m[("gateway_proxy_retries_total", ())] == 0
        assert ("gateway_proxy_retry_skipped_total", (("reason", "body_not_held"),)) in m
        assert m[("gateway_login_failures_total", ())] == 2
        assert m[("gateway_drains_total", ())] == 0
        for family in ("gateway_deploys", "gateway_imports"):
            assert f"# TYPE {family}_total counter" in r.text


async def test_access_log_lines(config: Config, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with run_edge(config.replace(access_log=str(log)), teams=("alpha",)) as gw:
        await gw.wait_healthy("alpha")
        async with gw.client() as client:
            r = await client.get(
                gw.url("alpha", "/-/versions.json"), headers={"x-request-id": "test-req-0001"}
            )
            assert r.status_code == 200
            await client.get(gw.url(None, "/-/gateway/livez"))
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    team = [line for line in lines if line["team"] == "alpha"]
    assert len(team) == 1
    entry = team[0]
    assert entry["id"] == "test-req-0001"
    assert entry["status"] == 200 and entry["method"] == "GET"
    assert entry["path"] == "/-/versions.json"
    assert entry["target"].startswith("alpha-") and entry["retries"] == 0
    assert entry["ms"] > 0 and entry["client"] == "127.0.0.1"
    apex = [line for line in lines if line["path"] == "/-/gateway/livez"]
    assert apex and apex[0]["team"] is None and apex[0]["status"] == 200


def test_sparkline_slots_roll_over() -> None:
    stats = RequestStats()
    t0 = 1000 * SLOT
    for _ in range(30):
        stats.record("alpha", 200, 0.01, t0 + 1)
    stats.record("alpha", 200, 0.01, t0 + 2 * SLOT + 1)  # one idle slot in between
    points = stats.sparkline("alpha", t0 + 2 * SLOT + 2)
    assert len(points) == HISTORY
    assert points[-3:] == [30 / SLOT, 0.0, 1 / SLOT]
    assert stats.sparkline("beta", t0) == [0.0] * HISTORY
    # Long idle: the ring fills with zeros, never grows.
    assert stats.sparkline("alpha", t0 + 500 * SLOT) == [0.0] * HISTORY


def test_access_log_lines_are_json_whatever_the_path(tmp_path: Path) -> None:
    log = open_access_log(str(tmp_path / "a.log"))
    assert log is not None and open_access_log("") is None
    nasty = '/x"y\\z\n\u00e9\u2028\x00'
    first_ctx, second_ctx = RequestContext(), RequestContext()
    first_ctx.request_id, second_ctx.team = b"abcdefgh", "alpha"
    log.write({"method": "GET", "path": nasty, "client": None}, first_ctx, 404, 0.5, 0.0)
    log.write({"method": "POST", "path": "/"}, second_ctx, 200, 0.001, 10.0)
    log.close()
    first, second = (json.loads(x) for x in (tmp_path / "a.log").read_text().splitlines())
    assert first["path"] == nasty and first["team"] is None and first["client"] is None
    assert first["id"] == "abcdefgh" and first["ms"] == 500.0 and first["target"] is None
    assert second["team"] == "alpha" and second["id"] is None and second["retries"] == 0
