"""The ``gateway`` command: help everywhere, teams create/list/delete, clear errors."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from gateway.admin.discovery import publish
from gateway.cli import cli
from gateway.config import Config
from gateway.lock import hold_running_lock
from gateway.routing.target import State
from gateway.store import open_store
from tests.conftest import StartGateway
from tests.servers import UvicornUpstream, gateway_for, wait_for

GATEWAY = str(Path(sys.executable).with_name("gateway"))


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            out += all_commands(command, (*prefix, name))
        else:
            out.append((*prefix, name))
    return out


@pytest.mark.parametrize("path", all_commands(cli), ids=lambda p: " ".join(p) or "gateway")
def test_help_on_every_command(path: tuple[str, ...]) -> None:
    r = CliRunner().invoke(cli, [*path, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.output


def test_console_script_and_module_run() -> None:
    import subprocess

    for args in ([GATEWAY, "--help"], [sys.executable, "-m", "gateway", "--help"]):
        done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert "teams" in done.stdout


def run(data_dir: Path, *args: str, input: str | None = None) -> tuple[int, str]:
    r = CliRunner().invoke(cli, [*args, "--data-dir", str(data_dir)], input=input)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.output


def test_teams_create_list_and_errors(tmp_path: Path) -> None:
    data = tmp_path / "data"
    code, out = run(data, "teams", "list")
    assert code == 1 and "no gateway data in" in out and not data.exists()  # nothing created
    code, out = run(data, "teams", "create", "alpha")
    assert code == 0, out
    assert "http://alpha.localhost:8000/" in out
    assert (data / "teams" / "alpha" / "data.db").exists()
    code, out = run(data, "teams", "create", "alpha")
    assert code == 1 and "already exists" in out
    for bad, message in [
        ("Bad_Slug", "not a valid team slug"),
        ("x-", "not a valid team slug"),
        ("www", "reserved"),
        ("a" * 64, "at most 63"),
    ]:
        code, out = run(data, "teams", "create", bad)
        assert code == 1, out
        assert message in out and "Traceback" not in out
        assert not (data / "teams" / bad).exists()  # nothing half-written
    run(data, "teams", "create", "beta")
    code, out = run(data, "teams", "list")
    assert code == 0
    lines = out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["alpha", "beta"]
    assert "http://beta.localhost:8000/" in lines[1]


def test_teams_delete_asks_for_confirmation(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run(data, "teams", "create", "alpha")
    code, out = run(data, "teams", "delete", "alpha", input="n\n")
    assert code == 1 and "Aborted" in out
    assert [t.slug for t in _teams(data)] == ["alpha"]  # declining keeps the team
    code, out = run(data, "teams", "delete", "alpha", input="y\n")
    assert code == 0, out
    assert _teams(data) == []
    # Data kept without --purge, archived where no slug maps (gateway/archive.py).
    assert not (data / "teams" / "alpha").exists()
    (archived,) = (data / "archive").iterdir()
    assert archived.name.startswith("alpha.") and (archived / "data.db").exists()
    assert str(archived) in out
    code, out = run(data, "teams", "delete", "alpha", "--yes")
    assert code == 1 and "no team" in out
    run(data, "teams", "create", "gamma")
    code, out = run(data, "teams", "delete", "gamma", "--yes", "--purge")
    assert code == 0 and not (data / "teams" / "gamma").exists()
    assert [p.name for p in (data / "archive").iterdir()] == [archived.name]


def _teams(data: Path) -> list[object]:
    store = open_store(data / "control.db")
    try:
        return list(store.teams())
    finally:
        store.close()


async def cli_process(config: Config, *args: str, input: bytes = b"") -> tuple[int, str]:
    """The real console script in its own process, as a user would run it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    proc = await asyncio.create_subprocess_exec(
        GATEWAY,
        *args,
        "--data-dir",
        str(config.data_dir),
        "--drain-timeout",
        str(config.drain_timeout),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await asyncio.wait_for(proc.communicate(input), 90)
    return proc.returncode or 0, out.decode()


async def test_create_and_delete_with_a_running_gateway(
    config: Config, start_gateway: StartGateway
) -> None:
    up = await UvicornUpstream().start()
    try:
        gw = await gateway_for(start_gateway, config, {"alpha": [up.address]})
        gw.app.runtime.addresses["beta"] = [up.address]  # type: ignore[attr-defined]
        with hold_running_lock(config.data_dir):  # what `gateway serve` holds
            # `gateway serve` publishes its addresses; the CLI runs without the gateway's
            # --port and must still print where the team really is.
            publish(gw.config, "127.0.0.1", 9, None)
            code, out = await cli_process(config, "teams", "create", "beta")
            assert code == 0, out
            assert f"Ready: http://beta.localhost:{gw.port}/" in out
            assert gw.app.fleet.service("beta") is not None  # picked up from the store

            target = gw.app.fleet.service("alpha").targets()[0]  # type: ignore[union-attr]
            async with gw.client() as client:
                held = asyncio.ensure_future(client.get(gw.url("alpha", "/gate")))
                await wait_for(lambda: up.state.gated == 1)
                delete = asyncio.ensure_future(
                    cli_process(config, "teams", "delete", "alpha", input=b"y\n")
                )
                await wait_for(lambda: target.state is State.DRAINING, timeout=60)
                await asyncio.sleep(0.2)
                assert not delete.done()  # the delete waits for the in-flight request
                up.state.gate.set()
                code, out = await delete
                assert code == 0, out
                assert "Draining alpha" in out
                response = await held
        assert response.status_code == 200  # the in-flight request finished before the stop
        assert gw.app.fleet.service("alpha") is None
        assert [t.slug for t in gw.app.store.teams()] == ["beta"]
        assert len(gw.app.fleet.drains) == 1
    finally:
        await up.close()
