"""The local runtime's fork server: a Python that has imported Datasette once and forks each
team's Datasette from that state, so a start or a wake skips the interpreter's start and the
import (gateway/runtimes/zygote.py is the gateway's side; docs/sleeping.md).

One JSON object a line on stdin, answers on stdout, in order:

    {"spawn": {"args": [...], "env": {...}, "cwd": "...", "log": "..."}}  -> {"pid": N}
    {"signal": N, "sig": 15}      signal child N, only while it is ours (not yet reaped)
                                  -> (nothing; its exit is reported)
    (each child's end)            -> {"exit": N, "code": C}

Forking is safe here because this process never starts a thread or an event loop and holds
no open database: a child starts from imported modules only. ``random`` reseeds itself in a
forked child; secrets come from ``os.urandom``. The zygote dies with the gateway
(PR_SET_PDEATHSIG) and each child with the zygote, so no instance outlives the gateway. When
stdin closes it stops its children (SIGTERM, then SIGKILL) and exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import sys
import time
import traceback
from typing import Any

PR_SET_PDEATHSIG = 1
STOP_GRACE = 10.0


def die_with_parent(parent: int | None) -> None:
    """SIGTERM when ``parent`` exits; exit now if it already has (between its fork and this
    call, where no death signal could be armed yet)."""
    # Not Linux: no prctl; the gateway still stops its instances on a clean shutdown.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def send(message: dict[str, Any]) -> None:
    os.write(1, json.dumps(message).encode() + b"\n")


def child(request: dict[str, Any], cli: Any, wakeup: tuple[int, int], zygote: int) -> None:
    """In the forked child: become the team's Datasette; never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in wakeup:
            os.close(fd)
        die_with_parent(zygote)
        os.chdir(request["cwd"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["datasette", *request["args"]]
        cli.main(args=request["args"], prog_name="datasette")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def stop(children: set[int]) -> None:
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    while children and time.monotonic() < deadline:
        pid, _ = os.waitpid(-1, os.WNOHANG)
        if pid:
            children.discard(pid)
        else:
            time.sleep(0.05)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def main() -> None:
    # The gateway passes its pid: a zygote whose gateway is already gone never serves.
    die_with_parent(int(sys.argv[1]) if len(sys.argv) > 1 else None)
    # A terminal's Ctrl-C reaches the whole process group: the gateway stops us (stdin closes)
    # and the instances handle it themselves; no traceback from here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from datasette.cli import cli  # the import every instance would otherwise repeat

    wake_r, wake_w = os.pipe()  # SIGCHLD -> a byte here: select() returns to reap
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: set[int] = set()
    pending = b""
    send({"ready": os.getpid()})
    while True:
        readable, _, _ = select.select([0, wake_r], [], [])
        if wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if not pid:
                break
            children.discard(pid)
            send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})
        if 0 not in readable:
            continue
        data = os.read(0, 65536)
        if not data:  # the gateway closed us (or died): its instances go too
            stop(children)
            return
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            if "spawn" in request:
                zygote = os.getpid()
                pid = os.fork()
                if pid == 0:
                    child(request["spawn"], cli, (wake_r, wake_w), zygote)
                children.add(pid)
                send({"pid": pid})
            elif request.get("signal") in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(request["signal"], int(request["sig"]))


if __name__ == "__main__":
    main()
