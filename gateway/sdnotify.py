"""systemd's readiness protocol (``Type=notify``), without a dependency: one datagram to
``$NOTIFY_SOCKET``.

Each gateway process announces ``READY=1`` with ``MAINPID=<its pid>`` once it serves every
team. After ``gateway restart`` (``ExecReload=kill -HUP $MAINPID``) the successor announces
itself the same way, so systemd follows the main PID to the new process instead of seeing the
old one exit as the service's end. The unit needs ``NotifyAccess=all`` (the successor is a
child of the old main process); see docs/production.md and docs/systemd/gateway.service.
"""

from __future__ import annotations

import contextlib
import os
import socket

SOCKET_ENV = "NOTIFY_SOCKET"


def notify(*fields: str) -> bool:
    """Send ``fields`` (``READY=1``...) to systemd; False when not run under it."""
    where = os.environ.get(SOCKET_ENV, "")
    if not where:
        return False
    address = "\0" + where[1:] if where.startswith("@") else where  # abstract namespace
    with (
        contextlib.suppress(OSError),
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock,
    ):
        sock.sendto("\n".join(fields).encode(), address)
        return True
    return False


def ready() -> bool:
    return notify("READY=1", f"MAINPID={os.getpid()}", f"STATUS=serving (pid {os.getpid()})")


def reloading() -> bool:
    return notify("RELOADING=1", "STATUS=handing over to a new process")


def stopping() -> bool:
    return notify("STOPPING=1", "STATUS=draining")
