"""``gateway supervise -- gateway serve ...``: a small PID 1 for the gateway's container.

``gateway restart`` hands the sockets to a successor that the old process starts, then the old
process exits. As a container's PID 1 that exit would end the container; under this supervisor
it does not. The supervisor starts the command, forwards SIGTERM, SIGINT, SIGHUP and SIGUSR1 to
the gateway that serves the data dir now (its PID is in ``<data_dir>/gateway.lock``), reaps
every process (it is PID 1, or a child subreaper elsewhere, so the successor becomes its
child when the old gateway exits), and exits, with the last gateway's status, once none runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from pathlib import Path

from gateway.lock import serving_pid

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Orphaned descendants (the restart successor) are re-parented to us, not to init."""
    if os.getpid() == 1:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def supervise(argv: list[str], data_dir: Path) -> int:
    become_subreaper()
    child = subprocess.Popen(argv)

    def forward(signum: int, _frame: object) -> None:
        target = serving_pid(data_dir) or child.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    code = 0
    while True:
        try:
            _, status = os.waitpid(-1, 0)  # retried after a forwarded signal (PEP 475)
        except ChildProcessError:
            return code  # nothing left to supervise
        # The last process to exit is the last gateway: its status is the container's.
        code = os.waitstatus_to_exitcode(status)
        code = code if code >= 0 else 128 - code
