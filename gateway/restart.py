"""The gateway's own zero-downtime restart: hand the listening sockets to a new process.

    gateway restart   (or: kill -HUP <pid>)

1. The running gateway starts a copy of itself (same command line, same environment) that
   INHERITS its listening sockets: the very same kernel sockets, so connections waiting in the
   accept queue are never reset (closing one SO_REUSEPORT listener would reset its queue).
2. The new process starts its own instances (local runtime) or adopts the containers (docker),
   and tells the old one through a pipe once every team is healthy.
3. Only then does the old process stop accepting, finish its in-flight requests (up to the
   drain timeout), stop its instances and exit. If the new one fails, the old one keeps serving.

systemd socket activation works too: with ``LISTEN_FDS``/``LISTEN_PID`` (and optionally
``LISTEN_FDNAMES=public:admin:redirect``) the gateway uses the sockets systemd passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable

from gateway.lock import LOCK_FD_ENV

log = logging.getLogger("gateway.restart")

INHERIT_ENV = "GATEWAY_INHERIT_FDS"  # "public=7,admin=9": sockets handed over by a parent
READY_ENV = "GATEWAY_READY_FD"  # a pipe the new process writes one byte to once it is ready
READY_TIMEOUT = 120.0


def inherited() -> dict[str, socket.socket]:
    """Sockets passed by a restarting gateway or by systemd, by name."""
    found: dict[str, socket.socket] = {}
    spec = os.environ.pop(INHERIT_ENV, "")
    for item in filter(None, spec.split(",")):
        name, _, fd = item.partition("=")
        found[name] = socket.socket(fileno=int(fd))
    if os.environ.get("LISTEN_PID") == str(os.getpid()):
        count = int(os.environ.get("LISTEN_FDS", "0"))
        names = os.environ.get("LISTEN_FDNAMES", "").split(":")
        for i in range(count):
            name = names[i] if i < len(names) and names[i] else ("public" if i == 0 else f"fd{i}")
            found.setdefault(name, socket.socket(fileno=3 + i))
        for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(var, None)
    for sock in found.values():
        sock.set_inheritable(True)
    return found


class Sockets:
    """Where listeners get their sockets: inherited when there is one, else freshly bound."""

    def __init__(self) -> None:
        self.inherited = inherited()
        self.named: dict[str, socket.socket] = {}

    def get(self, name: str, bind: Callable[[], socket.socket]) -> socket.socket:
        sock = self.inherited.pop(name, None) or bind()
        sock.set_inheritable(True)
        self.named[name] = sock
        return sock


def announce_ready() -> None:
    """Tell the parent gateway (if any) that this one serves every team now."""
    fd = os.environ.pop(READY_ENV, "")
    if fd:
        with contextlib.suppress(OSError):
            os.write(int(fd), b"R")
            os.close(int(fd))


# Flags whose values are secrets: the successor gets them through its environment instead,
# so they never show in its command line (ps, /proc/N/cmdline, the restart log line).
SECRET_FLAGS = {"--admin-token": "GATEWAY_ADMIN_TOKEN"}


def successor_command(argv: list[str], env: dict[str, str]) -> list[str]:
    """``argv`` without secret flags; their values move into ``env``."""
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        name, eq, value = arg.partition("=")
        if name in SECRET_FLAGS:
            env[SECRET_FLAGS[name]] = value if eq else next(args, "")
            continue
        out.append(arg)
    return out


async def hand_over(
    sockets: dict[str, socket.socket], stop: Callable[[], None], lock_fd: int | None = None
) -> bool:
    """Start a successor with our sockets (and the data dir's lock, ``gateway/lock.py``);
    call ``stop`` once it is ready. False if it failed."""
    read_fd, write_fd = os.pipe()
    env = dict(os.environ)
    env[INHERIT_ENV] = ",".join(f"{name}={s.fileno()}" for name, s in sockets.items())
    env[READY_ENV] = str(write_fd)
    fds = [write_fd, *(s.fileno() for s in sockets.values())]
    if lock_fd is not None:
        env[LOCK_FD_ENV] = str(lock_fd)
        fds.append(lock_fd)
    argv = successor_command([sys.executable, *sys.orig_argv[1:]], env)
    log.info("restart: starting a successor: %s", " ".join(argv))
    # Popen only forks and execs: it returns at once, so the event loop is not held up.
    proc = subprocess.Popen(argv, env=env, pass_fds=fds)  # noqa: ASYNC220
    os.close(write_fd)
    log.info("restart: successor pid %d started; serving until it is ready", proc.pid)
    loop = asyncio.get_running_loop()
    try:
        ready = await asyncio.wait_for(
            loop.run_in_executor(None, os.read, read_fd, 1), READY_TIMEOUT
        )
    except TimeoutError:
        ready = b""
    finally:
        os.close(read_fd)
    if ready != b"R":
        log.error("restart: the successor (pid %d) did not become ready; still serving", proc.pid)
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        return False
    log.info("restart: successor pid %d is ready; draining and exiting", proc.pid)
    stop()
    return True
