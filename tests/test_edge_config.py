"""gateway.edge.traefik_config: what `gateway edge upgrade` reads from Traefik's static file
(pure functions; the real Traefik runs them in tests/test_edge_upgrade.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.edge import traefik_config as tc
from tests.traefik_harness import CERTS, production


def test_the_shipped_static_config_can_be_upgraded_in_place() -> None:
    static = tc.load_static(CERTS / "traefik.yml")
    tc.check_upgradable(static)
    assert tc.served_entrypoints(static) == {"web": 80, "websecure": 443}
    assert tc.accept_grace(static) == 2.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("entryPoints: [", "not valid YAML"),
        ("log: {level: INFO}\n", "no entryPoints"),
        ("entryPoints:\n  web: {address: 'nowhere'}\n", "cannot read the port"),
    ],
)
def test_unreadable_files_are_refused_with_one_line(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "traefik.yml"
    path.write_text(text)
    with pytest.raises(tc.EdgeConfigError, match=message):
        tc.served_entrypoints(tc.load_static(path))


def test_a_missing_file_is_named() -> None:
    with pytest.raises(tc.EdgeConfigError, match=r"cannot read /nonexistent/traefik\.yml"):
        tc.load_static(Path("/nonexistent/traefik.yml"))


def test_no_accept_grace_is_refused() -> None:
    static, _dynamic, _env = production()
    del static["entryPoints"]["websecure"]["transport"]["lifeCycle"]
    with pytest.raises(tc.EdgeConfigError, match=r"websecure needs .*requestAcceptGraceTimeout"):
        tc.check_upgradable(static)


def test_with_api_adds_a_loopback_api_and_changes_nothing_else() -> None:
    static, _dynamic, _env = production()
    derived = tc.with_api(static, 4321)
    api = {"address": "127.0.0.1:4321", "reusePort": True}
    assert derived["entryPoints"][tc.API_ENTRYPOINT] == api
    assert derived["api"] == {"insecure": True, "dashboard": False}
    del derived["entryPoints"][tc.API_ENTRYPOINT], derived["api"]
    assert derived == static
    assert tc.API_ENTRYPOINT not in tc.served_entrypoints(tc.with_api(static, 4321))


@pytest.mark.parametrize(
    ("value", "seconds"), [("2s", 2), ("100ms", 0.1), ("1h", 3600), ("3", 3), (" 5m ", 300)]
)
def test_durations(value: str, seconds: float) -> None:
    assert tc.duration(value) == seconds


def test_a_bad_duration_is_named() -> None:
    with pytest.raises(tc.EdgeConfigError, match="not a duration: 'soon'"):
        tc.duration("soon")
