"""Prometheus exposition: a custom Collector that reads the gateway's own counters at scrape time.

Nothing here runs per request. Each scrape builds the metric families from ``RequestStats``,
the proxy's ``Counters``, the live targets, the fleet's drains and the control store (deploys
and import jobs, when those tables exist). Every gateway gets its own registry, so several
gateways in one process (tests, appliances) never share or clash.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import platform
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gateway import native
from gateway.backup.metrics import backup_metrics
from gateway.diskspace import free_bytes
from gateway.observability.failures import DENIED, UNKNOWN_HOST, UPSTREAM
from gateway.observability.stats import BUCKETS
from gateway.routing.target import State

if TYPE_CHECKING:
    from gateway.backup.supervisor import Replication
    from gateway.config import Config
    from gateway.diskspace import SpaceWatch
    from gateway.fleet import Fleet
    from gateway.observability.stats import RequestStats
    from gateway.routing.exchange import Counters
    from gateway.runtimes.base import Runtime
    from gateway.store import Store

NO_TEAM = "-"  # the apex site and unknown hosts


class MetricsParts(Protocol):
    """What a scrape reads (the gateway built in app.py has it)."""

    config: Config
    store: Store
    fleet: Fleet
    runtime: Runtime
    stats: RequestStats
    counters: Counters
    space: SpaceWatch
    backups: Replication


class GatewayCollector(Collector):
    def __init__(self, parts: MetricsParts) -> None:
        self.parts = parts

    def collect(self) -> Iterator[Metric]:
        yield from self._requests()
        yield from self._proxy()
        yield from self._targets()
        yield from self._store()
        yield from backup_metrics(self.parts.backups)
        events = CounterMetricFamily(
            "gateway_events", "Other events reported by gateway parts", labels=["event"]
        )
        for name, n in sorted(self.parts.stats.events.items()):
            events.add_metric([name], n)
        yield events
        failures = self.parts.stats.events.get("login_failures", 0)
        yield CounterMetricFamily(
            "gateway_login_failures", "Failed sign-in attempts", value=failures
        )
        yield GaugeMetricFamily(
            "gateway_ready",
            "1 once the route table is loaded and the runtime works (/readyz)",
            value=int(self.parts.fleet.ready and not self.parts.runtime.problem()),
        )
        yield build_info()
        free = free_bytes(self.parts.config.data_dir)
        if free is not None:
            yield GaugeMetricFamily(
                "gateway_data_dir_free_bytes",
                "Bytes free for the gateway on the data directory's file system",
                value=free,
            )
        yield GaugeMetricFamily(
            "gateway_data_dir_low_space",
            "1 while the data directory has less than min_free_mb free",
            value=int(bool(self.parts.space.problem())),
        )
        expiry = cert_expiry(self.parts.config.tls_cert)
        if expiry is not None:
            yield GaugeMetricFamily(
                "gateway_tls_certificate_expiry_timestamp_seconds",
                "When the served TLS certificate expires (unix time)",
                value=expiry,
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
        for team, st in sorted(self.parts.stats.teams.items()):
            label = team or NO_TEAM
            for status, n in sorted(st.statuses.items()):
                requests.add_metric([label, str(status)], n)
            latency.add_metric([label], cumulative(st.buckets), st.sum)
        yield requests
        yield latency

    def _proxy(self) -> Iterator[Metric]:
        c = self.parts.counters
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
            "gateway_proxy_errors",
            "Requests that ended in another gateway error (503, 400, 413...), by status",
            labels=["kind"],
        )
        denied = CounterMetricFamily(
            "gateway_denied_requests", "Requests refused by auth, by status", labels=["status"]
        )
        upstream = CounterMetricFamily(
            "gateway_upstream_failures",
            "Failures talking to an instance (connect, connect_timeout, reset, read_timeout, "
            "protocol, truncated, aborted)",
            labels=["kind"],
        )
        for status in DENIED:
            denied.add_metric([status], c.errors.get(status, 0))
        for kind in sorted(UPSTREAM):
            upstream.add_metric([kind], c.errors.get(kind, 0))
        for kind, n in sorted(c.errors.items()):
            if kind not in UPSTREAM and kind not in DENIED and kind != UNKNOWN_HOST:
                errors.add_metric([kind], n)
        yield errors
        yield denied
        yield upstream
        yield CounterMetricFamily(
            "gateway_unknown_host_requests",
            "Requests for a host where no team lives (404)",
            value=c.errors.get(UNKNOWN_HOST, 0),
        )
        drains = self.parts.fleet.drains
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
        for slug, service in sorted(self.parts.fleet.services.items()):
            targets = service.targets()
            by_state.update(str(t.state) for t in targets)
            inflight.add_metric([slug], sum(t.inflight for t in targets))
        states = GaugeMetricFamily("gateway_targets", "Routed targets, by state", labels=["state"])
        for state, n in sorted(by_state.items()):
            states.add_metric([state], n)
        yield states
        yield inflight
        yield GaugeMetricFamily(
            "gateway_teams", "Teams routed", value=len(self.parts.fleet.services)
        )
        upstream = HistogramMetricFamily(
            "gateway_upstream_header_duration_seconds",
            "Time from a request fully sent to an instance until its response head arrived, "
            "by team",
            labels=["team"],
        )
        for slug, service in sorted(self.parts.fleet.services.items()):
            h = service.upstream_latency
            upstream.add_metric([slug], cumulative(h.buckets), h.sum)
        yield upstream
        yield from self._teams()

    def _teams(self) -> Iterator[Metric]:
        fleet = self.parts.fleet
        healthy = GaugeMetricFamily(
            "gateway_team_healthy_targets", "Healthy targets of each team", labels=["team"]
        )
        paused = GaugeMetricFamily(
            "gateway_team_paused", "1 while a team is paused", labels=["team"]
        )
        maintenance = GaugeMetricFamily(
            "gateway_team_maintenance", "1 while a team shows its maintenance page", labels=["team"]
        )
        failures = CounterMetricFamily(
            "gateway_health_check_failures", "Failed active health checks, by team", labels=["team"]
        )
        sleeping = GaugeMetricFamily(
            "gateway_team_sleeping",
            "1 while a team sleeps (idle: no instance; its first request wakes it)",
            labels=["team"],
        )
        for slug, service in sorted(fleet.services.items()):
            sleeping.add_metric([slug], int(service.sleeping))
            up = sum(t.state is State.HEALTHY for t in service.targets())
            healthy.add_metric([slug], up)
            paused.add_metric([slug], int(service.state() == "paused"))
            maintenance.add_metric([slug], int(service.maintenance is not None))
            failures.add_metric([slug], fleet.health.failures.get(slug, 0))
        yield healthy
        yield paused
        yield maintenance
        yield failures
        yield sleeping
        yield GaugeMetricFamily(
            "gateway_teams_sleeping",
            "Teams asleep",
            value=sum(s.sleeping for s in fleet.services.values()),
        )
        yield CounterMetricFamily(
            "gateway_team_sleeps", "Teams put to sleep (idle or to make room)", value=fleet.sleeps
        )
        yield CounterMetricFamily(
            "gateway_team_wakes", "Sleeping teams woken by a request", value=fleet.wakes
        )
        yield CounterMetricFamily(
            "gateway_instance_crashes",
            "Instances that died or were killed behind the gateway's back (then restarted)",
            # docker: reported to the fleet (Runtime.watch); local: the runtime's supervisor.
            value=fleet.crashes + self.parts.runtime.crashes,
        )

    def _store(self) -> Iterator[Metric]:
        deploys = CounterMetricFamily("gateway_deploys", "Deploys, by outcome", labels=["outcome"])
        for status, n in _group_count(self.parts.store, "deploys", "status"):
            deploys.add_metric([status], n)
        yield deploys
        imports = CounterMetricFamily(
            "gateway_imports", "CSV import jobs, by state", labels=["state"]
        )
        for state, n in _group_count(self.parts.store, "import_jobs", "state"):
            imports.add_metric([state], n)
        yield imports


BOUNDS = [*(str(b) for b in BUCKETS), "+Inf"]


def cumulative(buckets: list[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (``stats.BUCKETS`` and +Inf) as Prometheus's cumulative buckets."""
    out: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip(BOUNDS, buckets, strict=True):
        running += n
        out.append((bound, running))
    return out


