"""The Docker guard (tests/docker_guard.py) really guards: pytest is run on a docker-marked test
with an engine that cannot be reached (DOCKER_HOST names a socket that does not exist)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docker_guard import MISSING, SKIPPED

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = """
import pytest

@pytest.mark.docker
def test_needs_an_engine():
    pass

def test_plain():
    pass
"""


def run_pytest(tmp_path: Path, require: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_REQUIRE_DOCKER"}
    env["DOCKER_HOST"] = f"unix://{tmp_path}/no-engine.sock"
    env["PYTHONPATH"] = str(ROOT)
    if require is not None:
        env["GATEWAY_REQUIRE_DOCKER"] = require
    cmd = [sys.executable, "-m", "pytest", "-p", "tests.docker_guard", "-p", "no:cacheprovider"]
    cmd += ["-o", "markers=docker", "-rA", "--rootdir", str(tmp_path), str(tmp_path)]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_without_an_engine_docker_tests_fail_when_ci_requires_one(tmp_path: Path) -> None:
    done = run_pytest(tmp_path, require="1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert MISSING in done.stdout
    assert "1 passed, 1 error" in done.stdout, done.stdout


@pytest.mark.parametrize("require", [None, "0"])
def test_without_an_engine_docker_tests_skip_with_the_reason(
    tmp_path: Path, require: str | None
) -> None:
    done = run_pytest(tmp_path, require=require)
    assert done.returncode == 0, done.stdout + done.stderr
    assert SKIPPED in done.stdout
    assert "1 passed, 1 skipped" in done.stdout, done.stdout


@pytest.mark.docker
def test_with_an_engine_a_docker_test_runs() -> None:
    """Here the engine is reachable (or the guard skipped/failed this test as above)."""
    from tests.docker_guard import docker_available

    assert docker_available()
