"""`gateway supervise` as the container's PID 1: a restart hands over inside it (the supervisor
outlives the old gateway and adopts the successor), signals reach the gateway serving now,
and no request is dropped. Here the supervisor is a child subreaper rather than PID 1; as a
container's PID 1 it is tested in tests/test_container_supervisor.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from gateway.lock import serving_pid
from tests.conftest import free_socket

GATEWAY = str(Path(sys.executable).with_name("gateway"))


def wait_until(check: object, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


# ``supervise`` starts ``serve`` as its own child and passes it no socket, so the gateway binds
# a probed port itself. Another program may take that port first: the gateway then exits
# saying so, and the start is retried on another port, a bounded number of times.
START_ATTEMPTS = 3


def start_supervised(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    for attempt in range(START_ATTEMPTS):
        with free_socket() as s:
            port = s.getsockname()[1]
        data = tmp_path / f"data-{attempt}"
        serve = [GATEWAY, "serve", "--data-dir", str(data), "--port", str(port)]
        log_path = tmp_path / f"supervise-{attempt}.log"
        with log_path.open("wb") as log:
            sup = subprocess.Popen(
                [GATEWAY, "supervise", "--data-dir", str(data), "--", *serve, "--admin-port", "0"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 90
        while not _answers(port):
            if sup.poll() is not None:
                break
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        else:
            return sup, port, data
        if "Address already in use" not in log_path.read_text():
            raise AssertionError(log_path.read_text())
    raise AssertionError(f"the gateway lost its port to another program {START_ATTEMPTS} times")


def test_restart_under_the_supervisor_keeps_serving_and_stops_cleanly(tmp_path: Path) -> None:
    sup, port, data = start_supervised(tmp_path)
    try:
        wait_until(lambda: serving_pid(data) is not None)
        first = serving_pid(data)
        answers: list[int] = []
        stop = threading.Event()

        def traffic() -> None:
            with httpx.Client(timeout=10, headers={"host": "localhost"}) as client:
                for _ in range(3000):  # bounded
                    if stop.is_set():
                        return
                    try:
                        r = client.get(f"http://127.0.0.1:{port}/-/gateway/livez")
                        answers.append(r.status_code)
                    except httpx.TransportError:
                        answers.append(0)
                    time.sleep(0.01)

        wait_until(lambda: _answers(port))
        loader = threading.Thread(target=traffic)
        loader.start()
        try:
            sup.send_signal(signal.SIGHUP)  # `docker kill -s HUP`: forwarded to the gateway
            wait_until(lambda: serving_pid(data) not in (None, first))
            wait_until(lambda: not _alive(first))  # the old one drained and exited...
            assert sup.poll() is None  # ...and the "container" lives on
            # The load goes on against the successor alone: a count of answers, not a while.
            seen = len(answers)
            wait_until(lambda: len(answers) >= seen + 20)
        finally:
            stop.set()
            loader.join(60)
        assert answers and set(answers) == {200}, sorted(set(answers))
        sup.send_signal(signal.SIGTERM)  # `docker stop`: reaches the successor
        assert sup.wait(90) == 0
        assert serving_pid(data) is None
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait(30)


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie not yet reaped counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _answers(port: int) -> bool:
    try:
        r = httpx.get(
            f"http://127.0.0.1:{port}/-/gateway/livez", headers={"host": "localhost"}, timeout=2
        )
        return r.status_code == 200
    except httpx.TransportError:
        return False


def test_the_compose_file_runs_the_gateway_under_the_supervisor() -> None:
    import yaml

    compose = Path(__file__).resolve().parent.parent / "certs" / "docker-compose.yml"
    command = yaml.safe_load(compose.read_text())["services"]["gateway"]["command"]
    split = command.index("--")
    assert command[:split][-1] == "supervise" and command[-1] == "serve", command
    assert command[split + 1 : -1] == command[: split - 1]  # the same python3 and build
