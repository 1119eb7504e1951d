"""CLI for deploys and their relatives; each talks to the running gateway's admin API.

gateway deploy --team SLUG | --all [--image TAG] [--parallel N] [--resume ROLLOUT]
gateway rollback --team SLUG
gateway pause --team SLUG [--seconds N]     gateway resume --team SLUG
gateway maintenance --team SLUG --message TEXT | --off
gateway restart
gateway teams move SLUG --node NODE         (swarm runtime)
"""

from __future__ import annotations

import json
import time
from typing import Any

import click
import httpx

from gateway.admin.discovery import find_admin
from gateway.clikit import config_options, run_cli, subgroup
from gateway.config import Config
from gateway.errors import GatewayError
from gateway.lock import gateway_running
from gateway.slugs import validate_slug


class NoGateway(GatewayError):
    pass


def _client(config: Config, timeout: float | None = 30) -> tuple[httpx.Client, str]:
    found = find_admin(config) if gateway_running(config.data_dir) else None
    if found is None:
        raise NoGateway(
            f"no gateway is running on {config.data_dir}: start one with `gateway serve` "
            "(deploys, pauses and restarts act on a running gateway)"
        )
    transport = httpx.HTTPTransport(uds=found.socket) if found.socket else None
    client = httpx.Client(
        base_url=found.url,
        transport=transport,
        timeout=timeout,
        headers={"authorization": f"Bearer {found.token}"},
    )
    return client, found.url


