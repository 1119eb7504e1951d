"""What every ``gateway`` command group is built with (``gateway/cli.py`` and each area's
``cli.py``): one ``--flag`` per setting, the gateway's errors as clean CLI errors, and one
way to add a group's commands: ``register(cli)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from gateway.config import SETTINGS, from_env
from gateway.errors import GatewayError


class BadSetting(click.ClickException):
    """A setting's error: one line naming the flag and the fix (no usage block), exit 2."""

    exit_code = 2


def config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add one option per setting and hand the command a ``config`` built from them."""

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        overrides = {s.name: kwargs.pop(s.name) for s in SETTINGS}
        try:
            config = from_env({}, **overrides)
        except GatewayError as exc:
            raise BadSetting(str(exc)) from exc
        return func(config=config, **kwargs)

    for setting in reversed(SETTINGS):
        flag = "--" + setting.name.replace("_", "-")
        kind: Any = click.Path(path_type=Path) if setting.type is Path else setting.type
        if setting.name == "runtime":
            kind = click.Choice(["local", "docker", "swarm"])
        wrapper = click.option(
            flag,
            setting.name,
            type=kind,
            default=setting.default,
            envvar=f"GATEWAY_{setting.name.upper()}",
            show_default=True,
            show_envvar=True,
            help=setting.help,
        )(wrapper)
    return wrapper


def run_cli(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the gateway's own errors into clean CLI errors (exit 1), never tracebacks."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GatewayError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


def subgroup(cli: click.Group, name: str) -> click.Group:
    """An existing command group of ``cli`` (``teams``), for an area that adds to it."""
    group = cli.commands[name]
    assert isinstance(group, click.Group), name
    return group
