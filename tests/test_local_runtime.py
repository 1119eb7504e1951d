"""The embedded default with REAL Datasette processes behind a real ``gateway serve`` process:
supervision after ``kill -9``, clean shutdown, and teams restored by the next gateway."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from gateway.cli import cli
from gateway.config import Config
from gateway.store import open_store
from tests.conftest import LoopbackTransport
from tests.edge import run_edge
from tests.listen_fds import activated, listening_socket, port_of
from tests.servers import grant_token

GATEWAY = str(Path(sys.executable).with_name("gateway"))
pytestmark = pytest.mark.slow


class Served:
    def __init__(self, data_dir: Path, sock: socket.socket, token: str) -> None:
        self.data_dir = data_dir
        # Held by the test across gateways and passed to each as LISTEN_FDS, as systemd holds
        # a socket-activated service's socket across its restarts: no free-port race.
        self.sock = sock
        self.port = port_of(sock)
        self.token = token
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        log = open(self.data_dir / f"gateway-{self.port}.log", "ab")  # noqa: ASYNC230, SIM115
        serve = [GATEWAY, "serve", "--data-dir", str(self.data_dir), "--port", str(self.port)]
        serve += ["--health-interval", "0.2", "--hold-timeout", "60", "--watch-interval", "0.1"]
        argv, fds = activated(serve, public=self.sock)
        self.proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=log,
            stderr=log,
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
            pass_fds=fds,
        )
        log.close()
        await self.wait_up()

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=LoopbackTransport(),
            timeout=90,
            headers={"authorization": f"Bearer {self.token}"},
        )

    def url(self, path: str) -> str:
        return f"http://alpha.localhost:{self.port}{path}"

    def admin_headers(self) -> dict[str, str]:
        # Written by the gateway at start; status.json is for operators only.
        path = self.data_dir / "admin.token"
        token = path.read_text().strip() if path.exists() else ""
        return {"authorization": f"Bearer {token}"}

    async def wait_up(self, timeout: float = 60) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=5) as client:
            while loop.time() < deadline:
                assert self.proc is not None and self.proc.returncode is None, self.log()[-3000:]
                with contextlib.suppress(httpx.TransportError):
                    r = await client.get(
                        f"http://localhost:{self.port}/-/gateway/status.json",
                        headers=self.admin_headers(),
                    )
                    teams = {t["slug"]: t["state"] for t in r.json()["teams"]}
                    if teams.get("alpha") == "up":
                        return
                await asyncio.sleep(0.1)
        raise AssertionError("the gateway did not serve alpha in time\n" + self.log()[-3000:])

    async def wait_target_state(self, *states: str) -> None:
        """Poll status.json until alpha's target is in one of ``states``."""
        async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=5) as client:
            for _ in range(300):
                r = await client.get(
                    f"http://localhost:{self.port}/-/gateway/status.json",
                    headers=self.admin_headers(),
                )
                (team,) = [t for t in r.json()["teams"] if t["slug"] == "alpha"]
                if {t["state"] for t in team["targets"]} & set(states):
                    return
                await asyncio.sleep(0.01)
        raise AssertionError(f"alpha's target never reached {states}")

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 60)

    def log(self) -> str:
        path = self.data_dir / f"gateway-{self.port}.log"
        return path.read_text() if path.exists() else ""


def datasette_pid(data_dir: Path) -> int:
    store = open_store(data_dir / "control.db")
    try:
        (inst,) = [i for i in store.instances("alpha") if i.role == "active"]
        return int(inst.ref)
    finally:
        store.close()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    data_dir = tmp_path / "data"
    r = CliRunner().invoke(cli, ["teams", "create", "alpha", "--data-dir", str(data_dir)])
    assert r.exit_code == 0, r.output
    db = sqlite3.connect(data_dir / "teams" / "alpha" / "data.db")
    db.execute("create table marker (note text)")
    db.execute("insert into marker values ('kept')")
    db.commit()
    db.close()
    store = open_store(data_dir / "control.db")
    token = grant_token(store, "alpha")
    store.close()
    gw = Served(data_dir, listening_socket(), token)
    yield gw
    if gw.proc is not None and gw.proc.returncode is None:
        gw.proc.kill()
        await gw.proc.wait()
    gw.sock.close()


