"""Under systemd (Type=notify): the example unit verifies, each gateway process announces
READY=1 with its own MAINPID, and `gateway restart` moves the main PID to the successor while
requests keep being answered. systemd itself cannot run here (no PID 1 systemd in this
container): the test plays its part, a datagram socket at $NOTIFY_SOCKET, as systemd does."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.listen_fds import activated, listening_socket, port_of

GATEWAY = str(Path(sys.executable).with_name("gateway"))
UNIT = Path(__file__).resolve().parent.parent / "docs" / "systemd" / "gateway.service"


def test_the_example_unit_verifies(tmp_path: Path) -> None:
    unit = tmp_path / "gateway.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/gateway", GATEWAY))
    out = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "gateway.service" not in out.stderr, out.stderr
    text = unit.read_text()
    for line in ("Type=notify", "NotifyAccess=all", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line in text


def messages(sock: socket.socket, until: str, timeout: float = 90) -> list[dict[str, str]]:
    """Datagrams as dicts, until one has ``until`` (a KEY=VALUE line)."""
    got: list[dict[str, str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        data = sock.recv(4096).decode()
        fields = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
        got.append(fields)
        if until in data.splitlines():
            return got
    raise AssertionError(f"no {until} in {got}")


def test_restart_moves_the_main_pid_and_drops_nothing(tmp_path: Path) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    public = listening_socket()  # passed as LISTEN_FDS, as systemd does: no free-port race
    port = port_of(public)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["NOTIFY_SOCKET"] = str(tmp_path / "notify.sock")
    data = tmp_path / "data"
    serve = [GATEWAY, "serve", "--data-dir", str(data), "--port", str(port), "--admin-port", "0"]
    argv, fds = activated(serve, public=public)
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, pass_fds=fds)
    public.close()
    successor = 0
    try:
        first = messages(notify, "READY=1")[-1]
        assert first["MAINPID"] == str(proc.pid)

        answers: list[int] = []
        stop = threading.Event()

        def traffic() -> None:
            with httpx.Client(timeout=10) as client:
                for _ in range(2000):  # bounded: the restart takes seconds
                    if stop.is_set():
                        return
                    try:
                        r = client.get(
                            f"http://127.0.0.1:{port}/-/gateway/livez",
                            headers={"host": "localhost"},
                        )
                        answers.append(r.status_code)
                    except httpx.TransportError:
                        answers.append(0)
                    time.sleep(0.01)

        loader = threading.Thread(target=traffic)
        loader.start()
        try:
            out = subprocess.run(
                [GATEWAY, "restart", "--data-dir", str(data)],
                capture_output=True,
                text=True,
                timeout=150,
                env={k: v for k, v in env.items() if k != "NOTIFY_SOCKET"},
            )
            assert out.returncode == 0, out
            got = messages(notify, "READY=1")
            assert any("RELOADING" in m for m in got)
            successor = int(got[-1]["MAINPID"])
            assert successor != proc.pid
            proc.wait(60)  # the old main process drained and exited, cleanly
            assert proc.returncode == 0
            # The load goes on against the successor alone: a count of answers, not a while.
            seen, deadline = len(answers), time.monotonic() + 90
            while len(answers) < seen + 20:
                assert loader.is_alive() and time.monotonic() < deadline, "the load stopped"
                time.sleep(0.02)
        finally:
            stop.set()
            loader.join(60)
        assert answers and set(answers) == {200}, sorted(set(answers))
        os.kill(successor, 0)  # the new main process serves
    finally:
        for pid in (proc.pid, successor):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 15)
        proc.wait(60)
        deadline = time.monotonic() + 60  # the successor is not our child: poll its exit
        while successor and time.monotonic() < deadline:
            try:
                os.kill(successor, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        notify.close()
