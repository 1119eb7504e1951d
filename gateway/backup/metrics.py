"""Prometheus families for replication, read from the supervisor's last poll at scrape time."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.backup.supervisor import Replication, State


def backup_metrics(replication: Replication) -> Iterator[Metric]:
    now = time.time()
    yield GaugeMetricFamily(
        "gateway_backup_up",
        "1 while the Litestream daemon runs (0 when down or backups are off)",
        value=int(replication.state is State.RUNNING and replication.daemon_alive()),
    )
    lag = GaugeMetricFamily(
        "gateway_backup_lag_seconds",
        "Seconds since the database's replica was last known up to date",
        labels=["database"],
    )
    last = GaugeMetricFamily(
        "gateway_backup_last_sync_timestamp_seconds",
        "Time of the last successful sync to the replica",
        labels=["database"],
    )
    for name, st in sorted(replication.statuses.items()):
        seconds = st.lag(now)
        if seconds is not None and st.last_sync is not None:
            lag.add_metric([name], seconds)
            last.add_metric([name], st.last_sync)
    yield lag
    yield last
    yield CounterMetricFamily(
        "gateway_backup_errors", "Replication errors seen by the gateway", value=replication.errors
    )
    yield CounterMetricFamily(
        "gateway_backup_restarts",
        "Times the Litestream daemon was restarted after dying",
        value=replication.restarts,
    )
