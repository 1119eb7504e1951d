"""TLS at the edge: ``gateway edge ...`` (the Traefik in front of the gateway) and ``gateway
certs dev`` (certificates for the gateway's own TLS listener, without Traefik)."""

from __future__ import annotations

from pathlib import Path

import click

from gateway.edge import upgrade as handover
from gateway.errors import GatewayError


@click.group("edge")
def edge_group() -> None:
    """The Traefik in front of the gateway (TLS, ACME)."""


def _old_pid(old_pid: int | None, pid_file: Path | None) -> int:
    if old_pid is not None:
        return old_pid
    if pid_file is None:
        raise click.UsageError("give the running Traefik's --old-pid, or a --pid-file")
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError) as exc:
        raise click.UsageError(f"cannot read a pid from {pid_file}: {exc}") from exc


@edge_group.command("upgrade")
@click.option(
    "--traefik-binary",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The new Traefik executable.",
)
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=Path("/etc/traefik/traefik.yml"),
    show_default=True,
    help="The static configuration the running Traefik uses (reusePort on every entrypoint).",
)
@click.option("--old-pid", type=int, help="The running Traefik's process id.")
@click.option(
    "--pid-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the running Traefik's pid from this file, and write the new one's there.",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/lib/gateway/edge"),
    show_default=True,
    help="Where the new process's derived config and log go.",
)
@click.option(
    "--ready-timeout",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds the new Traefik has to build its routers before the upgrade is abandoned.",
)
def upgrade_command(
    traefik_binary: Path,
    config: Path,
    old_pid: int | None,
    pid_file: Path | None,
    work_dir: Path,
    ready_timeout: float,
) -> None:
    """Replace the running Traefik by the new binary on the same ports, with no failed request.

    New connections stay on the old process until the new one has built its routers, then
    all go to the new one; the old one finishes its in-flight requests and exits
    (docs/production.md, "Upgrading Traefik without downtime"). Needs root (or ptrace rights
    over the running Traefik) and Linux 5.6+.
    """
    plan = handover.Plan(
        binary=traefik_binary.resolve(),
        config=config.resolve(),
        old_pid=_old_pid(old_pid, pid_file),
        work_dir=work_dir,
        ready_timeout=ready_timeout,
    )
    try:
        result = handover.upgrade(plan, progress=lambda line: click.echo(f"edge upgrade: {line}"))
    except GatewayError as exc:
        raise click.ClickException(str(exc)) from exc
    if pid_file is not None:
        pid_file.write_text(f"{result.new_pid}\n")
    click.echo(f"new Traefik: pid {result.new_pid}, API {result.api_url}, log {result.log}")
    click.echo(f"old Traefik (pid {plan.old_pid}) finishes its in-flight requests and exits")


@click.group()
def certs() -> None:
    """TLS certificates for running without Traefik (the single-host appliance)."""


@certs.command("dev")
@click.option("--domain", required=True, help="Apex domain: the cert covers it and *.DOMAIN.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("certs"),
    show_default=True,
    help="Directory for ca.pem, cert.pem and key.pem.",
)
def certs_dev(domain: str, out_dir: Path) -> None:
    """Create a local CA and a wildcard certificate for DOMAIN and *.DOMAIN."""
    from gateway.tls import make_dev_certs

    try:
        paths = make_dev_certs(domain, out_dir)
    except GatewayError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"CA:          {paths.ca}  (trust this one in your browser or client)")
    click.echo(f"certificate: {paths.cert}  (*.{domain} and {domain})")
    click.echo(f"key:         {paths.key}")
    click.echo(
        f"Serve HTTPS: gateway serve --domain {domain} --port 8443 "
        f"--tls-cert {paths.cert} --tls-key {paths.key} --redirect-port 8080"
    )


def register(cli: click.Group) -> None:
    cli.add_command(edge_group)
    cli.add_command(certs)
