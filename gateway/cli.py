"""The ``gateway`` command: a thin layer over ``Config`` (uvicorn's pattern).

Every setting in ``gateway.config.SETTINGS`` becomes a ``--flag`` on each command that needs
configuration, read from ``GATEWAY_<NAME>`` when the flag is absent.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from gateway import archive
from gateway.admin.cli import register as register_ops
from gateway.auth.cli import register as register_auth
from gateway.auth.signups import sign_ups_closed
from gateway.backup.cli import register as register_backups
from gateway.backup.hooks import team_deleted
from gateway.clikit import config_options, run_cli
from gateway.config import Config
from gateway.deploy.cli import register as register_deploys
from gateway.edge.cli import register as register_edge
from gateway.errors import ConfigError, GatewayError, TeamExists
from gateway.filemodes import private_umask
from gateway.lock import gateway_running
from gateway.runtimes.docker.cli import register as register_image
from gateway.slugs import validate_slug
from gateway.store import Store, open_store


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gateway")
def cli() -> None:
    """The public entrypoint of a hosted-Datasette service.

    Each team gets its own Datasette at https://<team>.<domain>/.
    """
    private_umask()  # the control store and volumes a command creates are private


@cli.command()
@config_options
@run_cli
def serve(config: Config) -> None:
    """Run the gateway: routing, auth and upload, in one process."""
    from gateway.server import serve as run

    run(config)


@cli.group()
def teams() -> None:
    """Create, list and delete teams."""


@teams.command("create")
@click.argument("slug")
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="With a gateway running, wait until the team's Datasette answers.",
)
@click.option("--force", is_flag=True, help="Create it even beyond the max_teams limit.")
@config_options
@run_cli
def teams_create(config: Config, slug: str, wait: bool, force: bool) -> None:
    """Create team SLUG, its volume and its Datasette instance."""
    slug = validate_slug(slug)
    store = open_store(config.control_db)
    existing = {t.slug for t in store.teams()}
    if not force and slug not in existing and sign_ups_closed(len(existing), config.max_teams):
        raise click.ClickException(
            f"this host already serves {len(existing)} teams (max_teams is {config.max_teams}); "
            "add --force to create one anyway, or raise --max-teams"
        )
    from gateway.runtimes.base import prepare_team_dir

    try:
        store.create_team(slug)
    except TeamExists:
        if config.runtime not in ("docker", "swarm"):
            raise
        # Rerunning converges an interrupted provision: find, create or start the container.
        click.echo(f"Team {slug} exists; making sure its container runs.")
    prepare_team_dir(config.teams_dir / slug)
    url = config.team_url(slug) + "/"
    if not gateway_running(config.data_dir):
        if config.runtime == "docker":
            from gateway.runtimes.docker.runtime import provision_team

            provision_team(config, store, slug, wait=wait)
            click.echo(f"Team {slug}'s container is running.")
        elif config.runtime == "swarm":
            from gateway.runtimes.swarm.runtime import provision_swarm_team

            provision_swarm_team(config, store, slug, wait=wait)
            click.echo(f"Team {slug}'s service is running.")
        click.echo(f"Created team {slug}. Start the gateway (gateway serve) to serve it at {url}")
        return
    from gateway.admin.discovery import running_base_url

    url = config.replace(public_url=running_base_url(config)).team_url(slug) + "/"
    click.echo(f"Created team {slug}; the running gateway is starting its instance...")
    if not wait:
        click.echo(f"Starting: {url} (follow it with `gateway status`)")
        return
    _wait_ready(config, store, slug, timeout=60)
    click.echo(f"Ready: {url}")


@teams.command("list")
@click.option("--deleted", is_flag=True, help="List archived volumes of deleted teams instead.")
@config_options
@run_cli
def teams_list(config: Config, deleted: bool) -> None:
    """List teams, their URLs and live states (the same as `gateway status`)."""
    from gateway.admin.cli import print_live_teams
    from gateway.admin.discovery import existing_store, running_base_url

    if deleted:
        _list_archived(config, existing_store(config))
        return
    if print_live_teams(config):
        return
    store = existing_store(config)
    config = config.replace(public_url=running_base_url(config))
    teams = store.teams()
    if not teams:
        click.echo("No teams yet. Create one: gateway teams create SLUG")
        return
    width = max(len(t.slug) for t in teams)
    for team in teams:
        # No gateway runs: a target's last recorded state is history, not its state now.
        state = team.state if team.state != "active" else "not running"
        click.echo(f"{team.slug:<{width}}  {state:<12}  {config.team_url(team.slug)}/")


def _list_archived(config: Config, store: Store) -> None:
    rows = archive.archived(config, store)
    if not rows:
        click.echo("No archived teams.")
    for a in rows:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(a.deleted_at))
        click.echo(f"{a.name}  {a.slug}  deleted {when}  {a.size / 1e6:.1f} MB  {a.path}")


@teams.command("delete")
@click.argument("slug")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--purge", is_flag=True, help="Also delete the team's data (else it is archived).")
@config_options
@run_cli
def teams_delete(config: Config, slug: str, yes: bool, purge: bool) -> None:
    """Delete team SLUG: drain its targets, stop its instance, archive its data (--purge:
    delete it). The name is then free, with an empty volume."""
    slug = validate_slug(slug)
    store = open_store(config.control_db)
    store.team(slug)  # raises TeamNotFound with a clear message
    t0 = time.time()
    what = "and ALL ITS DATA " if purge else ""
    if not yes and not click.confirm(f"Delete team {slug} {what}?", default=False):
        raise click.Abort()
    if gateway_running(config.data_dir):
        _refuse_if_busy(config, slug)
        store.set_team_state(slug, "deleting")
        click.echo(f"Draining {slug} (up to {config.drain_timeout:.0f}s)...")
        deadline = time.monotonic() + config.drain_timeout + 30
        while time.monotonic() < deadline:
            if slug not in {t.slug for t in store.teams()}:
                break
            time.sleep(0.1)
        else:
            raise click.ClickException(f"the gateway did not finish deleting {slug}; try again")
    if config.runtime == "docker":  # without a gateway, or orphans of an interrupted delete
        from gateway.runtimes.docker.runtime import deprovision_team

        deprovision_team(config, store, slug)
    elif config.runtime == "swarm":
        from gateway.runtimes.swarm.runtime import deprovision_swarm_team

        deprovision_swarm_team(config, store, slug)
    if not gateway_running(config.data_dir):
        archive.delete_team(config, store, slug)
    team_deleted(config, slug)  # its final sync is in the replica, which is kept
    # The volume moved to an archive no slug maps to (gateway/archive.py), with the rows.
    kept = [a for a in archive.archived(config, store) if a.slug == slug and a.deleted_at >= t0]
    if purge:
        for item in kept:
            archive.purge_archive(config, store, item.name)
        click.echo(f"Deleted team {slug} and its data")
    elif kept:
        click.echo(f"Deleted team {slug}; its data is archived in {kept[-1].path}")
    else:
        click.echo(f"Deleted team {slug}")


@teams.command("idle-timeout")
@click.argument("slug")
@click.argument("seconds")
@config_options
@run_cli
def teams_idle_timeout(config: Config, slug: str, seconds: str) -> None:
    """Set how long team SLUG may go without a request before it sleeps: SECONDS (0: never),
    or "default" for the gateway's --idle-timeout. A running gateway applies it at once."""
    from gateway.idle import idle_timeout_value

    slug = validate_slug(slug)
    try:
        value = idle_timeout_value(seconds)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None
    open_store(config.control_db).set_idle_timeout(slug, value)
    shown = f"the gateway's ({config.idle_timeout:g}s)" if value is None else f"{value:g}s"
    click.echo(f"{slug}: idle timeout {shown}{' (never sleeps)' if value == 0 else ''}")