def _post(config: Config, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    client, url = _client(config)
    with client:
        try:
            r = client.post(path, json=body or {})
        except httpx.HTTPError as exc:
            raise NoGateway(f"the admin API at {url} did not answer: {exc}") from exc
    data: dict[str, Any] = r.json()
    if r.status_code >= 400 and "detail" in data:
        raise GatewayError(str(data["detail"]))
    return data


@click.command()
@click.option("--team", "team", help="Deploy this team.")
@click.option("--all", "all_teams", is_flag=True, help="Deploy every team (a rollout).")
@click.option("--image", help="Image tag to run (docker runtime); default: the current one.")
@click.option("--parallel", type=int, help="Teams at once with --all (default: setting).")
@click.option("--resume", "rollout", help="Resume an interrupted --all rollout by its id.")
@config_options
@run_cli
def deploy(
    config: Config,
    team: str | None,
    all_teams: bool,
    image: str | None,
    parallel: int | None,
    rollout: str | None,
) -> None:
    """Replace a team's instance (or every team's) with zero failed requests."""
    if bool(team) == bool(all_teams or rollout):
        raise click.UsageError("give exactly one of --team SLUG or --all")
    body: dict[str, Any] = {"image": image, "parallel": parallel}
    body.update({"team": team} if team else {"all": True, "rollout": rollout})
    summary = _stream_deploy(config, body)
    if not summary.get("ok"):
        raise click.ClickException("some deploys failed; the old instances keep serving")


@click.command()
@click.option("--team", required=True, help="The team to roll back.")
@config_options
@run_cli
def rollback(config: Config, team: str) -> None:
    """Deploy a team's previous version again."""
    result = _post(config, f"/api/teams/{team}/rollback")
    _print_result(result)
    if not result.get("ok"):
        raise click.ClickException(result.get("reason") or "rollback failed")


@click.command()
@click.option("--team", required=True, help="The team to pause.")
@click.option(
    "--seconds",
    type=float,
    default=30.0,
    show_default=True,
    help="Hold requests at most this long (bounded by max_pause).",
)
@config_options
@run_cli
def pause(config: Config, team: str, seconds: float) -> None:
    """Hold a team's new requests (for a single-writer swap) until resume."""
    done = _post(config, f"/api/teams/{team}/pause?seconds={seconds}")
    applied = float(done["seconds"])
    capped = f" (capped at the gateway's max_pause, {applied:g}s)" if applied < seconds else ""
    click.echo(f"{team}: paused; requests are held for up to {applied:g}s{capped}")


@click.command()
@click.option("--team", required=True, help="The team to resume.")
@config_options
@run_cli
def resume(config: Config, team: str) -> None:
    """Release a paused team's held requests."""
    _post(config, f"/api/teams/{team}/resume")
    click.echo(f"{team}: resumed")


@click.command()
@click.option("--team", required=True, help="The team.")
@click.option("--message", help="Text of the 503 maintenance page.")
@click.option("--off", is_flag=True, help="End maintenance.")
@config_options
@run_cli
def maintenance(config: Config, team: str, message: str | None, off: bool) -> None:
    """Serve a 503 maintenance page with a message for a team (or --off)."""
    if bool(message) == off:
        raise click.UsageError("give --message TEXT or --off")
    _post(config, f"/api/teams/{team}/maintenance", {"message": None if off else message})
    click.echo(f"{team}: " + ("maintenance ended" if off else "in maintenance"))


@click.command()
@click.option(
    "--timeout",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds to wait for the new gateway process.",
)
@config_options
@run_cli
def restart(config: Config, timeout: float) -> None:
    """Restart the gateway with no dropped connection (same as `kill -HUP <pid>`)."""
    old = _post(config, "/api/restart")["pid"]
    click.echo(f"gateway pid {old}: handing its sockets to a new process...")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _published_pid(config)
        if found and found != old:
            click.echo(f"new gateway pid {found} is serving; pid {old} drains and exits")
            return
        time.sleep(0.2)
    raise click.ClickException("the new gateway did not take over; the old one still serves")


def register(cli: click.Group) -> None:
    subgroup(cli, "teams").add_command(move)  # gateway teams move
    cli.add_command(deploy)
    cli.add_command(rollback)
    cli.add_command(pause)
    cli.add_command(resume)
    cli.add_command(maintenance)
    cli.add_command(restart)


@click.command("move")
@click.argument("slug")
@click.option(
    "--node",
    required=True,
    help="Where to: a swarm node's id or hostname (`docker node ls`), or KEY=VALUE, a node "
    "label exactly one node carries.",
)
@config_options
@run_cli
def move(config: Config, slug: str, node: str) -> None:
    """Move team SLUG to another Swarm node with no failed request (--runtime swarm).

    Its requests are held while its database is copied and a new instance starts on NODE;
    then it cuts over and the old service and database are removed. On any failure the move
    is undone and the team serves from where it was.
    """
    slug = validate_slug(slug)
    client, url = _client(config, timeout=None)
    done: dict[str, Any] = {}
    try:
        with client, client.stream("POST", f"/api/teams/{slug}/move", json={"node": node}) as r:
            if r.status_code >= 400:
                r.read()
                raise GatewayError(str(r.json().get("detail", r.text)))
            for line in r.iter_lines():
                event = json.loads(line)
                if event["event"] == "step":
                    click.echo(f"{slug}: {event['message']}")
                else:
                    done = event
    except httpx.HTTPError as exc:
        raise NoGateway(f"the admin API at {url} did not answer: {exc}") from exc
    if not done.get("ok"):
        raise click.ClickException(str(done.get("reason") or "the move did not finish"))
    click.echo(
        f"{slug}: moved to node {done['node']} ({done['placement']}) in {done['seconds']}s, "
        f"requests held {done['held']}s"
    )


def _published_pid(config: Config) -> int | None:
    try:
        info = json.loads((config.data_dir / "admin.json").read_text())
    except (OSError, ValueError):
        return None
    pid = info.get("pid")
    return int(pid) if pid else None


def _stream_deploy(config: Config, body: dict[str, Any]) -> dict[str, Any]:
    client, _ = _client(config, timeout=None)
    summary: dict[str, Any] = {}
    with client, client.stream("POST", "/api/deploy", json=body) as r:
        if r.status_code >= 400:
            r.read()
            raise GatewayError(str(r.json().get("detail", r.text)))
        lines = r.iter_lines()
        start = json.loads(next(lines))
        teams = start["teams"]
        click.echo(f"deploying {len(teams)} team(s): {', '.join(teams)}")
        if start.get("rollout"):
            click.echo(f"rollout {start['rollout']} (if cut off: --resume {start['rollout']})")
        with click.progressbar(length=len(teams), label="deploy", show_pos=True) as bar:
            for line in lines:
                event = json.loads(line)
                if event["event"] == "done":
                    bar.update(1)
                elif event["event"] == "summary":
                    summary = event
    click.echo("")
    for result in summary.get("results", []):
        _print_result(result)
    if summary.get("rollout"):
        click.echo(f"rollout {summary['rollout']} (resume with --resume {summary['rollout']})")
    return summary


def _print_result(r: dict[str, Any]) -> None:
    mark = "ok    " if r.get("ok") else "FAILED"
    line = (
        f"{mark} {r['team']:<20} {r['from_version']} -> {r['to_version']}  "
        f"drained {r['drained']}, cancelled {r['cancelled']}, {r['seconds']:.1f}s"
    )
    if r.get("reason"):
        line += f"  ({r['reason']})"
    click.echo(line)
