"""The Docker guard: docker-marked tests skip visibly without an engine, or fail when CI demands
one (``GATEWAY_REQUIRE_DOCKER=1``).

It acts in ``pytest_runtest_setup``: a marker or ``usefixtures`` added to items after
collection is ignored by pytest (their fixtures are already resolved), so a guard built that
way does nothing. ``tests/test_docker_guard.py`` runs pytest on a docker-marked test with an
unreachable engine and checks both outcomes.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_ENV = "GATEWAY_REQUIRE_DOCKER"
MISSING = "GATEWAY_REQUIRE_DOCKER=1 but no Docker engine is reachable"
SKIPPED = "no reachable Docker engine (set GATEWAY_REQUIRE_DOCKER=1 to fail)"

_engine: dict[str, bool] = {}


def docker_available() -> bool:
    import docker

    try:
        client = docker.from_env()
    except Exception:
        return False
    try:
        client.ping()
        return True
    except Exception:
        return False
    finally:
        client.close()  # an unclosed engine socket is a ResourceWarning, and warnings are errors


def engine_reachable() -> bool:
    """Asked once per run, and only when a docker test is about to run."""
    if "up" not in _engine:
        _engine["up"] = docker_available()
    return _engine["up"]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("docker") is None or engine_reachable():
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(MISSING, pytrace=False)
    pytest.skip(SKIPPED)