def _refuse_if_busy(config: Config, slug: str) -> None:
    """A restore or deploy of the team under way: refuse now, in one line. (One that starts
    after this check makes the gateway's delete wait for it instead: Fleet.reconcile.)"""
    from gateway.admin.cli import AdminUnavailable, admin_get
    from gateway.fleet import BUSY

    try:
        teams = admin_get(config, "/api/teams")["teams"]
    except AdminUnavailable:
        return
    operation = next((t.get("operation") for t in teams if t["slug"] == slug), None)
    if operation:
        raise click.ClickException(
            f"team {slug} is {BUSY.get(operation, operation)} right now; "
            "delete it once that has finished"
        )


@cli.command()
@config_options
@run_cli
def status(config: Config) -> None:
    """Print every team and the state of its targets (live from the admin API if running)."""
    from gateway.admin.cli import print_live_status
    from gateway.admin.discovery import existing_store

    if print_live_status(config):
        return
    store = existing_store(config)
    running = gateway_running(config.data_dir)
    click.echo(f"gateway: {'running' if running else 'not running'} ({config.base_url}/)")
    for row in store.targets():
        click.echo(f"  {row['instance_id']:<24} {row['address']:<22} {row['state']}")


def _target_states(store: Store) -> dict[str, list[str]]:
    team_of = {i.id: i.team for i in store.instances()}
    out: dict[str, list[str]] = {}
    for row in store.targets():
        team = team_of.get(row["instance_id"])
        if team:
            out.setdefault(team, []).append(row["state"])
    return out


