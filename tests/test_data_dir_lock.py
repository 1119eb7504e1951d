"""One gateway per data dir: a second ``gateway serve`` is refused, ``gateway restart`` hands the
lock over, and the successor's command line carries no secret. Real ``gateway`` processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.lock import gateway_running, serving_pid
from tests.listen_fds import activated, listening_socket, port_of

GATEWAY = str(Path(sys.executable).with_name("gateway"))
TOKEN = "s3cret-admin-token-for-the-test"


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}


def serve(data_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``gateway serve`` on a public socket bound here (LISTEN_FDS); the process and its port."""
    public = listening_socket()
    port = port_of(public)
    serve = [GATEWAY, "serve", "--data-dir", str(data_dir), "--port", str(port)]
    argv, fds = activated([*serve, "--admin-port", "0", "--admin-token", TOKEN], public=public)
    try:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=clean_env(),
                pass_fds=fds,
            )
    finally:
        public.close()  # the gateway's copy is the only one
    return proc, port


def wait_until(check: object, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def published_pid(data_dir: Path) -> int | None:
    try:
        return int(json.loads((data_dir / "admin.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/-/gateway/livez", timeout=2).status_code < 500
    except httpx.TransportError:
        return False


@pytest.fixture
def first(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    data_dir = tmp_path / "data"
    proc, port = serve(data_dir, tmp_path / "first.log")
    try:
        wait_until(lambda: published_pid(data_dir) == proc.pid, what="the first gateway")
        yield proc, data_dir, port
    finally:
        for pid in {proc.pid, serving_pid(data_dir) or proc.pid}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        proc.wait(30)
        wait_until(lambda: not gateway_running(data_dir), 30, "every gateway to exit")


def test_a_second_serve_on_the_same_data_dir_is_refused_and_deletes_nothing(
    first: tuple[subprocess.Popen[bytes], Path, int], tmp_path: Path
) -> None:
    proc, data_dir, port = first
    # The first one's own port: the lock refuses before anything binds (a second gateway that
    # got past the lock would fail on the port instead, with another message).
    second = subprocess.run(
        [GATEWAY, "serve", "--data-dir", str(data_dir), "--port", str(port), "--admin-port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert second.returncode == 1
    assert f"gateway PID {proc.pid} already serves {data_dir}" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr  # no traceback
    assert published_pid(data_dir) == proc.pid  # admin.json is still the first one's
    status = subprocess.run(
        [GATEWAY, "status", "--data-dir", str(data_dir), "--admin-token", TOKEN],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert status.returncode == 0 and "gateway: running" in status.stdout, status


def test_restart_hands_the_lock_over_and_keeps_the_token_off_the_command_line(
    first: tuple[subprocess.Popen[bytes], Path, int], tmp_path: Path
) -> None:
    proc, data_dir, port = first
    out = subprocess.run(
        [GATEWAY, "restart", "--data-dir", str(data_dir), "--admin-token", TOKEN],
        capture_output=True,
        text=True,
        timeout=150,
        env=clean_env(),
    )
    assert out.returncode == 0, out
    new = published_pid(data_dir)
    assert new and new != proc.pid
    proc.wait(60)  # the old one drained and exited...
    assert gateway_running(data_dir)  # ...and the lock never went free
    assert serving_pid(data_dir) == new
    assert answers(port)
    cmdline = Path(f"/proc/{new}/cmdline").read_bytes()
    assert TOKEN.encode() not in cmdline
    log = (tmp_path / "first.log").read_text()
    assert TOKEN not in log
    second = subprocess.run(
        [GATEWAY, "serve", "--data-dir", str(data_dir), "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert f"gateway PID {new} already serves" in second.stderr, second.stderr
