"""Rollback and resumable rollouts with versions that really differ (tests/versioned_runtime.py:
each instance's Datasette says which version it is), on real `gateway serve` processes, with a
rollout interrupted for real: the gateway is killed (SIGKILL) mid-rollout, then restarted and
the rollout resumed."""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.systemd_gateway import SystemdGateway
from tests.versioned_runtime import VERSION_ENV

pytestmark = pytest.mark.slow
TEAMS = ("alpha", "beta", "gamma")
COMMAND = [sys.executable, "-m", "tests.versioned_runtime"]


def until(condition: Callable[[], object], timeout: float = 90, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout}s")
        time.sleep(0.05)


class Fleet:
    """Three teams behind a gateway that can be killed and started again on the same data."""

    def __init__(self, data_dir: Path) -> None:
        from tests.systemd_gateway import prepare_team

        self.data_dir = data_dir
        self.tokens = {team: prepare_team(data_dir, team) for team in TEAMS}
        self.gw = self.start()

    def start(self) -> SystemdGateway:
        gw = SystemdGateway(self.data_dir, "--deploy-timeout", "90", command=COMMAND)
        gw.start(env={VERSION_ENV: "v1"})
        self.gw = gw
        until(lambda: all(self.version(t) for t in TEAMS), what="every team answers")
        return gw

    def version(self, team: str) -> str | None:
        """The version that answers ``team`` through the gateway, or None when none does."""
        try:
            r = httpx.get(
                f"http://127.0.0.1:{self.gw.port}/-/metadata.json",
                headers={
                    "host": f"{team}.localhost:{self.gw.port}",
                    "authorization": f"Bearer {self.tokens[team]}",
                },
                timeout=10,
            )
        except httpx.HTTPError:
            return None
        if r.status_code != 200:
            return None
        return str(r.json().get("title", "")).removeprefix("version ")

    def versions(self) -> dict[str, str | None]:
        return {team: self.version(team) for team in TEAMS}

    def deploys(self) -> list[dict[str, object]]:
        db = sqlite3.connect(f"file:{self.data_dir / 'control.db'}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        try:
            rows = db.execute("SELECT * FROM deploys ORDER BY id").fetchall()
        finally:
            db.close()
        return [dict(r) for r in rows]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path / "data")
    try:
        yield f
    finally:
        f.gw.stop()


@pytest.mark.timeout(600)
def test_rollback_serves_the_previous_version_again(fleet: Fleet) -> None:
    assert fleet.versions() == {"alpha": "v1", "beta": "v1", "gamma": "v1"}
    done = fleet.gw.cli("deploy", "--team", "alpha", "--image", "v2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert fleet.version("alpha") == "v2"
    done = fleet.gw.cli("deploy", "--team", "alpha", "--image", "v3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert fleet.version("alpha") == "v3"
    done = fleet.gw.cli("rollback", "--team", "alpha")
    assert done.returncode == 0, done.stdout + done.stderr
    assert fleet.version("alpha") == "v2"  # the previous version, not the first or the default
    assert fleet.versions() == {"alpha": "v2", "beta": "v1", "gamma": "v1"}


@pytest.mark.timeout(600)
def test_a_rollout_interrupted_by_killing_the_gateway_resumes_where_it_stopped(
    fleet: Fleet,
) -> None:
    import subprocess

    cmd = [*COMMAND, "deploy", "--all", "--image", "v2", "--parallel", "1"]
    cmd += ["--data-dir", str(fleet.data_dir), "--port", str(fleet.gw.port)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    rollout_cli = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
    )
    try:
        # Kill the gateway once the first team is done and the second one is under way.
        until(
            lambda: [r["status"] for r in fleet.deploys()] == ["succeeded", "running"],
            what="one team deployed, the next deploying",
        )
        os.kill(fleet.gw.pid, signal.SIGKILL)
        out, _ = rollout_cli.communicate(timeout=60)
    finally:
        if rollout_cli.poll() is None:
            rollout_cli.kill()
            rollout_cli.wait(30)
        assert rollout_cli.stdout is not None
        rollout_cli.stdout.close()  # a test that fails here must not leak the pipe to the next
    assert rollout_cli.returncode != 0, out  # the CLI saw its rollout cut off
    assert fleet.gw.proc is not None and fleet.gw.proc.wait(30) == -signal.SIGKILL
    rows = fleet.deploys()
    rollout = rows[0]["rollout"]
    first, interrupted = rows[0]["team"], rows[1]["team"]
    assert first == "alpha" and interrupted == "beta"
    # The CLI named the rollout before it was cut off, so the user can resume it.
    assert f"--resume {rollout}" in out, out

    fleet.start()  # a new gateway on the same data: alpha runs v2, the others still v1
    assert fleet.versions() == {"alpha": "v2", "beta": "v1", "gamma": "v1"}

    done = fleet.gw.cli("deploy", "--all", "--image", "v2", "--resume", str(rollout))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "deploying 2 team(s): beta, gamma" in done.stdout, done.stdout
    assert fleet.versions() == {"alpha": "v2", "beta": "v2", "gamma": "v2"}
    succeeded = [r["team"] for r in fleet.deploys() if r["status"] == "succeeded"]
    assert sorted(succeeded) == ["alpha", "beta", "gamma"]  # alpha was not deployed twice
    assert {r["rollout"] for r in fleet.deploys()} == {rollout}
    # Resuming the finished rollout has nothing left to do.
    again = fleet.gw.cli("deploy", "--all", "--image", "v2", "--resume", str(rollout))
    assert again.returncode == 0 and "deploying 0 team(s)" in again.stdout, again.stdout
    assert len(fleet.deploys()) == len(rows) + 2