def _wait_ready(config: Config, store: Store, slug: str, timeout: float) -> None:
    """Until the team's instance is healthy; at once with the reason when it cannot start."""
    from gateway.admin.cli import team_errors

    deadline = time.monotonic() + timeout
    asked = 0.0
    while time.monotonic() < deadline:
        if "healthy" in _target_states(store).get(slug, []):
            return
        if time.monotonic() - asked > 1.0:
            asked = time.monotonic()
            start_error, _ = team_errors(config, slug)
            if start_error:
                raise GatewayError(f"team {slug} was created but its instance {start_error}")
        time.sleep(0.1)
    _, last = team_errors(config, slug)
    raise GatewayError(
        f"team {slug} was created but its instance is not healthy after {timeout:.0f}s"
        + (f" (last error: {last})" if last else "")
        + "; see `gateway status`"
    )


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=Path("./data"),
    envvar="GATEWAY_DATA_DIR",
    show_default=True,
    help="The data dir the supervised gateway serves (where its PID is found).",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def supervise(data_dir: Path, command: tuple[str, ...]) -> None:
    """Run COMMAND (gateway serve ...) as a container's PID 1, so that `gateway restart`
    hands over inside the container instead of ending it (gateway/supervisor.py)."""
    from gateway.supervisor import supervise as run

    sys.exit(run(list(command), data_dir.absolute()))


@cli.group()
def native() -> None:
    """The proxy's hot path compiled with mypyc (gateway/native.py)."""


@native.command("build")
@click.option("--force", is_flag=True, help="Rebuild even when the build is up to date.")
def native_build(force: bool) -> None:
    """Compile the hot modules into gateway/_native/ (a no-op when up to date).

    Without a C compiler or mypy the gateway runs as pure Python: the same code, slower.
    With GATEWAY_REQUIRE_NATIVE=1 (set by .ci/run) a failed build is an error.
    """
    import os

    from gateway import native as nat

    try:
        nat.build(force=force, echo=click.echo)
    except nat.BuildFailed as exc:
        click.echo(f"gateway native: {exc}", err=True)
        if os.environ.get("GATEWAY_REQUIRE_NATIVE") == "1":
            sys.exit(1)
        click.echo("gateway native: the gateway runs as pure Python (same code, slower)", err=True)


@native.command("status")
def native_status() -> None:
    """Whether a gateway started now would use the compiled modules, and why."""
    from gateway import native as nat

    _, state = nat.check()
    click.echo(f"hot path: {state}")
    click.echo(f"modules: {', '.join(nat.HOT)}")


# Every command group adds itself the same way (gateway/clikit.py), after `teams` exists.
register_image(cli)  # gateway image build|tag
register_edge(cli)  # gateway edge upgrade
register_auth(cli)  # gateway users ..., gateway teams add-member|remove-member
register_ops(cli)  # gateway certs, gateway routes
register_deploys(cli)  # deploy, rollback, pause, resume, maintenance, restart, teams move
register_backups(cli)  # backup status|now, restore


def main() -> None:
    try:
        cli(prog_name="gateway")
    except KeyboardInterrupt:
        sys.exit(130)
