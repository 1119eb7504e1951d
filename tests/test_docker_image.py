"""The image recipe, without Docker: the tag follows the content; both build paths agree."""

from __future__ import annotations

import gc
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import cli
from gateway.runtimes.docker import image


def test_tag_names_the_datasette_version_and_follows_the_inputs() -> None:
    pins = image.Pins("0.65.5", "3.38", "2.2.0")
    tag = image.image_tag(pins)
    assert re.fullmatch(r"gateway-datasette:0\.65\.5-[0-9a-f]{12}", tag)
    assert image.image_tag(pins) == tag  # deterministic: a rebuild finds and skips it
    assert image.image_tag(image.Pins("0.65.5", "3.39", "2.2.0")) != tag
    assert image.image_tag(image.Pins("0.65.6", "3.38", "2.2.0")).startswith(
        "gateway-datasette:0.65.6-"
    )


def test_dockerfile_runs_the_same_command_as_the_registry_free_build() -> None:
    text = (image.ASSETS / "Dockerfile").read_text()
    assert "# syntax=" not in text  # it would make BuildKit pull a frontend image
    directives = dict(
        line.split(" ", 1)
        for line in text.splitlines()
        if line and not line.startswith("#") and line.split(" ", 1)[0].isupper() and " " in line
    )
    assert json.loads(directives["CMD"]) == image.CMD
    assert directives["USER"] == f"{image.UID}:{image.UID}"
    assert directives["EXPOSE"] == str(image.PORT)
    assert directives["WORKDIR"] == "/data"
    changes = image.import_changes()
    assert f"USER {image.UID}:{image.UID}" in changes
    assert "CMD " + json.dumps(image.CMD) in changes


def test_the_plugin_is_baked_in_as_a_plugins_dir() -> None:
    assert image.CMD[image.CMD.index("--plugins-dir") + 1] == image.PLUGINS_DIR
    assert image.PLUGIN.name == "gateway_plugin.py" and image.PLUGIN.exists()
    # The image carries every plugin the local runtime's --plugins-dir holds.
    local = {p.name for p in image.PLUGIN.parent.glob("gateway_*.py")}
    assert {p.name for p in image.PLUGINS} == local and all(p.exists() for p in image.PLUGINS)


# docker-py leaks the socket of a failed connection; collect it here, not in a later test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_build_without_a_reachable_engine_says_what_to_install(tmp_path: Path) -> None:
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no-such.sock"}
    result = CliRunner(env=env).invoke(cli, ["image", "build"])
    code, output = result.exit_code, result.output
    del result  # its traceback holds the leaked socket
    gc.collect()
    assert code == 1
    assert "no Docker engine is reachable" in output
    assert "apt-get install docker.io" in output
    assert "Traceback" not in output


@pytest.mark.docker
def test_build_skips_when_the_tag_exists(docker_image: str) -> None:
    result = CliRunner().invoke(cli, ["image", "build"])
    assert result.exit_code == 0, result.output
    assert f"Image {docker_image} already exists; nothing to do." in result.output
