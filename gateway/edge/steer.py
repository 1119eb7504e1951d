"""Which listener of a port's SO_REUSEPORT group the kernel hands new connections to.

Traefik's ``reusePort`` lets a second process listen on the same port, but the kernel then
spreads new connections over both listeners from the moment the second one calls listen(),
before that process has built its routers (it answers 404 until then). A classic BPF program
attached to the group (``SO_ATTACH_REUSEPORT_CBPF``) returns the index of the listener that
gets each new connection; listeners are indexed in the order they joined, so the running
Traefik is 0 while it is alone, and the new one is 1. We reach the group through a duplicate
of the running process's own listening socket (``pidfd_getfd``, Linux 5.6+, root or ptrace
rights over it): no extra listener joins the group. An index that does not exist (after the
old listener closed) makes the kernel fall back to its hash, which with one listener is that
listener.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import GatewayError

SYS_PIDFD_GETFD = 438  # x86_64 and aarch64 share the number (unified syscall table)
SO_ATTACH_REUSEPORT_CBPF = 51
SO_DETACH_REUSEPORT_BPF = 68
BPF_RET_K = 0x06
TCP_LISTEN = "0A"


class SteerError(GatewayError):
    """The kernel refused to steer a port's listeners (the message says which and why)."""


@dataclass(frozen=True)
class Listener:
    pid: int
    fd: int
    port: int
    inode: int


def listening_inodes(port: int) -> set[int]:
    """Inodes of every TCP socket listening on ``port`` (IPv4 and IPv6, this netns)."""
    found: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], int(fields[9])
                if state == TCP_LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                    found.add(inode)
    return found


def listeners_of(pid: int, port: int) -> list[Listener]:
    """The listening sockets on ``port`` that process ``pid`` holds."""
    inodes = listening_inodes(port)
    out = []
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        entries = list(fd_dir.iterdir())
    except OSError as exc:
        raise SteerError(f"cannot read {fd_dir}: {exc.strerror} (run as root)") from exc
    for entry in entries:
        with contextlib.suppress(OSError):
            target = os.readlink(entry)
            if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                out.append(Listener(pid, int(entry.name), port, int(target[8:-1])))
    return out


def _duplicate(listener: Listener) -> socket.socket:
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        pidfd = os.pidfd_open(listener.pid)
    except OSError as exc:
        raise SteerError(f"cannot reach pid {listener.pid}: {exc.strerror}") from exc
    try:
        fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, listener.fd, 0)
        if fd < 0:
            err = ctypes.get_errno()
            raise SteerError(
                f"cannot reach pid {listener.pid}'s socket on :{listener.port}: "
                f"{os.strerror(err)} (needs root, or ptrace rights over it)"
            )
    finally:
        os.close(pidfd)
    return socket.socket(fileno=fd)


def _program(index: int) -> tuple[bytes, ctypes.Array[ctypes.c_char]]:
    """``return index``: one cBPF instruction (the buffer must outlive the setsockopt)."""
    code = ctypes.create_string_buffer(struct.pack("=HBBI", BPF_RET_K, 0, 0, index))
    return struct.pack("@HP", 1, ctypes.addressof(code)), code  # struct sock_fprog


def steer(listener: Listener, index: int) -> None:
    """Send every new connection on the listener's port to the group's listener ``index``."""
    sock = _duplicate(listener)
    try:
        fprog, _code = _program(index)
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError as exc:
        raise SteerError(f"cannot steer :{listener.port}: {exc.strerror}") from exc
    finally:
        sock.close()  # our duplicate only: the process's own descriptor stays open


def release(listener: Listener) -> None:
    """Hand the port back to the kernel's own hash (no program attached)."""
    sock = _duplicate(listener)
    try:
        with contextlib.suppress(OSError):  # ENOENT: nothing attached
            sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)
    finally:
        sock.close()
