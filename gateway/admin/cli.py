"""CLI commands of the operations area: ``gateway routes`` and the live half of ``gateway
status`` (through the admin API when a gateway runs)."""

from __future__ import annotations

from typing import Any

import click
import httpx

from gateway.admin.discovery import find_admin
from gateway.clikit import config_options, run_cli
from gateway.config import Config
from gateway.errors import GatewayError
from gateway.lock import gateway_running


class AdminUnavailable(GatewayError):
    pass


def admin_get(config: Config, path: str) -> dict[str, Any]:
    """GET an admin API path from the running gateway; AdminUnavailable when it cannot."""
    found = find_admin(config) if gateway_running(config.data_dir) else None
    if found is None:
        raise AdminUnavailable("no running gateway published an admin address")
    transport = httpx.HTTPTransport(uds=found.socket) if found.socket else None
    try:
        with httpx.Client(transport=transport, timeout=10) as client:
            r = client.get(found.url + path, headers={"authorization": f"Bearer {found.token}"})
    except httpx.HTTPError as exc:
        raise AdminUnavailable(f"the admin API at {found.url} did not answer: {exc}") from exc
    if r.status_code == 401:
        raise AdminUnavailable("the admin API refused the token (is --admin-token the same?)")
    r.raise_for_status()
    data: dict[str, Any] = r.json()
    return data


def print_live_status(config: Config) -> bool:
    """Print the running gateway's live table; False when no admin API answers."""
    try:
        s = admin_get(config, "/api/status")
    except AdminUnavailable:
        return False
    ready = "ready" if s["ready"] else "loading routes"
    click.echo(f"gateway: running, {ready} ({s['url']})")
    for problem in s.get("problems", []):
        click.echo(f"  warning: {problem}")
    c = s["counters"]
    click.echo(f"  {c['requests']} request(s), {c['retries']} retr(y/ies), {c['drains']} drain(s)")
    for team in s["teams"]:
        click.echo(f"{team['slug']}  {team['state']}  {team['url']}")
        for t in team["targets"]:
            click.echo(
                f"  {t['id']:<24} {t['address']:<22} {t['state']:<10}"
                f" in-flight {t['inflight']:<4} served {t['served']}"
            )
            if t.get("last_error"):
                click.echo(f"    last error: {t['last_error']}")
    return True


def print_live_teams(config: Config) -> bool:
    """``teams list`` from the running gateway: the same states and URLs as ``status``."""
    try:
        teams = admin_get(config, "/api/teams")["teams"]
    except AdminUnavailable:
        return False
    if not teams:
        click.echo("No teams yet. Create one: gateway teams create SLUG")
        return True
    width = max(len(t["slug"]) for t in teams)
    for team in teams:
        click.echo(f"{team['slug']:<{width}}  {team['state']:<12}  {team['url']}")
    return True


def team_errors(config: Config, slug: str) -> tuple[str, str]:
    """From the running gateway: why ``slug``'s instance cannot start, and its last error."""
    try:
        teams = admin_get(config, "/api/teams")["teams"]
    except (AdminUnavailable, httpx.HTTPError, KeyError, ValueError):
        return "", ""
    targets = [t for team in teams if team["slug"] == slug for t in team["targets"]]
    start = next((str(t["start_error"]) for t in targets if t.get("start_error")), "")
    last = next((str(t["last_error"]) for t in targets if t.get("last_error")), "")
    return start, last


def _routes(config: Config) -> None:
    """Print the route table: host -> team, state and targets."""
    try:
        data = admin_get(config, "/api/routes")
    except AdminUnavailable:
        from gateway.admin.discovery import existing_store

        store = existing_store(config)
        click.echo("gateway: not running; routes the gateway will serve:")
        for team in store.teams():
            if team.state == "active":
                click.echo(f"  {team.slug}.{config.domain:<30} -> {team.slug}")
        return
    click.echo("gateway: running; live route table:")
    for route in data["routes"]:
        states = ", ".join(f"{t['id']} {t['state']} ({t['inflight']})" for t in route["targets"])
        click.echo(f"  {route['host']:<32} -> {route['team']:<16} {route['state']:<8} {states}")


@click.command("routes")
@config_options
@run_cli
def routes_command(config: Config) -> None:
    """Print the route table (live, through the admin API, when a gateway runs)."""
    _routes(config)


def register(cli: click.Group) -> None:
    """Add this area's commands to the ``gateway`` group (one line in gateway/cli.py)."""
    cli.add_command(routes_command)
