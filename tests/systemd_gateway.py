"""A real ``gateway serve`` process started as systemd starts one: its sockets are bound HERE and
passed as LISTEN_FDS (fd 3 on, tests/listen_fds.py), so the test knows its port without a
find-a-free-port race, and holds no copy of them afterwards (a copy would keep a listener alive
that the gateway closed).

``python -m tests.systemd_gateway FD1,FD2 NAMES COMMAND...`` is tests/listen_fds.py's wrapper.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from gateway.store import open_store
from tests.listen_fds import activated, listening_socket, main
from tests.servers import grant_token

GATEWAY = str(Path(sys.executable).with_name("gateway"))
# A writable canned query, as the load scenario sets up: a POST that reads its whole body.
METADATA = {
    "databases": {
        "data": {
            "queries": {
                "add_event": {"sql": "insert into events (uid) values (:uid)", "write": True}
            }
        }
    }
}


def socket_inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def open_fd_inodes(pid: int) -> set[int]:
    """The socket inodes a process holds (``socket:[N]`` links in /proc/PID/fd)."""
    found = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for entry in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(entry)
            if link.startswith("socket:["):
                found.add(int(link[8:-1]))
    return found


def prepare_team(data_dir: Path, team: str) -> str:
    """A team with an ``events`` table and a writable canned query; returns an API token."""
    team_dir = data_dir / "teams" / team
    team_dir.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(team_dir / "data.db")
    db.execute("create table if not exists events (id integer primary key, uid text)")
    db.commit()
    db.close()
    (team_dir / "metadata.json").write_text(json.dumps(METADATA))
    store = open_store(data_dir / "control.db")
    try:
        store.create_team(team)
        return grant_token(store, team)
    finally:
        store.close()


class SystemdGateway:
    """``gateway serve`` given its public and admin sockets by LISTEN_FDS."""

    def __init__(self, data_dir: Path, *extra: str, command: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.command = command or [GATEWAY]
        self.log_path = data_dir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.admin_port = 0
        self.public_inode = 0

    def start(self, env: dict[str, str] | None = None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        public, admin = listening_socket(), listening_socket()
        self.port, self.admin_port = public.getsockname()[1], admin.getsockname()[1]
        self.public_inode = socket_inode(public)
        # --port and --admin-port name ports that are NOT free (bound above): a gateway that
        # ignored LISTEN_FDS and bound them itself would fail to start.
        serve = [*self.command, "serve", "--data-dir", str(self.data_dir), "--port", str(self.port)]
        serve += ["--admin-port", str(self.admin_port), "--health-interval", "0.2", *self.extra]
        cmd, fds = activated(serve, public=public, admin=admin)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        environ.update({"GATEWAY_LOG_LEVEL": "info", "GATEWAY_HOLD_TIMEOUT": "30"})
        environ.update(env or {})
        root = str(Path(__file__).resolve().parent.parent)
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, environ.get("PYTHONPATH")]))
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                env=environ,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                pass_fds=fds,
            )
        public.close()
        admin.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def published_pid(self) -> int | None:
        try:
            return int(json.loads((self.data_dir / "admin.json").read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def admin_token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [*self.command, *args, "--data-dir", str(self.data_dir)]
        cmd += ["--port", str(self.port), "--admin-port", str(self.admin_port)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)

    def stop(self) -> None:
        """SIGTERM to this gateway and to a successor it handed over to; waits for both."""
        if self.proc is None:
            return
        # Its own pid only while it runs (a reaped pid may belong to another process by now).
        pids = {self.pid} if self.proc.poll() is None else set()
        if (succ := self.published_pid()) is not None:
            pids.add(succ)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if self.proc is not None:
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        deadline = time.monotonic() + 60
        for pid in pids - {self.pid}:
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is gone for our purposes.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


if __name__ == "__main__":
    main()
