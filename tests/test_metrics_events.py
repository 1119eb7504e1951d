"""Each series an SRE needs moves after the event that should move it: /metrics is parsed with
prometheus_client's own parser after every step."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import Gateway
from gateway.config import Config
from gateway.observability.prom import exposition, make_registry
from tests.conftest import LoopbackTransport, StartGateway
from tests.servers import RawUpstream, UvicornUpstream, gateway_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(app: Gateway) -> Samples:
    """What GET /metrics answers (the same registry and exposition), parsed."""
    text = exposition(make_registry(app)).decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def one(m: Samples, name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_denials_unknown_hosts_upstream_failures_pause_and_maintenance(
    config: Config, start_gateway: StartGateway
) -> None:
    good = await UvicornUpstream().start()
    bad = await RawUpstream("midbody").start()
    try:
        gw = await gateway_for(
            start_gateway, config, {"alpha": [good.address], "beta": [bad.address]}
        )
        m = scrape(gw.app)
        assert one(m, "gateway_build_info", **_build_labels(m)) == 1
        assert one(m, "process_start_time_seconds") > 0
        assert one(m, "gateway_team_healthy_targets", team="alpha") == 1
        assert one(m, "gateway_unknown_host_requests_total") == 0

        async with gw.client() as client:
            assert (await client.get(gw.url("ghost", "/"))).status_code == 404
        m = scrape(gw.app)
        assert one(m, "gateway_unknown_host_requests_total") == 1
        assert one(m, "gateway_proxy_errors_total", kind="404") == 0  # not a proxy error

        anonymous = httpx.AsyncClient(transport=LoopbackTransport(), timeout=30)
        async with anonymous:
            r = await anonymous.get(gw.url("alpha", "/data.json"), headers={"accept": "json"})
        assert r.status_code == 401
        m = scrape(gw.app)
        assert one(m, "gateway_denied_requests_total", status="401") == 1
        assert one(m, "gateway_proxy_errors_total", kind="401") == 0

        async with gw.client() as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(gw.url("beta", "/file"))
        m = scrape(gw.app)
        assert one(m, "gateway_upstream_failures_total", kind="truncated") == 1
        assert one(m, "gateway_upstream_failures_total", kind="connect") == 0

        gw.app.fleet.pause("alpha", 5)
        assert one(scrape(gw.app), "gateway_team_paused", team="alpha") == 1
        gw.app.fleet.resume("alpha")
        assert one(scrape(gw.app), "gateway_team_paused", team="alpha") == 0
        gw.app.fleet.set_maintenance("alpha", "back soon")
        assert one(scrape(gw.app), "gateway_team_maintenance", team="alpha") == 1
        gw.app.fleet.set_maintenance("alpha", None)
        assert one(scrape(gw.app), "gateway_team_maintenance", team="alpha") == 0

        await bad.close()  # beta's instance goes away: its health checks fail
        for _ in range(200):
            if one(scrape(gw.app), "gateway_health_check_failures_total", team="beta") >= 1:
                break
            await asyncio.sleep(0.05)
        m = scrape(gw.app)
        assert one(m, "gateway_health_check_failures_total", team="beta") >= 1
        assert one(m, "gateway_health_check_failures_total", team="alpha") == 0
    finally:
        await good.close()
        await bad.close()


def _build_labels(m: Samples) -> dict[str, str]:
    (labels,) = [dict(k[1]) for k in m if k[0] == "gateway_build_info"]
    assert labels["version"] and labels["python"] and labels["hot_path"] in ("compiled", "python")
    return labels


async def test_a_killed_instance_and_a_refused_deploy_are_counted(
    config: Config, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(config, teams=("alpha",))
    await gw.wait_healthy("alpha")
    assert one(scrape(gw.app), "gateway_instance_crashes_total") == 0
    (inst,) = gw.app.store.instances("alpha")
    pid = gw.app.runtime.pid(inst.id)  # type: ignore[attr-defined]
    assert pid
    os.kill(pid, signal.SIGKILL)
    for _ in range(200):
        if one(scrape(gw.app), "gateway_instance_crashes_total") == 1:
            break
        await asyncio.sleep(0.05)
    assert one(scrape(gw.app), "gateway_instance_crashes_total") == 1

    result = await gw.app.deployer.deploy("alpha", "busybox:latest")
    assert not result.ok
    m = scrape(gw.app)
    assert one(m, "gateway_deploys_total", outcome="failed") == 1
    assert one(m, "gateway_deploys_total", outcome="succeeded") == 0


async def test_certificate_expiry(config: Config, start_gateway: StartGateway, tmp_path: Path):
    from cryptography import x509

    from gateway.tls import make_dev_certs

    certs = make_dev_certs("localhost", tmp_path / "certs")
    gw = await start_gateway(config.replace(tls_cert=str(certs.cert), tls_key=str(certs.key)))
    cert = x509.load_pem_x509_certificate(certs.cert.read_bytes())
    expiry = one(scrape(gw.app), "gateway_tls_certificate_expiry_timestamp_seconds")
    assert expiry == pytest.approx(cert.not_valid_after_utc.timestamp())


async def test_upstream_header_latency_histogram(
    config: Config, start_gateway: StartGateway
) -> None:
    """The time an instance takes to answer, by team: a real upstream sleeping 1.2 s lands
    above the 1 s bucket, fast answers below it, and another team's series stays still."""
    name = "gateway_upstream_header_duration_seconds"
    alpha = await UvicornUpstream().start()
    beta = await UvicornUpstream().start()
    try:
        gw = await gateway_for(
            start_gateway, config, {"alpha": [alpha.address], "beta": [beta.address]}
        )
        m = scrape(gw.app)
        assert one(m, f"{name}_count", team="alpha") == 0
        assert one(m, f"{name}_sum", team="alpha") == 0
        assert one(m, f"{name}_bucket", team="alpha", le="+Inf") == 0

        async with gw.client() as client:
            r = await client.get(gw.url("alpha", "/slow"), params={"s": "1.2"})
        assert r.status_code == 200
        m = scrape(gw.app)
        assert one(m, f"{name}_count", team="alpha") == 1
        assert one(m, f"{name}_sum", team="alpha") >= 1.2
        assert one(m, f"{name}_bucket", team="alpha", le="1") == 0
        assert one(m, f"{name}_bucket", team="alpha", le="+Inf") == 1
        assert one(m, f"{name}_count", team="beta") == 0

        async with gw.client() as client:
            for _ in range(3):
                r = await client.get(gw.url("alpha", "/status"))
                assert r.status_code == 200
        m = scrape(gw.app)
        assert one(m, f"{name}_count", team="alpha") == 4
        assert one(m, f"{name}_bucket", team="alpha", le="+Inf") == 4
        # The three fast answers (milliseconds; a loaded machine stays far under 1 s).
        assert one(m, f"{name}_bucket", team="alpha", le="1") == 3
        assert one(m, f"{name}_count", team="beta") == 0
    finally:
        await alpha.close()
        await beta.close()
