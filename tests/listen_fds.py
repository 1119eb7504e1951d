"""Start a command with listening sockets bound by the test, passed as systemd passes them.

The test binds port 0, reads the port back and hands the socket over: no other process can
take the port between a "free port" probe and the server's own bind.

    argv, fds = activated([GATEWAY, "serve", ...], public=sock, admin=other)
    proc = subprocess.Popen(argv, pass_fds=fds, ...)
    sock.close(); other.close()   # the child's copies are the only ones

``argv`` runs this file as an exec wrapper (``python listen_fds.py FD1,FD2 NAMES COMMAND...``):
it moves the descriptors to 3, 4, ..., sets LISTEN_PID to its own pid (which exec keeps) and
execs COMMAND. Standard library only and run by path, so it needs nothing on PYTHONPATH and
leaves the command's environment as the test gave it.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def activated(command: list[str], **named: socket.socket) -> tuple[list[str], list[int]]:
    """``command`` wrapped to receive ``named`` sockets as LISTEN_FDS, and the fds to pass."""
    fds = [sock.fileno() for sock in named.values()]
    wrapper = [sys.executable, "-I", os.path.abspath(__file__), ",".join(map(str, fds))]
    wrapper.append(":".join(named))
    return [*wrapper, *map(str, command)], fds


def main() -> None:
    fds = [int(fd) for fd in sys.argv[1].split(",")]
    names, command = sys.argv[2], sys.argv[3:]
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]  # out of the way of 3, 4, ...
    for fd in fds:
        os.close(fd)
    for i, fd in enumerate(high):
        os.dup2(fd, 3 + i)  # inheritable, as systemd passes them
        os.close(fd)
    os.environ.update(
        {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": str(len(fds)), "LISTEN_FDNAMES": names}
    )
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