async def test_kill_9_restart_shutdown_and_restore(served: Served) -> None:
    await served.start()
    async with served.client() as client:
        r = await client.get(served.url("/data/marker.json?_shape=array"))
        assert r.status_code == 200, r.text
        assert r.json() == [{"rowid": 1, "note": "kept"}]

        # kill -9 the team's Datasette: the gateway notices, holds requests (never 502s them)
        # and the supervisor restarts it. (A request racing the kill itself may meet a fresh
        # connection reset by the dying process: by the rules that is a 502, never replayed.)
        first = datasette_pid(served.data_dir)
        os.kill(first, signal.SIGKILL)
        await served.wait_target_state("unhealthy", "starting")
        statuses: list[int] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while loop.time() < deadline:
            r = await client.get(served.url("/data/marker.json?_shape=array"))
            statuses.append(r.status_code)
            if datasette_pid(served.data_dir) != first and r.status_code == 200:
                break
        assert set(statuses) == {200}, statuses
        second = datasette_pid(served.data_dir)
        assert second != first and alive(second)
        assert not alive(first)

        # A second death soon after: the supervisor backs off longer before restarting.
        await served.wait_target_state("healthy")
        os.kill(second, signal.SIGKILL)
        await served.wait_target_state("unhealthy", "starting")
        r = await client.get(served.url("/data/marker.json?_shape=array"))  # held, then served
        assert r.status_code == 200
        second = datasette_pid(served.data_dir)
        assert alive(second)
        delays = re.findall(r"exited with -9; restarting in ([0-9.]+)s", served.log())
        assert [float(d) for d in delays] == [0.5, 1.0]

    # A clean shutdown stops the team's Datasette too.
    assert await served.stop() == 0
    await _wait(lambda: not alive(second))

    # A new gateway on the same data directory restores the team, data intact.
    await served.start()
    third = datasette_pid(served.data_dir)
    assert third != second and alive(third)
    async with served.client() as client:
        r = await client.get(served.url("/data/marker.json?_shape=array"))
    assert r.status_code == 200
    assert r.json() == [{"rowid": 1, "note": "kept"}]
    # Even kill -9 of the gateway leaves no orphan Datasette holding the team's port.
    assert served.proc is not None
    served.proc.kill()
    await served.proc.wait()
    await _wait(lambda: not alive(third))


async def _wait(predicate: object, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_a_port_taken_before_datasette_binds_it_is_retried_not_a_crash(
    config: Config, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Datasette takes a port number, so another program can take the port between the
    runtime's probe and Datasette's bind. That moment cannot be timed from outside: the probe's
    first answer is replaced by a port this test really holds (a listening socket), so the
    real Datasette really fails to bind it. The runtime starts it again on another port at
    once: no crash counted, no backoff."""
    from gateway.runtimes import local

    holder = listening_socket()
    held = port_of(holder)
    real = local.free_port
    answers = iter([held])
    monkeypatch.setattr(local, "free_port", lambda preferred=None: next(answers, None) or real())
    try:
        async with run_edge(config, teams=("alpha",)) as gw:
            await gw.wait_healthy("alpha")
            [instance] = gw.app.store.instances("alpha")
            assert instance.port not in (0, held)
            assert gw.app.runtime.crashes == 0
            async with gw.client() as client:
                r = await client.get(gw.url("alpha", "/-/versions.json"))
                assert r.status_code == 200
    finally:
        holder.close()
    assert f"port {held} was taken before Datasette bound it" in caplog.text
