"""CLI for backups:

gateway backup status                     each database, its replica, lag, oldest restorable point
gateway backup now [--team SLUG]          upload pending changes now and wait for the replica
gateway restore --team SLUG [--at TIME]   pause, restore, verify, swap, resume (0 failed requests)
gateway restore --control [--at TIME]     the control store, with the gateway stopped
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
import httpx

from gateway.admin.discovery import find_admin
from gateway.backup.layout import Database, Layout, file_path, join_url
from gateway.backup.litestream import BackupError, parse_time, replica_span
from gateway.backup.restore import restore_offline, team_database
from gateway.backup.supervisor import stop_orphan
from gateway.clikit import config_options, run_cli
from gateway.config import Config
from gateway.errors import GatewayError
from gateway.lock import gateway_running
from gateway.store import open_store


def _admin(config: Config, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    found = find_admin(config)
    if found is None:
        raise GatewayError("the running gateway published no admin address; is it starting?")
    transport = httpx.HTTPTransport(uds=found.socket) if found.socket else None
    try:
        with httpx.Client(transport=transport, timeout=None) as client:
            r = client.request(
                method,
                found.url + path,
                json=body,
                headers={"authorization": f"Bearer {found.token}"},
            )
    except httpx.HTTPError as exc:
        raise GatewayError(f"the admin API at {found.url} did not answer: {exc}") from exc
    data = r.json()
    if r.status_code >= 400:
        raise GatewayError(str(data.get("detail") or data))
    return data


def _layout(config: Config) -> Layout:
    layout = Layout(config)
    if not layout.enabled:
        raise BackupError("backups are off (backup_replica = off)")
    return layout


def _at(raw: str | None) -> datetime | None:
    return parse_time(raw) if raw else None


@click.group()
def backup() -> None:
    """Continuous replication of every database (Litestream)."""


@backup.command("status")
@config_options
@run_cli
def backup_status(config: Config) -> None:
    """Each database, its replica, replication lag and the oldest restorable point."""
    layout = _layout(config)
    live: dict[str, Any] = {}
    if gateway_running(config.data_dir):
        live = _admin(config, "GET", "/api/backups")
        click.echo(
            f"litestream: {live['state']} (pid {live['pid'] or '-'}, "
            f"{live['restarts']} restart(s), {live['errors']} error(s))"
        )
        if live.get("last_error"):
            click.echo(f"last error: {live['last_error']}")
    else:
        click.echo("litestream: not running (no gateway runs on this data directory)")
    click.echo(f"replica root: {layout.root}")
    rows = {d["name"]: d for d in live.get("databases", [])}
    store = open_store(config.control_db)
    dbs = [layout.control(), *(layout.team(t.slug, t.created_at) for t in store.teams())]
    dbs += _deleted_replicas(layout, {db.replica for db in dbs})
    for db in dbs:
        row = rows.get(db.name, {})
        try:
            span = replica_span(db.replica)
            oldest = span.oldest.isoformat() if span.oldest else "no replica yet"
        except BackupError as exc:
            oldest = f"unreadable ({exc})"
        lag = row.get("lag")
        state = row.get("state") or ("deleted team" if db.name.startswith("(") else "-")
        click.echo(
            f"  {db.name:<20} {state:<14} lag {'-' if lag is None else f'{lag:.1f}s':<7} "
            f"oldest {oldest}"
        )
        click.echo(f"  {'':<20} {db.replica}")


@backup.command("now")
@click.option("--team", help="Only this team's database (default: every database).")
@config_options
@run_cli
def backup_now(config: Config, team: str | None) -> None:
    """Upload every pending change now and wait until the replica has it."""
    _layout(config)
    if not gateway_running(config.data_dir):
        raise GatewayError(
            "no gateway is running: replication runs with the gateway (gateway serve)"
        )
    data = _admin(config, "POST", "/api/backups/sync", {"team": team} if team else {})
    for row in data["synced"]:
        click.echo(f"{row['name']:<20} {row.get('status')} (txid {row.get('txid')})")


@click.command("restore")
@click.option("--team", help="Restore this team's database.")
@click.option("--control", is_flag=True, help="Restore the control store (gateway stopped).")
@click.option("--at", "at_raw", help="Point in time, e.g. 2026-01-31T14:05:00Z (default: latest).")
@config_options
@run_cli
def restore_cmd(config: Config, team: str | None, control: bool, at_raw: str | None) -> None:
    """Restore a database from its replica, to its latest state or a point in time.

    A team is paused and drained, restored into a new file, verified (PRAGMA
    integrity_check), swapped in and resumed: requests meanwhile are held, none fail.
    The previous file is kept in <data_dir>/restored/.
    """
    if bool(team) == control:
        raise click.UsageError("give exactly one of --team SLUG or --control")
    layout = _layout(config)
    at = _at(at_raw)
    running = gateway_running(config.data_dir)
    if control:
        if running:
            raise GatewayError(
                "stop the gateway first: the control store cannot be swapped under it "
                "(then run gateway restore --control again)"
            )
        stop_orphan(layout)
        result = restore_offline(layout, layout.control(), at, None)
    elif running:
        result_data = _admin(
            config, "POST", f"/api/teams/{team}/restore", {"at": at_raw} if at_raw else {}
        )
        click.echo(
            f"restored {team} to {result_data['at']} in {result_data['seconds']:.1f}s "
            f"(requests held {result_data['held']:.1f}s)"
        )
        if result_data["aside"]:
            click.echo(f"the previous file is in {result_data['aside']}")
        return
    else:
        assert team is not None
        db, created = team_database(layout, open_store(config.control_db), team)
        result = restore_offline(layout, db, at, created)
    click.echo(f"restored {result.name} to {result.at} in {result.seconds:.1f}s")
    if result.aside:
        click.echo(f"the previous file is in {result.aside}")


def register(cli: click.Group) -> None:
    cli.add_command(backup)
    cli.add_command(restore_cmd)


def _deleted_replicas(layout: Layout, known: set[str]) -> list[Database]:
    """Replicas of teams no longer in the store (file replicas: listed from the directory)."""
    root = file_path(layout.root)
    if root is None or not (root / "teams").is_dir():
        return []
    out = []
    for team in sorted(p for p in (root / "teams").iterdir() if p.is_dir()):
        for life in sorted(p for p in team.iterdir() if p.is_dir()):
            replica = join_url(layout.root, f"teams/{team.name}/{life.name}")
            if replica not in known:
                out.append(Database(f"({team.name} {life.name})", layout.team_path(team.name),
                                    replica))  # fmt: skip
    return out