def _group_count(store: Store, table: str, column: str) -> list[tuple[str, int]]:
    """Counts by ``column`` in ``table``; empty when another part's table is not there yet."""
    with contextlib.suppress(sqlite3.Error):
        rows = store.query(
            f"SELECT [{column}] AS k, count(*) AS n FROM [{table}] GROUP BY [{column}]"
        )
        return [(str(r["k"]), int(r["n"])) for r in rows]
    return []


def build_info() -> Metric:
    info = GaugeMetricFamily(
        "gateway_build_info",
        "The gateway's version, Python and hot path (value 1)",
        labels=["version", "python", "hot_path"],
    )
    hot = "compiled" if native.in_use() else "python"
    info.add_metric([_version(), platform.python_version(), hot], 1)
    return info


@functools.cache
def _version() -> str:
    try:
        return importlib.metadata.version("gateway")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@functools.lru_cache(maxsize=4)
def _expiry(path: str, mtime: float) -> float | None:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError):
        return None
    return cert.not_valid_after_utc.timestamp()


def cert_expiry(path: str) -> float | None:
    """The certificate's notAfter, re-read only when the file changes (a renewal)."""
    if not path:
        return None
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return None
    return _expiry(path, mtime)


def make_registry(parts: MetricsParts) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(parts))
    # process_* (CPU, memory, open fds, start time): what every Prometheus exporter has.
    ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
