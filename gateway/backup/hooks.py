"""The one call ``gateway teams delete`` makes: wait until replication of the deleted team has
stopped (Litestream's unregister makes a final sync), before its files may be removed."""

from __future__ import annotations

import time

from gateway.admin.cli import AdminUnavailable, admin_get
from gateway.backup.layout import Layout
from gateway.config import Config
from gateway.lock import gateway_running

WAIT = 30.0


def team_deleted(config: Config, slug: str) -> None:
    """Without a running gateway nothing replicates, and the replica has all up to its stop.
    With one, its supervisor unregisters the team within a second of the delete."""
    if not Layout(config).enabled or not gateway_running(config.data_dir):
        return
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            names = {d["name"] for d in admin_get(config, "/api/backups")["databases"]}
        except AdminUnavailable:
            return
        if slug not in names:
            return
        time.sleep(0.2)
