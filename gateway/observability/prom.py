"""Prometheus exposition: a custom Collector that reads the gateway's own counters at scrape time.

Nothing here runs per request. Each scrape builds the metric families from ``RequestStats``,
the proxy's ``Counters``, the live targets, the fleet's drains and the control store (deploys
and import jobs, when those tables exist). Every gateway gets its own registry, so several
gateways in one process (tests, appliances) never share or clash.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gateway.backup.metrics import backup_metrics
from gateway.observability.stats import BUCKETS
from gateway.routing.target import State

if TYPE_CHECKING:
    from gateway.app import Gateway

NO_TEAM = "-"  # the apex site and unknown hosts


class GatewayCollector(Collector):
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def collect(self) -> Iterator[Metric]:
        yield from self._requests()
        yield from self._proxy()
        yield from self._targets()
        yield from self._store()
        yield from backup_metrics(self.gw.backups)
        events = CounterMetricFamily(
            "gateway_events", "Other events reported by gateway parts", labels=["event"]
        )
        for name, n in sorted(self.gw.stats.events.items()):
            events.add_metric([name], n)
        yield events
        failures = self.gw.stats.events.get("login_failures", 0)
        yield CounterMetricFamily(
            "gateway_login_failures", "Failed sign-in attempts", value=failures
        )
        yield GaugeMetricFamily(
            "gateway_ready", "1 once the route table is loaded", value=int(self.gw.fleet.ready)
        )

    def _requests(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "gateway_requests", "Requests answered, by team and status", labels=["team", "status"]
        )
        latency = HistogramMetricFamily(
            "gateway_request_duration_seconds",
            "Time from request to the end of the response, by team",
            labels=["team"],
        )
        bounds = [*(str(b) for b in BUCKETS), "+Inf"]
        for team, st in sorted(self.gw.stats.teams.items()):
            label = team or NO_TEAM
            for status, n in sorted(st.statuses.items()):
                requests.add_metric([label, str(status)], n)
            cumulative, running = [], 0
            for bound, n in zip(bounds, st.buckets, strict=True):
                running += n
                cumulative.append((bound, running))
            latency.add_metric([label], cumulative, st.sum)
        yield requests
        yield latency

    def _proxy(self) -> Iterator[Metric]:
        c = self.gw.counters
        yield CounterMetricFamily(
            "gateway_proxy_retries", "Requests retried on another target", value=c.retries
        )
        skipped = CounterMetricFamily(
            "gateway_proxy_retry_skipped",
            "Failures the retry rules did not retry",
            labels=["reason"],
        )
        skipped.add_metric(["body_not_held"], c.retry_skipped_body)
        skipped.add_metric(["not_idempotent"], c.retry_skipped_method)
        yield skipped
        errors = CounterMetricFamily(
            "gateway_proxy_errors", "Requests that ended in a gateway error", labels=["kind"]
        )
        for kind, n in sorted(c.errors.items()):
            errors.add_metric([kind], n)
        yield errors
        drains = self.gw.fleet.drains
        yield CounterMetricFamily("gateway_drains", "Targets drained", value=len(drains))
        yield CounterMetricFamily(
            "gateway_drain_cancelled",
            "In-flight requests cut when a drain timed out",
            value=sum(d.cancelled for d in drains),
        )

    def _targets(self) -> Iterator[Metric]:
        by_state: Counter[str] = Counter({str(s): 0 for s in State})
        inflight = GaugeMetricFamily(
            "gateway_inflight", "Requests in flight, by team", labels=["team"]
        )
        for slug, service in sorted(self.gw.fleet.services.items()):
            targets = service.targets()
            by_state.update(str(t.state) for t in targets)
            inflight.add_metric([slug], sum(t.inflight for t in targets))
        states = GaugeMetricFamily("gateway_targets", "Routed targets, by state", labels=["state"])
        for state, n in sorted(by_state.items()):
            states.add_metric([state], n)
        yield states
        yield inflight
        yield GaugeMetricFamily("gateway_teams", "Teams routed", value=len(self.gw.fleet.services))

    def _store(self) -> Iterator[Metric]:
        deploys = CounterMetricFamily("gateway_deploys", "Deploys, by outcome", labels=["outcome"])
        for status, n in _group_count(self.gw, "deploys", "status"):
            deploys.add_metric([status], n)
        yield deploys
        imports = CounterMetricFamily(
            "gateway_imports", "CSV import jobs, by state", labels=["state"]
        )
        for state, n in _group_count(self.gw, "import_jobs", "state"):
            imports.add_metric([state], n)
        yield imports


def _group_count(gw: Gateway, table: str, column: str) -> list[tuple[str, int]]:
    """Counts by ``column`` in ``table``; empty when another part's table is not there yet."""
    with contextlib.suppress(sqlite3.Error):
        rows = gw.store.query(
            f"SELECT [{column}] AS k, count(*) AS n FROM [{table}] GROUP BY [{column}]"
        )
        return [(str(r["k"]), int(r["n"])) for r in rows]
    return []


def make_registry(gw: Gateway) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(gw))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
