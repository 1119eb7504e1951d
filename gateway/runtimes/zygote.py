"""The gateway's side of the fork server (gateway/instance/zygote.py): start it once, ask it
for a Datasette, follow each child's exit.

A forked Datasette skips the interpreter's start and Datasette's import, most of a local
start or wake (figures in docs/sleeping.md). The children are the zygote's, not ours, so a
``Forked`` handle offers what the local runtime uses of a subprocess (pid, wait, signals)
through the zygote, which alone may signal a pid it has not reaped: no pid reuse race. If the
zygote dies its children die with it (PR_SET_PDEATHSIG), every handle reports an exit, and
the next spawn starts a fresh zygote.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("gateway.zygote")

READY_TIMEOUT = 120.0  # seconds for the zygote's own start (an import on a loaded machine)
LOST = -1  # the exit code reported when the zygote itself went away


class Forked:
    """A Datasette the zygote forked: the parts of ``asyncio.subprocess.Process`` in use."""

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._zygote = zygote
        self._exited = asyncio.Event()

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None:
            raise ProcessLookupError(self.pid)
        self._zygote.signal(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def exited(self, code: int) -> None:
        self.returncode = code
        self._exited.set()


class Zygote:
    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self._replies: collections.deque[asyncio.Future[Forked]] = collections.deque()
        self._children: dict[int, Forked] = {}

    async def spawn(
        self, args: list[str], env: dict[str, str], cwd: Path, log_path: Path
    ) -> Forked:
        """Fork a Datasette with ``args`` (as after ``datasette``), its environment, working
        directory and log file; OSError when the zygote cannot."""
        proc = await self._running()
        reply: asyncio.Future[Forked] = asyncio.get_running_loop().create_future()
        request = {"spawn": {"args": args, "env": env, "cwd": str(cwd), "log": str(log_path)}}
        self._write(proc, request)  # then queued: replies come in the order of the requests
        self._replies.append(reply)
        return await reply

    @property
    def pid(self) -> int | None:
        """The zygote's process id while it runs (its memory counts with the instances')."""
        return self._proc.pid if self._proc is not None else None

    def signal(self, pid: int, sig: int) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdin.is_closing():
            raise ProcessLookupError(pid)  # the zygote is gone: its children are going too
        self._write(proc, {"signal": pid, "sig": int(sig)})

    async def close(self) -> None:
        """Stop the zygote (it stops any child left) and wait for it, bounded."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._reader is not None:
            await self._reader

    # -- the pipe ----------------------------------------------------------------------------
    async def _running(self) -> asyncio.subprocess.Process:
        async with self._starting:
            if self._proc is None or self._proc.returncode is not None:
                self._proc = await self._start()
            return self._proc

    async def _start(self) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.instance.zygote",
            str(os.getpid()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        try:
            ready = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT)
            if not ready.startswith(b'{"ready"'):
                raise OSError(f"the zygote did not start: {ready!r}")
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        log.info("zygote %d ready (Datasette imported once)", proc.pid)
        self._reader = asyncio.get_running_loop().create_task(self._read(proc), name="zygote")
        return proc

    def _write(self, proc: asyncio.subprocess.Process, message: dict[str, Any]) -> None:
        if proc.stdin is None or proc.stdin.is_closing():
            raise OSError("the zygote is not running")
        proc.stdin.write(json.dumps(message).encode() + b"\n")  # small: the pipe takes it

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            while line := await proc.stdout.readline():
                message = json.loads(line)
                if "pid" in message:
                    child = Forked(self, int(message["pid"]))
                    self._children[child.pid] = child
                    reply = self._replies.popleft()
                    if not reply.done():
                        reply.set_result(child)
                elif "exit" in message:
                    found = self._children.pop(int(message["exit"]), None)
                    if found is not None:
                        found.exited(int(message["code"]))
        finally:
            # The zygote is gone (closed, or it died): so are its children (PR_SET_PDEATHSIG).
            await proc.wait()
            if proc.returncode not in (0, None) and self._proc is proc:
                log.error(
                    "zygote %d exited with %s; the next start makes a new one",
                    proc.pid,
                    proc.returncode,
                )
            for reply in self._replies:
                if not reply.done():
                    reply.set_exception(OSError("the zygote exited"))
            self._replies.clear()
            for child in self._children.values():
                child.exited(LOST)
            self._children.clear()
