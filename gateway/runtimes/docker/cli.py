"""``gateway image ...``: build and name the tenant Datasette image (docker runtime)."""

from __future__ import annotations

import time

import click

from gateway.errors import GatewayError
from gateway.runtimes.docker import image


@click.group("image")
def image_group() -> None:
    """Build the Datasette image that each team's container runs (docker runtime)."""


@image_group.command("build")
@click.option("--force", is_flag=True, help="Rebuild even if the tag already exists.")
@click.option(
    "--dockerfile",
    is_flag=True,
    help="Build from the ordinary Dockerfile (FROM python:3.11-slim): needs an engine "
    "that can pull. Without it the image is made from debootstrap, no registry needed.",
)
def build(force: bool, dockerfile: bool) -> None:
    """Build the image unless its content-derived tag already exists."""
    started = time.monotonic()
    make = image.build_dockerfile if dockerfile else image.build
    try:
        tag, built = make(force=force, progress=click.echo)
    except GatewayError as exc:
        raise click.ClickException(str(exc)) from exc
    if built:
        click.echo(f"Done in {time.monotonic() - started:.0f}s: {tag}")


@image_group.command("tag")
def tag() -> None:
    """Print the tag the current sources build (no Docker needed)."""
    click.echo(image.image_tag())


def register(cli: click.Group) -> None:
    cli.add_command(image_group)
