"""Smoke test of the single-file build (`make binary` -> build/gateway.pyz, a shiv zipapp).

It builds the binary when it is missing or older than the sources, then, as an operator
would: creates a team with the binary's own CLI, starts `gateway.pyz serve`, reaches the team's
real Datasette through it (started from the zipapp too), and stops it with SIGTERM.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.listen_fds import activated, listening_socket, port_of

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "build" / "gateway.pyz"

pytestmark = pytest.mark.slow


def newest_source() -> float:
    files = [ROOT / "pyproject.toml", *(ROOT / "gateway").rglob("*")]
    return max(
        f.stat().st_mtime
        for f in files
        if f.is_file() and f.suffix != ".pyc" and "_native" not in f.parts
    )


@pytest.fixture(scope="module")
def binary() -> Path:
    # Module-scoped, but each xdist worker running a test of it (or of a module importing it)
    # gets its own: one `make binary` at a time in build/, the others then find it current.
    BINARY.parent.mkdir(exist_ok=True)
    with open(BINARY.parent / ".binary.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not BINARY.exists() or BINARY.stat().st_mtime < newest_source():
            subprocess.run(["make", "-C", str(ROOT), "binary"], check=True, timeout=900)
    assert os.access(BINARY, os.X_OK)
    return BINARY


def run(binary: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.timeout(600)
def test_binary_serves_a_team_and_stops_cleanly(binary: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    public = listening_socket()  # passed as LISTEN_FDS when it serves: no free-port race
    port = port_of(public)
    env = {
        **os.environ,
        "SHIV_ROOT": str(ROOT / "build" / "shiv-root"),  # extracted once, reused by later runs
        "GATEWAY_DATA_DIR": str(data),
        "GATEWAY_PORT": str(port),
        "GATEWAY_ADMIN_PORT": "0",
        "GATEWAY_DOMAIN": "localhost",
    }
    env.pop("PYTHONPATH", None)  # nothing from this checkout: only what the zipapp carries
    # The compiled hot path travels in the zipapp (when the machine could build it; CI can).
    hot = run(binary, env, "native", "status")
    assert hot.returncode == 0, hot.stderr
    if os.environ.get("GATEWAY_REQUIRE_NATIVE") == "1":
        assert "hot path: compiled" in hot.stdout, hot.stdout
    created = run(binary, env, "teams", "create", "alpha")
    assert created.returncode == 0, created.stderr
    db = sqlite3.connect(data / "control.db")
    with db:  # public: read-only for anyone; this test is about the binary, not sign-in
        db.execute("UPDATE teams SET public = 1 WHERE slug = 'alpha'")
    db.close()

    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    argv, fds = activated([str(binary), "serve"], public=public)
    proc = subprocess.Popen(
        argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, pass_fds=fds
    )
    public.close()
    try:
        body = wait_for_team(port, proc)
        assert "datasette" in body
        status = run(binary, env, "status")
        assert status.returncode == 0, status.stderr
        assert "running, ready" in status.stdout and "healthy" in status.stdout
        pids = [
            int(r[0])
            for r in sqlite3.connect(data / "control.db").execute(
                "SELECT ref FROM instances WHERE team = 'alpha'"
            )
        ]
        assert pids and all(alive(pid) for pid in pids)
        # The team's Datasette runs from the zipapp too, not from this checkout.
        cmdline = Path(f"/proc/{pids[0]}/cmdline").read_bytes().split(b"\0")
        assert b"gateway.instance.zygote" in cmdline  # forked by the zipapp's zygote
        environ = Path(f"/proc/{pids[0]}/environ").read_bytes()
        assert b"shiv-root" in environ
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in pids), "an instance outlived the gateway"
        assert not (data / "admin.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    print((tmp_path / "serve.log").read_text()[-2000:])


def wait_for_team(port: int, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 120
    last = ""
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"the binary exited with {proc.returncode}")
            try:
                r = client.get(
                    f"http://127.0.0.1:{port}/-/versions.json",
                    headers={"host": f"alpha.localhost:{port}"},
                )
                if r.status_code == 200:
                    return json.dumps(r.json())
                last = f"{r.status_code} {r.text[:200]}"
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.25)
    raise AssertionError(f"the team never answered through the binary: {last}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: it only waits to be reaped.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"
