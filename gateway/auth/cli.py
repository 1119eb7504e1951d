"""``gateway users create|list|disable|passwd|rotate-secret|grant-operator|revoke-operator`` and
``gateway teams add-member|remove-member``.

These write the control store directly; a running gateway sees the change on its next
request (SQLite ``data_version``), so ``disable`` and ``passwd`` end sessions at once.
"""

from __future__ import annotations

from typing import Any

import click

from gateway.auth import accounts, keys
from gateway.auth.passwords import Passwords, policy_error
from gateway.clikit import config_options, run_cli, subgroup
from gateway.config import Config
from gateway.slugs import validate_slug
from gateway.store import Store, open_store


def _user(store: Store, email: str) -> accounts.User:
    user = accounts.user_by_email(store, email.strip())
    if user is None:
        raise accounts.AccountError(f"there is no user {email.strip()!r}")
    return user


def _hash(password: str, email: str) -> str:
    why = policy_error(password, email)
    if why:
        raise accounts.AccountError(why)
    return Passwords().hash_sync(password)


def password_option(func: Any) -> Any:
    return click.option(
        "--password",
        prompt=True,
        hide_input=True,
        confirmation_prompt=True,
        envvar="GATEWAY_NEW_PASSWORD",
        help="The password (prompted when absent; or GATEWAY_NEW_PASSWORD).",
    )(func)


@click.group()
def users() -> None:
    """Create, list, disable users and set their passwords."""


@users.command("create")
@click.argument("email")
@password_option
@click.option("--team", help="Also add the user to this existing team.")
@click.option("--role", type=click.Choice(accounts.ROLES), default="member", show_default=True)
@click.option("--operator", is_flag=True, help="Grant operator rights (status pages).")
@config_options
@run_cli
def users_create(
    config: Config, email: str, password: str, team: str | None, role: str, operator: bool
) -> None:
    """Create a user with EMAIL (its address counts as verified: you vouch for it)."""
    store = open_store(config.control_db)
    email = accounts.normalize_email(email)
    slug = validate_slug(team) if team else None
    if slug:
        store.team(slug)  # TeamNotFound -> clean error, before creating anything
    user = accounts.create_user(
        store, email, _hash(password, email), verified=True, operator=operator
    )
    if slug:  # a new account owns no team yet: always within max_teams_per_user
        accounts.add_member(store, slug, user.id, role, max_owned=config.max_teams_per_user)
    click.echo(
        f"Created user {email} ({user.id})"
        + (f", {role} of {slug}" if slug else "")
        + (", operator" if operator else "")
    )


@users.command("list")
@config_options
@run_cli
def users_list(config: Config) -> None:
    """List users, their teams and whether they are disabled."""
    store = open_store(config.control_db)
    rows = accounts.users(store)
    if not rows:
        click.echo("No users yet. Create one: gateway users create EMAIL")
    for user in rows:
        teams_ = accounts.memberships(store, user.id)
        where = ", ".join(f"{t} ({r})" for t, r in sorted(teams_.items())) or "no team"
        flag = ("  OPERATOR" if user.operator else "") + ("  DISABLED" if user.disabled else "")
        click.echo(f"{user.email}  {user.id}  {where}{flag}")


@users.command("disable")
@click.argument("email")
@click.option("--enable", is_flag=True, help="Enable the account again instead.")
@config_options
@run_cli
def users_disable(config: Config, email: str, enable: bool) -> None:
    """Disable EMAIL's account and end all its sessions now."""
    store = open_store(config.control_db)
    user = _user(store, email)
    accounts.set_disabled(store, user.id, not enable)
    click.echo(f"{'Enabled' if enable else 'Disabled'} {user.email}")


@users.command("grant-operator")
@click.argument("email")
@config_options
@run_cli
def users_grant_operator(config: Config, email: str) -> None:
    """Give EMAIL operator rights (the status pages name every team)."""
    _set_operator(config, email, True)


@users.command("revoke-operator")
@click.argument("email")
@config_options
@run_cli
def users_revoke_operator(config: Config, email: str) -> None:
    """Take operator rights from EMAIL (an address in `operators` keeps them if verified)."""
    _set_operator(config, email, False)


def _set_operator(config: Config, email: str, operator: bool) -> None:
    store = open_store(config.control_db)
    user = _user(store, email)
    accounts.set_operator(store, user.id, operator)
    click.echo(f"{user.email} is {'now' if operator else 'no longer'} an operator")


@users.command("passwd")
@click.argument("email")
@password_option
@config_options
@run_cli
def users_passwd(config: Config, email: str, password: str) -> None:
    """Set EMAIL's password; ends all of that user's sessions."""
    store = open_store(config.control_db)
    user = _user(store, email)
    accounts.set_password(store, user.id, _hash(password, user.email))
    click.echo(f"Password changed for {user.email}; their sessions were ended.")


@users.command("rotate-secret")
@click.option("--keep", default=1, show_default=True, help="Old secrets kept as fallbacks.")
@config_options
@run_cli
def users_rotate(config: Config, keep: int) -> None:
    """Sign with a new secret; keep the last KEEP ones valid (0 signs everyone out)."""
    keys.rotate(open_store(config.control_db), keep=max(keep, 0))
    click.echo(f"New signing secret in use; {max(keep, 0)} old one(s) still accepted.")


@click.command("add-member")
@click.argument("slug")
@click.argument("email")
@click.option("--role", type=click.Choice(accounts.ROLES), default="member", show_default=True)
@click.option(
    "--force", is_flag=True, help="Make them owner even beyond the max_teams_per_user limit."
)
@config_options
@run_cli
def teams_add_member(config: Config, slug: str, email: str, role: str, force: bool) -> None:
    """Add user EMAIL to team SLUG (or change their role)."""
    store = open_store(config.control_db)
    slug = validate_slug(slug)
    user = _user(store, email)
    limit = 0 if force else config.max_teams_per_user
    try:
        accounts.add_member(store, slug, user.id, role, max_owned=limit)
    except accounts.TooManyTeams as exc:
        raise click.ClickException(
            f"{user.email} already owns {exc.owned} team{'s' if exc.owned != 1 else ''} "
            f"(max_teams_per_user is "
            f"{exc.limit}); add --force to make them owner anyway, or raise "
            "--max-teams-per-user"
        ) from exc
    click.echo(f"{user.email} is now {role} of {slug}")


@click.command("remove-member")
@click.argument("slug")
@click.argument("email")
@config_options
@run_cli
def teams_remove_member(config: Config, slug: str, email: str) -> None:
    """Remove user EMAIL from team SLUG."""
    store = open_store(config.control_db)
    slug = validate_slug(slug)
    user = _user(store, email)
    accounts.remove_member(store, slug, user.id)
    click.echo(f"Removed {user.email} from {slug}")


def register(cli: click.Group) -> None:
    """Attach the commands (called once from ``gateway/cli.py``)."""
    cli.add_command(users)
    teams = subgroup(cli, "teams")
    teams.add_command(teams_add_member)
    teams.add_command(teams_remove_member)
