"""`gateway restart` and socket inheritance, on real `gateway serve` processes.

The gateway is started as systemd starts it (LISTEN_FDS, tests/systemd_gateway.py), so the
first test is the systemd promise itself; the others restart it and check the handover: the
successor holds the very same kernel socket, connections queued in its accept backlog while no
process accepts are served, and keep-alive clients of the old process get ``Connection: close``
(or, idle, a clean close), never a reset.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.systemd_gateway import SystemdGateway, alive, open_fd_inodes, prepare_team

pytestmark = pytest.mark.slow
READY_LINE = re.compile(r"restart: successor pid (\d+) is ready; draining and exiting")


def until(condition: Callable[[], object], timeout: float = 60, what: str = "condition") -> None:
    """Poll a real readiness signal; the timeout is only a bound."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout}s")
        time.sleep(0.01)


class Conn:
    """One raw HTTP/1.1 client connection (so a reset is seen as a reset)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int(self._line(), 16)
                body += self._take(size)
                self._line()
                if size == 0:
                    break
        else:
            body = self._take(int(headers.get("content-length", "0")))
        return int(lines[0].split()[1]), headers, body

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._more()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def closed_cleanly(self) -> bool:
        """True on a FIN (EOF); a reset raises ConnectionResetError."""
        return self.sock.recv(1) == b""

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed mid-response after {self.buf!r}")
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


def request(team: str, port: int, token: str, path: str, *, close: bool = False) -> bytes:
    extra = "connection: close\r\n" if close else ""
    return (
        f"GET {path} HTTP/1.1\r\nhost: {team}.localhost:{port}\r\n"
        f"authorization: Bearer {token}\r\n{extra}\r\n"
    ).encode()


class Served:
    def __init__(self, gw: SystemdGateway, token: str) -> None:
        self.gw = gw
        self.token = token

    def get(self, path: str = "/data.json", **kw: bool) -> bytes:
        return request("alpha", self.gw.port, self.token, path, **kw)

    def answers(self) -> bool:
        try:
            conn = Conn(self.gw.port)
        except OSError:
            return False
        try:
            conn.send(self.get(close=True))
            return conn.response()[0] == 200
        except OSError:
            return False
        finally:
            conn.close()

    def successor_ready(self) -> int | None:
        found = READY_LINE.search(self.gw.log())
        return int(found.group(1)) if found else None


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    data_dir = tmp_path / "data"
    token = prepare_team(data_dir, "alpha")
    gw = SystemdGateway(data_dir, "--drain-timeout", "30")
    gw.start()
    s = Served(gw, token)
    try:
        until(s.answers, what="alpha answers through the gateway")
        yield s
    finally:
        gw.stop()


def test_systemd_socket_activation_serves_on_the_passed_sockets(served: Served) -> None:
    gw = served.gw
    # The public socket is the one passed (its --port is taken by that very socket, so the
    # gateway could not have bound it itself), and so is the admin one.
    assert gw.public_inode in open_fd_inodes(gw.pid)
    assert json.loads((gw.data_dir / "admin.json").read_text())["url"].endswith(f":{gw.admin_port}")
    conn = Conn(gw.admin_port)
    conn.send(b"GET /livez HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
    assert conn.response()[0] == 200
    conn.close()
    # The variables are consumed: the team's Datasette (a child) does not see them.
    children = Path(f"/proc/{gw.pid}/task/{gw.pid}/children").read_text().split()
    assert children
    for child in children:
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        assert not [v for v in environ if v.startswith(b"LISTEN_")], child


def test_restart_hands_over_the_same_socket_and_closes_keep_alive_clients_politely(
    served: Served,
) -> None:
    gw = served.gw
    old = gw.pid
    idle = Conn(gw.port)
    idle.send(served.get("/data.json"))
    status, headers, _ = idle.response()
    assert status == 200 and headers.get("connection") != "close"
    # A POST in flight across the handover: its body is only half sent, so the old process
    # must wait for it (drain) and answer it itself.
    body = f"uid={uuid.uuid4().hex}".encode()
    held = Conn(gw.port)
    held.send(
        f"POST /data/add_event?_json=1 HTTP/1.1\r\nhost: alpha.localhost:{gw.port}\r\n"
        f"authorization: Bearer {served.token}\r\n"
        "content-type: application/x-www-form-urlencoded\r\n"
        f"content-length: {len(body)}\r\n\r\n".encode()
        + body[:5]
    )
    restart = subprocess.Popen(
        [*gw.command, "restart", "--data-dir", str(gw.data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # A keep-alive client of the old process keeps sending (within uvicorn's 5 s idle
        # timeout) through the handover: every answer is whole, and once the old process
        # drains it answers with Connection: close, then closes cleanly.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            idle.send(served.get("/data.json"))
            status, headers, _ = idle.response()
            assert status == 200
            if headers.get("connection") == "close":
                break
            time.sleep(0.05)
        assert served.successor_ready() is not None
        assert headers.get("connection") == "close", "never told to close"
        assert idle.closed_cleanly()
        # The held POST completes on the old process, told to close, and applied once.
        held.send(body[5:])
        status, headers, answer = held.response()
        assert (status, headers.get("connection")) == (200, "close"), answer
        assert held.closed_cleanly()
        out, _ = restart.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            restart.kill()
        idle.close()
        held.close()
    assert restart.returncode == 0, out
    assert gw.proc is not None and gw.proc.wait(60) == 0  # the old one drained and exited 0
    new = gw.published_pid()
    assert new is not None and new != old and alive(new)
    assert gw.public_inode in open_fd_inodes(new)  # the very same kernel socket
    assert served.answers()


def test_connections_queued_while_no_process_accepts_are_served_after_the_handover(
    served: Served,
) -> None:
    gw = served.gw
    os.kill(gw.pid, signal.SIGHUP)  # the same as `gateway restart`
    until(served.successor_ready, what="the successor is ready")
    successor = served.successor_ready()
    assert successor is not None
    # Freeze the successor: from now until the old process has exited, nothing accepts.
    os.kill(successor, signal.SIGSTOP)
    queued: list[Conn] = []
    try:
        assert gw.proc is not None
        while gw.proc.poll() is None and len(queued) < 40:
            conn = Conn(gw.port)
            conn.send(served.get(close=True))
            queued.append(conn)
            time.sleep(0.02)
        assert gw.proc.wait(60) == 0
        for _ in range(10):  # and some more once the old process is gone
            conn = Conn(gw.port)
            conn.send(served.get(close=True))
            queued.append(conn)
    finally:
        os.kill(successor, signal.SIGCONT)
    statuses = []
    for conn in queued:
        statuses.append(conn.response()[0])
        conn.close()
    assert statuses == [200] * len(queued)
    assert gw.public_inode in open_fd_inodes(successor)
