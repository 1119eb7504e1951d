"""The embedded default: each team's Datasette is a supervised local process on 127.0.0.1.

A supervisor task per instance starts ``datasette serve <team dir>`` on a free port, reports
its exit to the target at once (an "exited" health failure, so traffic is held rather than
refused), and restarts it with exponential backoff. Shutdown sends SIGTERM, then SIGKILL.
With ``local_start = "fork"`` (the default) the process is forked by a zygote that imported
Datasette once (runtimes/zygote.py); "exec" starts a fresh interpreter each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import datasette

from gateway.config import Config
from gateway.errors import RuntimeUnavailable
from gateway.routing.target import State, Target
from gateway.runtimes.base import InstanceLost
from gateway.runtimes.zygote import Zygote
from gateway.store.db import Instance, Store

log = logging.getLogger("gateway.local")

PLUGINS_DIR = Path(__file__).resolve().parent.parent / "instance"
BACKOFF_MAX = 30.0
STABLE_AFTER = 30.0  # seconds up before the backoff resets
STOP_GRACE = 10.0

SecretFn = Callable[[str], str]


# Datasette takes a port number, not a socket, so a port found free here can be taken by another
# program before Datasette binds it. That start is retried at once on another port (bounded),
# not counted as a crash.
PORT_RETRIES = 5
# uvicorn's bind error in the instance's log (its spaces cannot come from a logged request line):
# "[Errno 98] error while attempting to bind on address ('127.0.0.1', 8123): address already
# in use".
PORT_TAKEN = "error while attempting to bind on address ('127.0.0.1', {port}): address already"


class Process(Protocol):
    """What supervision uses of a started Datasette: a subprocess, or one the zygote forked."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...


def free_port(preferred: int | None = None) -> int:
    if preferred:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Supervised:
    def __init__(self, instance: Instance, target: Target) -> None:
        self.instance = instance
        self.target = target
        self.process: Process | None = None
        self.task: asyncio.Task[None] | None = None
        self.stopping = False
        self.restarts = 0


class LocalRuntime:
    detaches = False
    name = "local"

    def __init__(self, config: Config, store: Store, secret_for: SecretFn) -> None:
        self.config = config
        self.store = store
        self.secret_for = secret_for
        self._running: dict[str, _Supervised] = {}
        self.crashes = 0  # instances that exited on their own (gateway_instance_crashes_total)
        self.zygote = Zygote() if config.local_start == "fork" else None

    def version(self) -> str:
        return f"datasette-{datasette.__version__}"

    async def check_version(self, version: str) -> str:
        if version != self.version():
            raise RuntimeUnavailable(
                f"the local runtime runs the installed Datasette ({self.version()}); "
                "--image applies to the docker runtime"
            )
        return version

    async def running_version(self, instance: Instance) -> str:
        return self.version()

    def problem(self) -> str:
        return ""

    def team_dir(self, team: str) -> Path:
        return self.config.teams_dir / team

    def watch(self, on_instance_lost: InstanceLost) -> None:
        return None  # its own supervisor restarts a process that exits (counted in crashes)

    async def start(self, instance: Instance, target: Target) -> None:
        sup = _Supervised(instance, target)
        self._running[instance.id] = sup
        sup.task = asyncio.get_running_loop().create_task(
            self._supervise(sup), name=f"supervise-{instance.id}"
        )

    async def stop(self, instance: Instance) -> None:
        sup = self._running.pop(instance.id, None)
        if sup is None:
            return
        sup.stopping = True
        await self._terminate(sup)
        if sup.task is not None:
            sup.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sup.task

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(s.instance) for s in list(self._running.values())))
        if self.zygote is not None:
            await self.zygote.close()

    def pid(self, instance_id: str) -> int | None:
        sup = self._running.get(instance_id)
        return sup.process.pid if sup and sup.process else None

    # -- supervision ---------------------------------------------------------------------------
    async def _supervise(self, sup: _Supervised) -> None:
        backoff = 0.5
        taken = 0  # consecutive starts that lost their port to another program
        while not sup.stopping:
            port = free_port(None if taken else sup.instance.port)
            if port != sup.instance.port:
                self.store.update_instance(sup.instance.id, port=port)
                sup.instance = _with_port(sup.instance, port)
            sup.target.pool.port = port
            started = time.monotonic()
            log_path = self.team_dir(sup.instance.team) / "datasette.log"
            log_start = log_path.stat().st_size if log_path.exists() else 0
            try:
                sup.process = await self._spawn(sup.instance, port)
            except OSError as exc:
                log.error("cannot start %s: %s", sup.instance.id, exc)
            else:
                self.store.update_instance(sup.instance.id, ref=str(sup.process.pid))
                code = await sup.process.wait()
                if sup.stopping:
                    return
                if taken < PORT_RETRIES and _port_taken(log_path, log_start, port):
                    taken += 1
                    log.warning(
                        "instance %s: port %d was taken before Datasette bound it; "
                        "starting it on another",
                        sup.instance.id,
                        port,
                    )
                    continue
                taken = 0
                self.crashes += 1
                log.warning(
                    "instance %s exited with %s; restarting in %.1fs",
                    sup.instance.id,
                    code,
                    backoff,
                )
            if sup.target.state is not State.STARTING:
                sup.target.report_health(False, "exited")
            sup.restarts += 1
            if time.monotonic() - started > STABLE_AFTER:
                backoff = 0.5
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _spawn(self, instance: Instance, port: int) -> Process:
        team_dir = self.team_dir(instance.team)
        args = [
            "serve",
            str(team_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--plugins-dir",
            str(PLUGINS_DIR),
            "--setting",
            "sql_time_limit_ms",
            str(self.config.extra.get("sql_time_limit_ms", 10000)),
            *self.config.extra.get("datasette_args", []),
        ]
        env = {**os.environ, "DATASETTE_SECRET": self.secret_for(instance.team)}
        log_path = team_dir / "datasette.log"
        if self.zygote is not None:
            return await self.zygote.spawn(args, env, team_dir, log_path)
        with open(log_path, "ab") as logfile:  # noqa: ASYNC230 (opening a log is instant)
            return await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway.instance.run",
                f"--gateway-parent={os.getpid()}",
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logfile,
                stderr=logfile,
                env=env,
                cwd=str(team_dir),
            )

    async def _terminate(self, sup: _Supervised) -> None:
        proc = sup.process
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def _with_port(instance: Instance, port: int) -> Instance:
    return replace(instance, port=port)


def _port_taken(log_path: Path, start: int, port: int) -> bool:
    """Did the run whose output begins at ``start`` in ``log_path`` fail to bind ``port``?"""
    try:
        with log_path.open("rb") as f:
            f.seek(start)
            return PORT_TAKEN.format(port=port).encode() in f.read(64 * 1024)
    except OSError:
        return False
